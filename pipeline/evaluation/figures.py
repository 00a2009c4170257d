"""PNG figures for people: image / ground truth / prediction overlays, and per-case Dice.

Used by training validation (a few overlays per epoch) and the evaluate stage (best, median,
worst case), and logged to MLflow. matplotlib runs headless (Agg); files are written atomically.
"""

from __future__ import annotations

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


def _slices(image: Any, label: Any, prediction: Any, spatial_dims: int | None, slice_index: int | None) -> tuple:
    """(image, label, prediction) as 2D arrays (None stays None) and the slice shown ("" in 2D)."""
    img = _array(image).astype(np.float32)
    lab, pred = _array(label), _array(prediction)
    if spatial_dims is None:
        spatial_dims = img.ndim - 1 if img.ndim in (3, 4) else img.ndim
    img = _spatial(img, spatial_dims)
    lab = None if lab is None else _spatial(lab, spatial_dims)
    pred = None if pred is None else _spatial(pred, spatial_dims)
    if spatial_dims != 3:
        return img, lab, pred, ""
    z = pick_slice(lab, pred, img.shape[-1]) if slice_index is None else slice_index
    return img[..., z], None if lab is None else lab[..., z], None if pred is None else pred[..., z], f" (slice {z})"


def draw_overlay(
    axes: Sequence[Any],
    image: Any,
    label: Any = None,
    prediction: Any = None,
    *,
    spatial_dims: int | None = None,
    title: str = "",
    slice_index: int | None = None,
    num_classes: int | None = None,
) -> None:
    """Image, image + ground truth, image + prediction into a row of axes (one per panel shown).

    Arrays are (C, *spatial) or (*spatial); 3D volumes show one slice along the last axis
    (`slice_index`, default `pick_slice`). Class k > 0 gets colour k of 'tab10'.
    """
    from matplotlib.colors import ListedColormap

    img, lab, pred, where = _slices(image, label, prediction, spatial_dims, slice_index)
    k = num_classes or int(max([1] + [int(m.max()) + 1 for m in (lab, pred) if m is not None and m.size]))
    cmap = ListedColormap(_pyplot().get_cmap("tab10").colors[: max(k, 2)])
    panels = [("image", None)] + [(n, m) for n, m in (("ground truth", lab), ("prediction", pred)) if m is not None]
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0, 1)
    for ax, (name, mask) in zip(axes, panels):
        ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")  # x right, y up (RAS-like view)
        if mask is not None:
            shown = np.ma.masked_where(mask.T == 0, mask.T)
            ax.imshow(shown, cmap=cmap, vmin=0, vmax=max(k, 2) - 1, alpha=0.45, interpolation="nearest", origin="lower")
        ax.set_title(f"{title}{where}: {name}" if title and name == "image" else name, fontsize=9)
        ax.axis("off")


def overlay_figure(image: Any, label: Any = None, prediction: Any = None, *, title: str = "", **kwargs: Any) -> Any:
    """A matplotlib Figure: one `draw_overlay` row."""
    n = 1 + (label is not None) + (prediction is not None)
    fig, axes = _pyplot().subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    draw_overlay(axes[0], image, label, prediction, title=title, **kwargs)
    fig.tight_layout()
    return fig


def overlay_grid(rows: Sequence[tuple[str, Any, Any, Any]], **kwargs: Any) -> Any:
    """One Figure, one `draw_overlay` row per (title, image, label, prediction)."""
    fig, axes = _pyplot().subplots(len(rows), 3, figsize=(9.6, 3.4 * len(rows)), squeeze=False)
    for ax_row, (title, image, label, prediction) in zip(axes, rows):
        draw_overlay(ax_row, image, label, prediction, title=title, **kwargs)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as PNG atomically and close it."""
    from pipeline.io.atomic import atomic_write

    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        _pyplot().close(fig)
    return Path(path)


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


def uncertainty_figure(
    image: Any, label: Any, prediction: Any, entropy: Any, *, spatial_dims: int, title: str = "", **kwargs: Any
) -> Any:
    """`draw_overlay`'s three panels and a fourth: the image under the normalised entropy map
    (0 transparent-dark to 1 bright, 'magma'), with a colour bar; 3D shows the same slice in all four."""
    plt = _pyplot()
    h = _spatial(_array(entropy).astype(np.float32), spatial_dims)
    z = None
    if spatial_dims == 3:
        z = pick_slice(_spatial(_array(label), 3), _spatial(_array(prediction), 3), h.shape[-1])
        h = h[..., z]
    img, _, _, where = _slices(image, label, prediction, spatial_dims, z)
    fig, axes = plt.subplots(1, 4, figsize=(12.8, 3.6), squeeze=False)
    draw_overlay(axes[0][:3], image, label, prediction, spatial_dims=spatial_dims, slice_index=z, **kwargs)
    fig.suptitle(f"{title}{where}", fontsize=10)
    ax = axes[0][3]
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0, 1)
    ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
    shown = ax.imshow(h.T, cmap="magma", vmin=0.0, vmax=1.0, alpha=0.6, origin="lower", interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title("uncertainty (entropy / log K)", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    return fig


def save_uncertainty(path: str | Path, image: Any, label: Any, prediction: Any, entropy: Any, **kwargs: Any) -> Path:
    """`uncertainty_figure` written to `path` as PNG."""
    return save_figure(uncertainty_figure(image, label, prediction, entropy, **kwargs), path)


def score_scatter_figure(scores: Sequence[float], dice: Sequence[float], threshold: float | None = None) -> Any:
    """The QC score of each case against its Dice, the review threshold as a line, flagged cases in red."""
    plt = _pyplot()
    s, d = np.asarray(scores, dtype=float), np.asarray(dice, dtype=float)
    flagged = s >= threshold if threshold is not None else np.zeros(len(s), dtype=bool)
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    ax.scatter(s[~flagged], d[~flagged], s=18, color="tab:blue", label="accepted")
    if flagged.any():
        ax.scatter(s[flagged], d[flagged], s=22, color="tab:red", marker="s", label="REVIEW")
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("QC score (higher: less sure)")
    ax.set_ylabel("Dice (foreground mean)")
    ax.set_title("QC score against Dice, validation cases", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def save_score_scatter(path: str | Path, scores: Sequence[float], dice: Sequence[float], **kwargs: Any) -> Path:
    return save_figure(score_scatter_figure(scores, dice, **kwargs), path)
