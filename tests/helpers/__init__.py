"""Shared test helpers: generated DICOM, small nets and workdirs, exported models, training data."""
