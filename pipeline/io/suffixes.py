"""File suffixes: which image formats the readers and writers take, and how a case is named.

One place for the lists, so that import, batch prediction and the predictor agree on them.
"""

from __future__ import annotations

from pathlib import Path

SUPPORTED_SUFFIXES = (
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".png",
    ".tif",
    ".tiff",
    ".dcm",
)
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff")
SEG_SUFFIX = ".dcm"  # `-o result.dcm` from a DICOM series: a DICOM Segmentation object


def full_suffix(path: str | Path) -> str:
    """Lower-case suffix, with `.gz` kept together with the one before it (`.nii.gz`)."""
    name = Path(path).name.lower()
    suffixes = Path(name).suffixes
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def strip_image_suffix(name: str) -> str:
    """`name` without a readable image suffix (`case_01.nii.gz` -> `case_01`, any case); a name
    without one (a DICOM folder, `notes.txt`) comes back unchanged.

    Args:
        name: a file name or a relative path.

    Returns:
        The name a case is known by.
    """
    suffix = full_suffix(name)
    return name[: -len(suffix)] if suffix and suffix in SUPPORTED_SUFFIXES else name
