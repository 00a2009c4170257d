"""Image readers on SimpleITK: one code path for every format the pipeline accepts.

Everything leaves here in MONAI's convention: channel-first `(C, x, y[, z])` arrays on a
`MetaTensor` whose `affine` is RAS (ITK's LPS geometry converted exactly as MONAI's `ITKReader`
does). `SimpleITKReader` is a `monai.data.ImageReader`, so `LoadImaged(reader=SimpleITKReader())`
gives the same arrays and affines inside a MONAI chain as `read_image` gives outside one. The
torch-free core is `pipeline.io.sitk_arrays`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader, MetaTensor

from pipeline.io.integrity import ImageReadError
from pipeline.io.sitk_arrays import (
    LoadedImage,
    PathLike,
    channels_first,
    read_array,
    read_sitk,
)
from pipeline.io.suffixes import SUPPORTED_SUFFIXES, full_suffix


class SimpleITKReader(ImageReader):
    """`monai.data.ImageReader` on SimpleITK for `LoadImage(d)(reader=SimpleITKReader())`.

    A list of files is read as channels of one image (nnU-Net's `_0000`, `_0001` ... files); their
    grids must agree. A folder is read as one DICOM series.
    """

    def __init__(self, series_uid: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.series_uid = series_uid
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(Path(n).is_dir() or full_suffix(n) in SUPPORTED_SUFFIXES for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> LoadedImage | list[LoadedImage]:
        names = [data] if isinstance(data, (str, Path)) else list(data)
        loaded = [LoadedImage(read_sitk(n, self.series_uid), Path(n)) for n in names]
        return loaded[0] if len(loaded) == 1 else loaded

    def get_data(self, img: LoadedImage | Sequence[LoadedImage]) -> tuple[np.ndarray, dict]:
        return channels_first([img] if isinstance(img, LoadedImage) else list(img))


def read_image(path: PathLike | Sequence[PathLike], series_uid: str | None = None) -> MetaTensor:
    """Read a file, a DICOM series folder, or a list of per-channel files.

    Returns a `MetaTensor` `(C, x, y[, z])` with a RAS affine and the source dtype (unsigned
    16/32-bit widened to a signed type torch supports).
    """
    import torch

    loaded = read_array(path, series_uid)
    affine = torch.as_tensor(loaded.meta.pop("affine"), dtype=torch.float64)
    return MetaTensor(torch.from_numpy(loaded.array), affine=affine, meta=loaded.meta)


def read_tiff_stack(path: PathLike) -> list[MetaTensor]:
    """A multi-page TIFF as a list of 2D images `(C, x, y)` (the ISBI 2012 form), in page order."""
    import torch

    volume = read_image(path)
    if volume.ndim == 3:  # a single page: already 2D
        return [volume]
    if volume.ndim != 4:
        raise ImageReadError(f"{path}: expected a 2D image or a stack of 2D pages, got shape {tuple(volume.shape)}")
    aff3 = volume.affine.numpy()
    affine2d = torch.as_tensor(aff3[np.ix_([0, 1, 3], [0, 1, 3])], dtype=torch.float64)
    out = []
    for k in range(volume.shape[-1]):
        meta = {key: v for key, v in volume.meta.items() if key not in ("affine", "original_affine", "spatial_shape")}
        meta["spatial_shape"] = np.asarray(volume.shape[1:3])
        meta["spacing"] = np.asarray(volume.meta["spacing"][:2])
        meta["page"] = k
        out.append(MetaTensor(volume.as_tensor()[..., k].clone(), affine=affine2d.clone(), meta=meta))
    return out
