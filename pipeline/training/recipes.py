"""Augmentation recipes (`train.augment.recipe`), in MONAI transforms, the same code for 2D and 3D.

- `light`: the pipeline's first recipe: one random rotation (full turns in 2D, +-15 deg in 3D) with
  +-10 % zoom, mirroring, a 10 % intensity scale and shift and weak noise, each at `augment.prob`.
- `nnunet`: nnU-Net v2's default (nnUNetTrainer.get_training_transforms), the lever against the
  curve that flattens after 40 epochs while the training loss keeps falling: rotation +-30 deg about
  each axis (p 0.2), scaling 0.7-1.4 (p 0.2), Gaussian noise of variance up to 0.1 (p 0.1),
  Gaussian blur sigma 0.5-1 (p 0.2), brightness x0.75-1.25 (p 0.15), contrast x0.75-1.25 about the
  mean within the original range (p 0.15), low-resolution simulation at zoom 0.5-1 (p 0.25), gamma
  0.7-1.5 keeping mean and std (p 0.3) and the same on the inverted image (p 0.1), and a mirror per
  allowed axis at p 0.5.

Both keep the paper's elastic deformation when `augment.elastic` is on (the EM preset). Spatial
transforms act on every key (label by nearest neighbour), intensity ones on the image only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import AugmentConfig

# light: full turns in-plane for 2D (microscopy has no "up"), small tilts in 3D
LIGHT_ROTATE = {2: (math.pi,), 3: (math.pi / 12,) * 3}
LIGHT_SCALE = 0.1  # +-10 % zoom together with rotation
NNUNET_ROTATE = math.pi / 6  # +-30 deg about each axis
NNUNET_SCALE = (-0.3, 0.4)  # MONAI's scale_range is added to 1: factors 0.7-1.4


def _flips(keys: Sequence[str], aug: AugmentConfig, dims: int, prob: float) -> list[Any]:
    from monai.transforms import RandFlipd

    axes = list(range(dims)) if aug.flip_axes is None else aug.flip_axes
    return [RandFlipd(keys=list(keys), prob=prob, spatial_axis=axis) for axis in axes]


def _elastic(keys: Sequence[str], modes: Sequence[str], aug: AugmentConfig) -> list[Any]:
    from pipeline.training.augment import RandElasticd

    if not aug.elastic:
        return []
    return [
        RandElasticd(
            keys=list(keys), spacing=aug.elastic_sigma, magnitude=aug.elastic_magnitude, mode=modes, prob=aug.prob
        )
    ]


def light(keys: Sequence[str], modes: Sequence[str], aug: AugmentConfig, dims: int) -> list[Any]:
    """The `light` recipe's transforms (see the module docstring)."""
    from monai.transforms import RandAffined, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd

    chain = _elastic(keys, modes, aug)
    if aug.rotate:
        chain.append(
            RandAffined(
                keys=list(keys),
                prob=aug.prob,
                rotate_range=LIGHT_ROTATE[dims],
                scale_range=(LIGHT_SCALE,) * dims,
                mode=modes,
                padding_mode="reflection",
            )
        )
    if aug.flip:
        axes = dims if aug.flip_axes is None else len(aug.flip_axes)
        chain += _flips(keys, aug, dims, aug.prob / max(axes, 1))  # the flip chance shared among the axes
    if aug.intensity:
        chain += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=aug.prob),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=aug.prob),
            RandGaussianNoised(keys="image", std=0.05, prob=aug.prob / 2),
        ]
    return chain


def nnunet_spatial(keys: Sequence[str], modes: Sequence[str], dims: int) -> list[Any]:
    """Rotation and scaling, each on its own chance as nnU-Net draws them."""
    from monai.transforms import RandAffined

    rotate = (NNUNET_ROTATE,) * (1 if dims == 2 else 3)
    common = {"keys": list(keys), "mode": modes, "padding_mode": "reflection"}
    return [
        RandAffined(prob=0.2, rotate_range=rotate, **common),
        RandAffined(prob=0.2, scale_range=(NNUNET_SCALE,) * dims, **common),
    ]


def nnunet_intensity(dims: int) -> list[Any]:
    """nnU-Net's image-only transforms, in its order."""
    from monai.transforms import (
        RandAdjustContrastd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
        RandSimulateLowResolutiond,
    )

    blur = (0.5, 1.0)
    return [
        RandGaussianNoised(keys="image", prob=0.1, std=math.sqrt(0.1), sample_std=True),
        RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=blur, sigma_y=blur, sigma_z=blur),
        RandScaleIntensityd(keys="image", prob=0.15, factors=(-0.25, 0.25)),
        RandScaleIntensityFixedMeand(keys="image", prob=0.15, factors=(-0.25, 0.25), preserve_range=True),
        RandSimulateLowResolutiond(
            keys="image", prob=0.25, zoom_range=(0.5, 1.0), upsample_mode="bilinear" if dims == 2 else "trilinear"
        ),
        RandAdjustContrastd(keys="image", prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
        RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5), retain_stats=True),
    ]


def nnunet(keys: Sequence[str], modes: Sequence[str], aug: AugmentConfig, dims: int) -> list[Any]:
    """The `nnunet` recipe's transforms (see the module docstring)."""
    chain = _elastic(keys, modes, aug)
    if aug.rotate:
        chain += nnunet_spatial(keys, modes, dims)
    if aug.intensity:
        chain += nnunet_intensity(dims)
    if aug.flip:
        chain += _flips(keys, aug, dims, 0.5)
    return chain


RECIPES: dict[str, Callable[[Sequence[str], Sequence[str], AugmentConfig, int], list[Any]]] = {
    "light": light,
    "nnunet": nnunet,
}
