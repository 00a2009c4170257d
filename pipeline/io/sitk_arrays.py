"""SimpleITK files as numpy arrays in MONAI's convention, without importing torch or MONAI.

Channel-first `(C, x, y[, z])` arrays with a RAS affine (ITK's LPS geometry converted exactly as
MONAI's `ITKReader` does). `pipeline.io.readers` wraps these in MONAI's reader interface and
`MetaTensor`; the ONNX predictor reads through here directly, so a one-image prediction never pays
for importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipeline.io.geometry import geometry_from_sitk
from pipeline.io.integrity import ImageReadError, check_nifti_complete, check_tiff_complete
from pipeline.io.suffixes import SUPPORTED_SUFFIXES, full_suffix

# geometry of channels read from separate files must agree this closely (affine entries, mm)
CHANNEL_AFFINE_ATOL = 1e-3

PathLike = str | Path


@dataclass
class LoadedImage:
    """A SimpleITK image with the path it came from (so later errors can name the file)."""

    image: sitk.Image
    path: Path


def _sitk_message(exc: Exception) -> str:
    """The informative line of a multi-line SimpleITK exception."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR:" in ln:
            return ln.split("ERROR:", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def dicom_series_files(folder: PathLike, series_uid: str | None = None) -> tuple[str, list[str]]:
    """(series UID, its files in the order SimpleITK reads them) for the one series in `folder`
    (or the named one); the DICOM SEG writer pairs its frames with these same instances."""
    folder = Path(folder)
    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise ImageReadError(f"{folder}: no DICOM series found in this folder")
    if series_uid is not None:
        if series_uid not in ids:
            raise ImageReadError(f"{folder}: DICOM series {series_uid} not found; the folder holds {ids}")
        uid = series_uid
    elif len(ids) > 1:
        raise ImageReadError(f"{folder}: holds {len(ids)} DICOM series ({', '.join(ids)}); put one series per folder")
    else:
        uid = ids[0]
    return uid, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def _read_dicom_series(folder: Path, series_uid: str | None) -> sitk.Image:
    uid, files = dicom_series_files(folder, series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"{folder}: cannot read DICOM series {uid} ({_sitk_message(exc)})") from None


def read_sitk(path: PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read one file (or a DICOM series folder) with SimpleITK, refusing truncated files."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file or directory")
    if p.is_dir():
        return _read_dicom_series(p, series_uid)
    suffix = full_suffix(p)
    if suffix not in SUPPORTED_SUFFIXES:
        raise ImageReadError(
            f"{p}: unsupported file type {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if suffix in (".nii", ".nii.gz"):
        check_nifti_complete(p)
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise ImageReadError(f"{p}: cannot read ({_sitk_message(exc)})") from None
    if suffix in (".tif", ".tiff"):
        n = int(np.prod(image.GetSize())) * image.GetNumberOfComponentsPerPixel()
        check_tiff_complete(p, n)
    return image


def _torch_safe(array: np.ndarray) -> np.ndarray:
    """Widen dtypes torch handles poorly (unsigned > 8 bit, bool)."""
    widen = {
        np.dtype(np.uint16): np.int32,
        np.dtype(np.uint32): np.int64,
        np.dtype(np.uint64): np.int64,
        np.dtype(bool): np.uint8,
    }
    target = widen.get(array.dtype)
    return array.astype(target) if target is not None else array


def sitk_to_array(image: sitk.Image) -> np.ndarray:
    """Voxels in MONAI order: `(x, y[, z])` for scalar images, `(C, x, y[, z])` for vector ones."""
    arr = sitk.GetArrayFromImage(image)  # (z, y, x[, C])
    d = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() == 1:
        out = arr.transpose(tuple(range(d))[::-1])
    else:
        out = np.moveaxis(arr, -1, 0).transpose((0, *range(d, 0, -1)))
    return _torch_safe(np.ascontiguousarray(out))


def image_meta(image: sitk.Image, path: Path | None) -> dict[str, Any]:
    """MONAI-style metadata: RAS `affine`, `spatial_shape`, spacing, plus the ITK geometry."""
    geom = geometry_from_sitk(image)
    affine = geom.ras_affine()
    return {
        "affine": affine,
        "original_affine": affine.copy(),
        "spatial_shape": np.asarray(image.GetSize()),
        "spacing": np.asarray(geom.spacing),
        "space": "RAS",
        "itk_origin": np.asarray(geom.origin),  # LPS, as stored in the file
        "itk_direction": np.asarray(geom.direction).ravel(),
        "filename_or_obj": str(path) if path is not None else "",
    }


def channels_first(items: Sequence[LoadedImage]) -> tuple[np.ndarray, dict[str, Any]]:
    """One image from per-channel files (or one file): `(array, meta)`; a scalar single file
    comes back without a channel axis (`original_channel_dim` NaN), as MONAI's readers return it."""
    arrays, meta = [], None
    for item in items:
        arr = sitk_to_array(item.image)
        m = image_meta(item.image, item.path)
        vector = item.image.GetNumberOfComponentsPerPixel() > 1
        m["original_channel_dim"] = 0 if vector else float("nan")
        if meta is None:
            meta = m
        else:
            _check_same_grid(items[0].path, meta, item.path, m)
        arrays.append(arr if vector else arr[None])
    assert meta is not None
    if len(items) == 1:
        return (arrays[0] if meta["original_channel_dim"] == 0 else arrays[0][0]), meta
    meta["original_channel_dim"] = 0
    return np.concatenate(arrays, axis=0), meta


def _check_same_grid(path_a: Path, meta_a: dict, path_b: Path, meta_b: dict) -> None:
    if not np.array_equal(meta_a["spatial_shape"], meta_b["spatial_shape"]):
        raise ImageReadError(
            f"{path_b}: shape {meta_b['spatial_shape'].tolist()} differs from {path_a} "
            f"{meta_a['spatial_shape'].tolist()}; channels must share one grid"
        )
    if not np.allclose(meta_a["affine"], meta_b["affine"], atol=CHANNEL_AFFINE_ATOL):
        raise ImageReadError(f"{path_b}: geometry (affine) differs from {path_a}; channels must share one grid")


@dataclass
class ArrayImage:
    """A channel-first voxel array with its RAS affine and meta: what `read_array` returns. It
    has the `.shape` / `.affine` / array protocol the predictor's checks and `write_image` use."""

    array: np.ndarray
    meta: dict[str, Any]

    @property
    def affine(self) -> np.ndarray:
        return self.meta["affine"]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.array if dtype is None else self.array.astype(dtype, copy=False)


def read_array(path: PathLike | Sequence[PathLike], series_uid: str | None = None) -> ArrayImage:
    """A file, a DICOM series folder or per-channel files as `(C, x, y[, z])` plus RAS meta."""
    names = [path] if isinstance(path, (str, Path)) else list(path)
    array, meta = channels_first([LoadedImage(read_sitk(n, series_uid), Path(n)) for n in names])
    if meta["original_channel_dim"] != 0:
        array = array[None]
    meta["original_channel_dim"] = 0
    return ArrayImage(np.ascontiguousarray(array), meta)
