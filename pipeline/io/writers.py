"""Write an array with a RAS affine to NIfTI / NRRD / MetaImage / PNG / TIFF via SimpleITK.

The inverse of `read_image`: `write_image(img, img.affine, p)` then `read_image(p)` gives the same
voxels and affine (to the precision the format stores). PNG/TIFF keep spacing only (no origin or
direction) and integers only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipeline.errors import InputError
from pipeline.io.atomic import atomic_write
from pipeline.io.geometry import apply_geometry, geometry_from_ras_affine
from pipeline.io.suffixes import WRITABLE_SUFFIXES, full_suffix

_COMPRESS = {".nrrd", ".mha", ".mhd"}  # NIfTI compression follows the .gz suffix


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor / MetaTensor
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.numpy()
    return np.asarray(x)


def _affine_of(ref: Any) -> np.ndarray:
    if ref is None:
        raise InputError("write_image needs an affine: pass a MetaTensor, a meta dict with 'affine', or an array")
    if hasattr(ref, "affine"):
        ref = ref.affine
    elif isinstance(ref, dict):
        ref = ref["affine"]
    return _to_numpy(ref).astype(np.float64)


def _integer_image(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError(f"{path}: PNG/TIFF output stores integers only; got non-integer {arr.dtype} values")
    lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise InputError(f"{path}: PNG/TIFF output stores 0..65535; values span {lo}..{hi}")
    return arr.astype(np.uint8 if hi <= 255 else np.uint16)


def _sitk_dtype(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return arr


def to_sitk(array: Any, affine: Any) -> sitk.Image:
    """A SimpleITK image from a MONAI-order array (`(x, y[, z])` or `(C, x, y[, z])`) + RAS affine."""
    arr = _sitk_dtype(_to_numpy(array))
    aff = _affine_of(affine)
    d = aff.shape[0] - 1
    if arr.ndim == d + 1:
        if arr.shape[0] == 1:
            arr = arr[0]
    elif arr.ndim != d:
        raise InputError(f"array of shape {arr.shape} does not fit a {d}D affine (expected {d} or {d + 1} dims)")
    if arr.ndim == d:
        image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(tuple(range(d))[::-1])), isVector=False)
    else:  # (C, x, y[, z]) -> (z, y, x, C) vector image
        image = sitk.GetImageFromArray(
            np.ascontiguousarray(np.moveaxis(arr, 0, -1).transpose((*range(d - 1, -1, -1), d))), isVector=True
        )
    apply_geometry(image, geometry_from_ras_affine(aff))
    return image


def write_image(array: Any, affine_or_meta: Any, path: str | Path, description: str | None = None) -> Path:
    """Write `array` with the geometry of `affine_or_meta` (a RAS affine, MetaTensor or meta dict).

    `array` is `(x, y[, z])` or channel-first `(C, x, y[, z])` (C=1 is squeezed; C>1 becomes a
    vector image). The file appears atomically. `description` goes into the header's free text
    (NIfTI `descrip`, at most 79 characters; ITK's file notes elsewhere).
    """
    path = Path(path)
    suffix = full_suffix(path)
    if suffix not in WRITABLE_SUFFIXES:
        raise InputError(f"{path}: cannot write {suffix or '(no suffix)'!r}; use one of {', '.join(WRITABLE_SUFFIXES)}")
    if affine_or_meta is None and hasattr(array, "affine"):
        affine_or_meta = array
    arr = _to_numpy(array)
    if suffix in (".png", ".tif", ".tiff"):
        arr = _integer_image(arr, path)
    image = to_sitk(arr, affine_or_meta)
    if description:
        image.SetMetaData("ITK_FileNotes", description[:79])
    if suffix == ".mhd":  # header + separate data file: write both under their final names
        _write_mhd(image, path)
        return path
    with atomic_write(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=suffix in _COMPRESS)
    return path


def _write_mhd(image: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sitk.WriteImage(image, str(tmpdir / path.name), useCompression=True)
        header = tmpdir / path.name
        for f in sorted(tmpdir.iterdir()):
            if f != header:
                os.replace(f, path.parent / f.name)
        os.replace(header, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
