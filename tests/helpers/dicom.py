"""Generated DICOM series (pydicom) with full control of geometry: oblique, LPS-flipped, any file order;
an ellipsoid phantom drawn from each slice's own header, and a DICOM SEG read back frame by frame."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

ELLIPSOID_C = np.array([-14.0, 21.0, 36.0])  # LPS mm: off-centre, so any flip or shift moves it
ELLIPSOID_R = np.array([5.0, 3.5, 4.0])


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


GEOMETRIES = {
    "axial": np.eye(3),
    "flipped in-plane, slices stacked feet-ward": np.diag([-1.0, -1.0, -1.0]),
    "oblique": rotation(0, 20.0) @ rotation(2, 15.0),
}


def inside_ellipsoid(lps: np.ndarray) -> np.ndarray:
    return (((lps - ELLIPSOID_C) / ELLIPSOID_R) ** 2).sum(-1) <= 1.0


def phantom_series(folder: Path, direction: np.ndarray, shuffle: bool = True) -> list[Path]:
    """Noise plus the ellipsoid, drawn from each slice's own header geometry."""
    from pydicom.dataset import Dataset

    nz, rows, cols = 12, 16, 14
    rng = np.random.default_rng(0)
    volume = rng.normal(100, 5, (nz, rows, cols))
    origin, spacing = np.array([-20.0, 15.0, 30.0]), (0.9, 0.8, 1.5)
    if np.linalg.det(direction) < 0:  # keep the ellipsoid inside the field of view
        origin = origin + direction @ np.array([cols * spacing[0], rows * spacing[1], nz * spacing[2]]) * -1
    for k in range(nz):
        ds = Dataset()
        ds.ImagePositionPatient = list(origin + k * spacing[2] * direction[:, 2])
        ds.ImageOrientationPatient = [*direction[:, 0], *direction[:, 1]]
        ds.PixelSpacing, ds.Rows, ds.Columns = [spacing[1], spacing[0]], rows, cols
        volume[k][inside_ellipsoid(pixel_positions_lps(ds))] += 200
    order = list(np.random.default_rng(1).permutation(nz)) if shuffle else None
    return write_series(folder, volume.round(), spacing, direction, origin, file_order=order)


def read_seg(path: Path):  # noqa: ANN202
    import highdicom as hd

    return hd.seg.segread(str(path))


def frames_by_source(seg) -> dict[tuple[str, int], tuple[np.ndarray, list[float]]]:  # noqa: ANN001
    """(referenced SOP instance UID, segment number) -> (frame pixels, frame ImagePositionPatient)."""
    out = {}
    pixels = seg.pixel_array
    shared = seg.SharedFunctionalGroupsSequence[0]
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ident = item if "SegmentIdentificationSequence" in item else shared  # one segment: shared
        number = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out[uid, number] = (pixels[f], [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
    return out


def check_against_sources(seg, sources: list, expected_frame) -> None:  # noqa: ANN001
    """Every (source, segment) has one frame, on the source's position and orientation, with the expected pixels."""
    frames = frames_by_source(seg)
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    assert len(frames) == int(seg.NumberOfFrames) == len(sources) * len(numbers)  # empty frames kept
    iop = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    for ds in sources:
        np.testing.assert_allclose(iop, [float(v) for v in ds.ImageOrientationPatient], atol=1e-6)
        for n in numbers:
            pixels, ipp = frames[ds.SOPInstanceUID, n]
            np.testing.assert_allclose(ipp, [float(v) for v in ds.ImagePositionPatient], atol=1e-4)
            np.testing.assert_array_equal(
                pixels.astype(bool), expected_frame(ds, n), err_msg=f"{ds.SOPInstanceUID} #{n}"
            )
