"""PNG figures for people: image / ground truth / prediction overlays, and per-case Dice.

Used by training validation (a few overlays per epoch) and the evaluate stage (best, median,
worst case), and logged to MLflow. matplotlib runs headless (Agg); files are written atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _array(x: Any) -> np.ndarray:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _spatial(x: np.ndarray, spatial_dims: int) -> np.ndarray:
    """Drop a channel axis: the first channel for images, the single channel for masks."""
    while x.ndim > spatial_dims:
        x = x[0]
    return x


def pick_slice(label: np.ndarray | None, prediction: np.ndarray | None, depth: int) -> int:
    """Slice (last axis) to show for a 3D case: the middle of the foreground's extent (ground truth,
    else prediction), or the middle slice when both are empty."""
    for mask in (label, prediction):
        if mask is not None and mask.any():
            zs = np.nonzero(mask.reshape(-1, mask.shape[-1]).any(axis=0))[0]
            return int((zs[0] + zs[-1]) // 2)
    return depth // 2


def overlay_figure(
    image: Any,
    label: Any = None,
    prediction: Any = None,
    *,
    spatial_dims: int | None = None,
    title: str = "",
    slice_index: int | None = None,
    num_classes: int | None = None,
) -> Any:
    """A matplotlib Figure: image, image + ground truth, image + prediction, side by side.

    Arrays are (C, *spatial) or (*spatial); 3D volumes show one slice along the last axis
    (`slice_index`, default `pick_slice`). Class k > 0 gets colour k of 'tab10'.
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    img = _array(image).astype(np.float32)
    lab, pred = _array(label), _array(prediction)
    if spatial_dims is None:
        spatial_dims = img.ndim - 1 if img.ndim in (3, 4) else img.ndim
    img = _spatial(img, spatial_dims)
    lab = None if lab is None else _spatial(lab, spatial_dims)
    pred = None if pred is None else _spatial(pred, spatial_dims)
    if spatial_dims == 3:
        z = pick_slice(lab, pred, img.shape[-1]) if slice_index is None else slice_index
        img, lab, pred = img[..., z], None if lab is None else lab[..., z], None if pred is None else pred[..., z]
        title = f"{title} (slice {z})".strip()
    k = num_classes or int(max([1] + [int(m.max()) + 1 for m in (lab, pred) if m is not None and m.size]))
    cmap = ListedColormap(plt.get_cmap("tab10").colors[: max(k, 2)])

    panels = [("image", None)] + [(n, m) for n, m in (("ground truth", lab), ("prediction", pred)) if m is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0, 1)
    for ax, (name, mask) in zip(axes[0], panels):
        ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")  # x right, y up (RAS-like view)
        if mask is not None:
            shown = np.ma.masked_where(mask.T == 0, mask.T)
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=max(k, 2) - 1, alpha=0.45, interpolation="nearest", origin="lower")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as PNG atomically (temp file, then rename) and close it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_overlay(path: str | Path, image: Any, label: Any = None, prediction: Any = None, **kwargs: Any) -> Path:
    """`overlay_figure` written to `path` as PNG."""
    return save_figure(overlay_figure(image, label, prediction, **kwargs), path)


def per_case_dice_figure(
    case_ids: Sequence[str], dice: Sequence[float], title: str = "per-case Dice (foreground mean)"
) -> Any:
    """Bar chart of each case's Dice, sorted ascending, with the mean and median as lines."""
    plt = _pyplot()
    order = np.argsort(np.asarray(dice, dtype=float), kind="stable")
    ids = [str(case_ids[i]) for i in order]
    vals = np.asarray(dice, dtype=float)[order]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(ids) + 1.5), 3.4))
    ax.bar(range(len(ids)), vals, color="tab:blue")
    if len(vals):
        ax.axhline(float(np.mean(vals)), color="tab:red", linestyle="--", label=f"mean {np.mean(vals):.3f}")
        ax.axhline(float(np.median(vals)), color="tab:green", linestyle=":", label=f"median {np.median(vals):.3f}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(range(len(ids)))
    ax.set_xticklabels(ids, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("Dice")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_per_case_dice(path: str | Path, case_ids: Sequence[str], dice: Sequence[float], **kwargs: Any) -> Path:
    return save_figure(per_case_dice_figure(case_ids, dice, **kwargs), path)
