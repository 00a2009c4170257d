"""Saliency maps (`pipeline.inference.saliency`) as files beside the mask.

3D: `<mask>_explain_<label>.nii.gz`, float32 in [0, 1], in the mask's (the source image's)
geometry. 2D: `<mask>_explain_<label>.png`, the image in grey under the map as a heat overlay
(transparent where the map is 0), RGB, the image's size and orientation as `pipeline.io` reads
and writes PNG. `<mask>` is the mask's file name without its image suffix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io.suffixes import full_suffix

OVERLAY_ALPHA = 0.6  # the overlay's opacity where the map is 1


def label_slug(name: str, index: int) -> str:
    """A class name fit for a file name (`left hippocampus` -> `left_hippocampus`)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_")
    return slug or f"class{index}"


def explain_path(mask_path: str | Path, label: str, index: int, spatial_dims: int) -> Path:
    """`<mask>_explain_<label>.png` (2D) or `.nii.gz` (3D) beside `mask_path`."""
    mask_path = Path(mask_path)
    suffix = full_suffix(mask_path)
    stem = mask_path.name[: -len(suffix)] if suffix else mask_path.name
    ext = ".png" if spatial_dims == 2 else ".nii.gz"
    return mask_path.with_name(f"{stem}_explain_{label_slug(label, index)}{ext}")


def heat_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """uint8 RGB (3, x, y): `image` (C, x, y), channels averaged and scaled by its 1st-99th
    percentiles to grey, under `cam` (x, y, values in [0, 1]) in a blue-green-red ramp whose
    opacity is `alpha * cam`."""
    grey = np.asarray(image, np.float64).mean(axis=0)
    lo, hi = np.percentile(grey, [1, 99]) if grey.size else (0.0, 1.0)
    grey = np.clip((grey - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(grey)
    cam = np.clip(np.asarray(cam, np.float64), 0, 1)
    heat = np.stack([np.clip(1.5 - np.abs(4 * cam - c), 0, 1) for c in (3, 2, 1)])  # jet-like: red at 1
    weight = alpha * cam[None]
    rgb = (1 - weight) * grey[None] + weight * heat
    return np.round(rgb * 255).astype(np.uint8)


def write_explanations(maps: Any, image: Any, mask_path: str | Path, labels: Sequence[str]) -> list[Path]:
    """Write map k-1 of `maps` ((K-1, *spatial) on `image`'s grid) as class k's file; returns the paths.

    Args:
        maps: the foreground classes' maps, `explain_case`'s output.
        image: the source image (C, *spatial) MetaTensor the mask was written with.
        mask_path: the mask's path; the maps go beside it.
        labels: every class name, background first.
    """
    from pipeline.io import write_image

    arr = maps.detach().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
    source = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    dims = arr.ndim - 1
    written = []
    for k in range(1, arr.shape[0] + 1):
        name = labels[k] if k < len(labels) else f"class{k}"
        path = explain_path(mask_path, name, k, dims)
        data = heat_overlay(source, arr[k - 1]) if dims == 2 else arr[k - 1][None].astype(np.float32)
        written.append(write_image(data, image, path))
    return written
