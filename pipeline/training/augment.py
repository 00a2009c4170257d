"""The U-Net paper's elastic deformation, one transform for 2D and 3D.

Ronneberger et al. (2015) displace the points of a coarse grid by Gaussian random vectors and
interpolate the displacement smoothly between them. MONAI has exactly that for 2D only
(`Rand2DElasticd`: control-point grid + bicubic upsampling); `Rand3DElasticd` smooths a dense noise
field instead, whose magnitude means something else. This transform reuses MONAI's pieces
(`RandDeformGrid`, `Resample`) so both dimensionalities share the paper's semantics:

- `spacing`: distance between control points, in pixels/voxels (how smooth the field is);
- `magnitude`: standard deviation of each control point's displacement, in pixels/voxels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import CenterSpatialCrop, MapTransform, RandDeformGrid, RandomizableTransform, Resample
from monai.utils import ensure_tuple_rep


class RandElasticd(RandomizableTransform, MapTransform):
    """Smooth random displacement on a coarse grid, applied identically to every key.

    `mode` is per key ("bilinear" for images and weight maps, "nearest" for labels); borders are
    filled by reflection so a patch never gains artificial zeros.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing: float,
        magnitude: float,
        mode: Sequence[str] | str = "bilinear",
        prob: float = 0.5,
        padding_mode: str = "reflection",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.spacing = float(spacing)
        self.deform_grid = RandDeformGrid(spacing=self.spacing, magnitude_range=(magnitude, magnitude))
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = padding_mode
        self.resampler = Resample(padding_mode=padding_mode)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandElasticd:
        super().set_random_state(seed, state)
        self.deform_grid.set_random_state(seed, state)
        return self

    def _dense_grid(self, spatial: Sequence[int], device: torch.device) -> torch.Tensor:
        dims = len(spatial)
        self.deform_grid.device = device
        grid = self.deform_grid(spatial_size=spatial)  # (dims+1, *control) in pixel units
        grid = torch.nn.functional.interpolate(
            grid.unsqueeze(0),
            scale_factor=(self.spacing,) * dims,
            recompute_scale_factor=True,
            mode="bicubic" if dims == 2 else "trilinear",
            align_corners=False,
        )[0]
        return CenterSpatialCrop(roi_size=spatial)(grid)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        first = self.first_key(d)
        if first == ():
            return d
        grid = self._dense_grid(tuple(d[first].shape[1:]), torch.as_tensor(d[first]).device)
        for key, mode in self.key_iterator(d, self.mode):
            d[key] = self.resampler(d[key], grid, mode=mode, padding_mode=self.padding_mode)
        return d
