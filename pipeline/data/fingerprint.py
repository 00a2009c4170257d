"""The dataset fingerprint: what the data look like, and what preprocessing derives from it.

Sizes and spacings (in the target orientation when one is configured, so the median spacing is
per output axis, as nnU-Net does), intensity statistics per channel over the foreground and over
whole images (from a fixed-seed sample of each case), class voxel fractions and the split sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.data.validation import CaseStats


def axes_in_orientation(affine: np.ndarray, orientation: str | None) -> list[int]:
    """For each axis after `Orientation(orientation)`, the source axis it comes from."""
    affine = np.asarray(affine, float)
    d = affine.shape[0] - 1
    if orientation is None:
        return list(range(d))
    import nibabel.orientations as nio

    src = nio.io_orientation(affine)  # per source axis: (world axis, flip)
    dst = nio.axcodes2ornt(orientation)  # per target axis: (world axis, flip)
    world_to_src = {int(w): i for i, (w, _) in enumerate(src)}
    return [world_to_src[int(w)] for w, _ in dst]


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {k: None for k in ("mean", "std", "min", "max", "median", "p00_5", "p99_5")}
    v = values.astype(np.float64)
    p = np.percentile(v, [0.5, 50.0, 99.5])
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "median": float(p[1]),
        "p00_5": float(p[0]),
        "p99_5": float(p[2]),
    }


def _summary(rows: np.ndarray) -> dict[str, list[float]]:
    return {
        "median": [float(x) for x in np.median(rows, axis=0)],
        "min": [float(x) for x in rows.min(axis=0)],
        "max": [float(x) for x in rows.max(axis=0)],
    }


def compute_fingerprint(
    stats: Sequence[CaseStats],
    *,
    labels: Sequence[str],
    orientation: str | None,
    splits: dict[str, list[str]] | None = None,
    folds: Sequence[Sequence[str]] | None = None,
    modality: str | None = None,
) -> dict[str, Any]:
    """A JSON-able fingerprint (the `fingerprint.json` the preprocess stage writes)."""
    shapes, spacings = [], []
    for s in stats:
        axes = axes_in_orientation(np.asarray(s.affine), orientation)
        shapes.append([s.shape[a] for a in axes])
        spacings.append([s.spacing[a] for a in axes])
    n_channels = stats[0].n_channels
    intensity = []
    for c in range(n_channels):
        fg = np.concatenate([s.fg_samples[c] for s in stats]) if stats else np.zeros(0)
        every = np.concatenate([s.all_samples[c] for s in stats]) if stats else np.zeros(0)
        intensity.append({"channel": c, "foreground": _stats(fg), "image": _stats(every)})
    totals = np.zeros(len(labels), np.int64)
    for s in stats:
        for v, n in s.label_counts.items():
            if 0 <= v < len(labels):
                totals[v] += n
    fractions = totals / max(int(totals.sum()), 1)
    out: dict[str, Any] = {
        "cases": len(stats),
        "modality": modality,
        "spatial_dims": len(stats[0].shape),
        "channels": n_channels,
        "axes": orientation or "source",
        "shape": _summary(np.asarray(shapes, float)),
        "spacing": _summary(np.asarray(spacings, float)),
        "shapes": {s.id: sh for s, sh in zip(stats, shapes)},
        "spacings": {s.id: sp for s, sp in zip(stats, spacings)},
        "intensity": intensity,
        "class_voxel_fraction": {name: float(f) for name, f in zip(labels, fractions)},
        "class_voxels": {name: int(n) for name, n in zip(labels, totals)},
    }
    if splits is not None:
        out["cases_per_split"] = {k: len(v) for k, v in splits.items()}
    if folds is not None:
        out["cases_per_fold"] = [len(f) for f in folds]
    return out
