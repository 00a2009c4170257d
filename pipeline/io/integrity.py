"""Completeness checks for formats whose SimpleITK reader accepts a truncated file silently.

Measured on SimpleITK 2.5.7: a truncated `.nii` / `.nii.gz` reads without error (the missing
voxels come back as garbage or zeros) and a multi-page TIFF that lost its tail reads with fewer
pages. NRRD, MetaImage, PNG and DICOM raise on their own. These checks turn the silent cases into
errors that name the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.suffixes import full_suffix


class ImageReadError(PipelineError, RuntimeError):
    """A file or DICOM folder that cannot be read as an image; the message names the path."""


def check_nifti_complete(path: Path) -> None:
    """Raise if a NIfTI file holds fewer voxel bytes than its header declares."""
    import nibabel as nib

    try:
        proxy = nib.load(str(path)).dataobj  # reads the header only
    except Exception as exc:  # nibabel raises several types for a bad header
        raise ImageReadError(f"{path}: not a readable NIfTI file ({exc})") from None
    # the proxy's offset is the file's vox_offset (the image's .header copy resets it to 0)
    n_voxels = int(np.prod(proxy.shape, dtype=np.int64))
    expected = int(proxy.offset) + n_voxels * np.dtype(proxy.dtype).itemsize
    if full_suffix(path).endswith(".gz"):
        got = 0
        try:
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    got += len(chunk)
        except (EOFError, OSError, zlib.error) as exc:
            raise ImageReadError(f"{path}: truncated or corrupt gzip stream ({exc})") from None
    else:
        got = path.stat().st_size
    if got < expected:
        raise ImageReadError(f"{path}: truncated file: {got} bytes of the {expected} its header declares")
    if np.dtype(proxy.dtype).kind == "f":
        # SimpleITK 2.5 reads NaN voxels of a NIfTI file as 0: look at the raw values ourselves
        bad = int(np.count_nonzero(~np.isfinite(np.asarray(proxy.get_unscaled()))))
        if bad:
            raise ImageReadError(f"{path}: {bad} NaN/Inf voxel(s)")


def check_tiff_complete(path: Path, n_pixels: int) -> None:
    """Raise if tifffile cannot read every page, or finds more pixels than SimpleITK did."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            n_pages = len(tif.pages)
            size = sum(int(np.prod(page.shape)) for page in tif.pages)
    except Exception as exc:  # tifffile raises its own TiffFileError and plain ValueErrors
        raise ImageReadError(f"{path}: truncated or corrupt TIFF ({exc})") from None
    if size != n_pixels:
        raise ImageReadError(
            f"{path}: truncated or corrupt TIFF: {n_pages} page(s) hold {size} values but only {n_pixels} were read"
        )
