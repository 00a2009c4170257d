"""Everything whole-image inference needs, as one small JSON-able record.

The evaluate stage builds it from the config and the checkpoint's `model_args`; the exported
predictor stores it next to the model and rebuilds it with `from_dict`, so both infer identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.model.args import ModelArgs


@dataclass(frozen=True)
class InferenceSettings:
    padding: str  # "valid" -> overlap-tile, "same" -> sliding window
    depth: int  # number of poolings of the U-Net
    tile_size: tuple[int, ...]  # valid: output tile size; same: sliding-window ROI
    overlap: float = 0.5  # sliding window only
    blend: str = "gaussian"  # sliding window only
    batch_size: int = 4
    tta: bool = False  # flip test-time augmentation
    tta_axes: tuple[int, ...] | None = None  # the axes TTA mirrors (training's flip axes); None = all
    keep_largest: bool = False  # keep the largest connected component per foreground class
    whole_image_voxels: int = 0  # valid: one whole-image tile up to this many input voxels (0: never)
    channels_last: bool | str = "auto"  # eager torch nets in channels-last (pipeline.inference.layout)

    def __post_init__(self) -> None:
        if self.padding not in ("valid", "same"):
            raise InputError(f"padding must be 'valid' or 'same', got {self.padding!r}")
        if self.blend not in ("gaussian", "constant"):
            raise InputError(f"blend must be 'gaussian' or 'constant', got {self.blend!r}")
        if self.channels_last not in (True, False, "auto"):
            raise InputError(f"channels_last must be true, false or 'auto', got {self.channels_last!r}")
        if self.batch_size < 1 or self.depth < 1 or not self.tile_size or min(self.tile_size) < 1:
            raise InputError(f"invalid inference settings: {self}")
        object.__setattr__(self, "tile_size", tuple(int(t) for t in self.tile_size))
        if self.tta_axes is not None:
            object.__setattr__(self, "tta_axes", tuple(int(a) for a in self.tta_axes))

    def output_tile(self, image_size: Sequence[int]) -> tuple[int, ...]:
        """The tile for an image: in 'valid' padding the whole image when its network input fits
        `whole_image_voxels` (one forward pass, no tile seams to recompute), else `tile_size`."""
        if self.padding == "valid" and self.whole_image_voxels:
            from pipeline.model.shapes import legal_input_size

            step = 2**self.depth
            wanted = [max(step, int(n)) for n in image_size]
            if math.prod(legal_input_size(wanted, self.depth, "valid")) <= self.whole_image_voxels:
                return tuple(int(n) for n in image_size)
        return self.tile_size

    @classmethod
    def from_config(cls, cfg: Config, model_args: ModelArgs | None = None) -> InferenceSettings:
        """From a `Config`; padding and depth come from `model_args` (a checkpoint's) when given."""
        from pipeline.model.shapes import forward_bytes_per_voxel

        padding = model_args.padding if model_args else cfg.model.padding
        features = model_args.features if model_args else cfg.model.features
        depth = len(features) - 1
        inf = cfg.inference
        per_voxel = forward_bytes_per_voxel(features, cfg.data.spatial_dims)
        return cls(
            padding=padding,
            depth=depth,
            tile_size=tuple(inf.tile_size or cfg.train.patch_size),
            overlap=inf.overlap,
            blend=inf.blend,
            batch_size=inf.batch_size,
            tta=inf.tta,
            tta_axes=cfg.train.augment.flip_axes,
            keep_largest=inf.keep_largest_component,
            whole_image_voxels=int(inf.whole_image_mb * 2**20 / per_voxel),
            channels_last=inf.channels_last,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tile_size"] = list(self.tile_size)
        d["tta_axes"] = None if self.tta_axes is None else list(self.tta_axes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferenceSettings:
        """From `to_dict` output (an exported metadata.json); keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})  # __post_init__ makes the sizes tuples
