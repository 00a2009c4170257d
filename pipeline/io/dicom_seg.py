"""DICOM Segmentation objects (SEG) for a predicted mask, written with highdicom.

PACS, OHIF, 3D Slicer and Weasis store a segmentation as a SEG that references its source series;
a NIfTI mask is a research format. The SEG here is BINARY, one segment per foreground label, one
frame per source instance, on the source's own grid and in the source's instance order (highdicom
pairs frame i with source_images[i], its issue #117), with empty frames kept (omitting them
misplaces overlays in some viewers).

Each frame is sampled from the mask at the patient position of every pixel of its source slice
(ImagePositionPatient + ImageOrientationPatient + PixelSpacing, LPS), so a frame lands on its slice
whatever order SimpleITK read the series in and whatever the orientation (oblique, LPS, flipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError

GRID_TOL = 1e-2  # voxels: a source pixel must sit on a mask voxel centre (same grid), up to rounding


@dataclass(frozen=True)
class CodeSpec:
    """A coded concept (e.g. SNOMED CT "5366008" / "Hippocampus")."""

    scheme: str
    value: str
    meaning: str

    def code(self) -> Any:
        from pydicom.sr.coding import Code

        return Code(self.value, self.scheme, self.meaning)


GENERIC_CATEGORY = CodeSpec("SCT", "85756007", "Tissue")
GENERIC_TYPE = CodeSpec("SCT", "91723000", "Anatomical Structure")


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: the mask value it holds, its label and its codes."""

    number: int
    label: str
    category: CodeSpec = GENERIC_CATEGORY
    type: CodeSpec = GENERIC_TYPE
    modifier: CodeSpec | None = None  # e.g. laterality or region ("Anterior") of the property type

    @property
    def coded(self) -> bool:
        return (self.category, self.type) != (GENERIC_CATEGORY, GENERIC_TYPE)


@dataclass(frozen=True)
class Algorithm:
    """What made the mask: AlgorithmIdentificationSequence and the equipment fields."""

    name: str
    version: str  # the MLflow registered version, else the checkpoint's SHA-256
    software: str  # "<package> <version>"
    manufacturer: str = "unet-pipeline"


# Type 2 attributes (must be present, may be empty) that the SEG copies from its source; anonymised
# or exported series often drop them, and highdicom then fails with an AttributeError
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def read_series_headers(files: Sequence[str | Path]) -> list[Any]:
    """The source instances' headers (no pixel data), in the order given; absent type-2 patient and
    study attributes are added empty (in memory only: the source files are never written)."""
    import pydicom

    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for a bad file
            raise InputError(f"{f}: cannot read as DICOM ({exc})") from None
        for keyword in TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
        out.append(ds)
    return out


def _pixel_positions_lps(ds: Any) -> np.ndarray:
    """(rows, cols, 3) patient positions (LPS, mm) of every pixel centre of one source slice."""
    ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # along a row (column index grows), along a column
    spacing_between_rows, spacing_between_cols = (float(v) for v in ds.PixelSpacing)
    i = np.arange(int(ds.Rows), dtype=np.float64)[:, None, None]
    j = np.arange(int(ds.Columns), dtype=np.float64)[None, :, None]
    return ipp + j * spacing_between_cols * row_dir + i * spacing_between_rows * col_dir


def frames_on_source_grid(mask: np.ndarray, ras_affine: np.ndarray, sources: Sequence[Any], where: str) -> np.ndarray:
    """(n_sources, rows, cols) frames of `mask` ((x, y, z) voxels on `ras_affine`), frame k on source k's pixels."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise InputError(f"{where}: a DICOM SEG needs a 3D mask, got shape {mask.shape}")
    to_voxel = np.linalg.inv(np.asarray(ras_affine, dtype=np.float64))
    frames = []
    for k, ds in enumerate(sources):
        ras = _pixel_positions_lps(ds) * np.array([-1.0, -1.0, 1.0])  # LPS -> RAS
        ijk = ras @ to_voxel[:3, :3].T + to_voxel[:3, 3]
        idx = np.rint(ijk)
        off = float(np.abs(ijk - idx).max())
        if off > GRID_TOL:
            raise InputError(
                f"{where}: instance {k + 1} ({getattr(ds, 'SOPInstanceUID', '?')}) is not on the mask's grid "
                f"(pixel centres {off:.3f} voxels off); the mask must be in the source series' geometry"
            )
        idx = idx.astype(np.int64)
        if (idx < 0).any() or (idx >= np.array(mask.shape)).any():
            raise InputError(f"{where}: instance {k + 1} lies outside the mask ({mask.shape}); wrong series?")
        frames.append(mask[idx[..., 0], idx[..., 1], idx[..., 2]])
    return np.stack(frames)


def _segment_descriptions(segments: Sequence[SegmentSpec], algorithm: Algorithm) -> list[Any]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=codes.cid7162.ArtificialIntelligence, version=algorithm.version
    )
    out = []
    for s in segments:
        item = hd.seg.SegmentDescription(
            segment_number=s.number,
            segment_label=s.label,
            segmented_property_category=s.category.code(),
            segmented_property_type=s.type.code(),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        if s.modifier is not None:  # (0062,0011) sits inside the property type's code item (dciodvfy-clean)
            m = s.modifier
            item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(m.value, m.scheme, m.meaning)
            ]
        out.append(item)
    return out


def build_seg(
    frames: np.ndarray,
    sources: Sequence[Any],
    segments: Sequence[SegmentSpec],
    algorithm: Algorithm,
    content_description: str | None = None,
) -> Any:
    """A highdicom Segmentation: BINARY, frames on the sources (same order), empty frames kept;
    `content_description` (e.g. the predictor's QC score and verdict) at most 64 characters."""
    import highdicom as hd

    present = {int(v) for v in np.unique(frames)} - {0}
    described = {s.number for s in segments}
    if not present <= described:
        raise InputError(f"mask values {sorted(present - described)} have no segment description")
    series_number = int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=frames.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(segments, algorithm),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        **equipment_fields(algorithm),
        series_description=f"{algorithm.name} segmentation"[:64],
        omit_empty_frames=False,
        content_description=content_description[:64] if content_description else None,
    )


def equipment_fields(algorithm: Any) -> dict[str, str]:
    """The equipment attributes of an object the algorithm derived (SEG, Parametric Map): who made
    it, which model and version; DICOM caps the last two at 64 characters."""
    return {
        "manufacturer": algorithm.manufacturer,
        "manufacturer_model_name": algorithm.name[:64],
        "software_versions": algorithm.software,
        "device_serial_number": algorithm.version[:64],
    }


def write_seg(
    path: str | Path,
    mask: np.ndarray,
    ras_affine: np.ndarray,
    source_files: Sequence[str | Path],
    segments: Sequence[SegmentSpec],
    algorithm: Algorithm,
    content_description: str | None = None,
) -> Path:
    """Write the SEG of `mask` (source geometry) for the series in `source_files`; atomic."""
    from pipeline.io.atomic import atomic_write

    path = Path(path)
    sources = read_series_headers(source_files)
    frames = frames_on_source_grid(mask, ras_affine, sources, where=str(Path(source_files[0]).parent))
    seg = build_seg(frames, sources, segments, algorithm, content_description)
    with atomic_write(path) as tmp:
        seg.save_as(str(tmp))
    return path
