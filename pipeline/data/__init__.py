"""Data layer: the canonical `data/` layout, import of real datasets, synthetic data, validation,
the preprocessing chain, the dataset fingerprint, splits and the border weight map."""
