"""Generated DICOM series (pydicom) with full control of geometry: oblique, LPS-flipped, any file order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def write_series(
    folder: Path,
    volume: np.ndarray,
    spacing: Sequence[float] = (0.9, 0.8, 1.5),
    direction: np.ndarray | None = None,
    origin: Sequence[float] = (-20.0, 15.0, 30.0),
    *,
    file_order: Sequence[int] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    modality: str = "MR",
    prefix: str = "im",
    series_number: int = 7,
) -> list[Path]:
    """One file per slice of `volume` (slices, rows, cols), int16. `direction` holds the row, column
    and slice-normal unit vectors as columns (LPS); `spacing` is (column step, row step, slice step) in mm.
    Files are named in `file_order` (default: slice order), so a name says nothing about position."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    row_dir, col_dir, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    nz, rows, cols = volume.shape
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), series_uid or generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    order = list(file_order) if file_order is not None else list(range(nz))
    paths = []
    for name_index, k in enumerate(order):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality = modality
        ds.PatientName, ds.PatientID, ds.StudyID = "Test^Phantom", "PHANTOM-1", "1"
        ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20261130", "120000", series_number, k + 1
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + k * spacing[2] * normal]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows, between columns
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(volume[k].astype(np.int16)).tobytes()
        path = folder / f"{prefix}{name_index:04d}.dcm"
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def pixel_positions_lps(ds) -> np.ndarray:  # noqa: ANN001
    """(rows, cols, 3) LPS positions of a slice's pixel centres, straight from its header."""
    ipp, iop = np.asarray(ds.ImagePositionPatient, float), np.asarray(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    i = np.arange(int(ds.Rows))[:, None, None]
    j = np.arange(int(ds.Columns))[None, :, None]
    return ipp + j * dc * iop[:3] + i * dr * iop[3:]
