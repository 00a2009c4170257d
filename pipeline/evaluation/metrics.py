"""Per-case, per-class Dice, IoU and 95% Hausdorff distance (MONAI), and their summaries.

Empty structures (a class absent from the label, the prediction or both) are decided here, once:

- both empty: Dice = IoU = 1 and HD95 = 0 (a correct "nothing here").
- exactly one empty: Dice = IoU = 0; HD95 is undefined and stored as NaN *per case*. In the
  summaries it is replaced by the worst distance possible inside that image, its physical diagonal
  (mm), so a missed or hallucinated structure is penalised rather than silently dropped; the
  number of such cases is reported as `hd95_undefined_<class>`. Summaries therefore never hold NaN.

HD95 is in physical units (mm) through the voxel spacing of the grid the masks live on.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError

METRICS = ("dice", "iou", "hd95")


def _as_labels(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.as_subclass(torch.Tensor))
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise InputError(f"{name} must hold integer class indices, got non-integer values")
    t = t.long()
    if t.dim() >= 3 and t.shape[0] == 1:
        t = t[0]
    return t


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    from monai.networks.utils import one_hot

    return one_hot(labels[None, None], num_classes, dim=1)


def _dice_iou(p1: torch.Tensor, y1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class Dice and IoU of one-hot (1, K, *spatial) masks; a class absent from both scores 1."""
    from monai.metrics import compute_dice, compute_iou

    dice = compute_dice(p1, y1, include_background=True, ignore_empty=False)[0]
    return dice, compute_iou(p1, y1, include_background=True, ignore_empty=False)[0]


def dice_iou(prediction: Any, label: Any, num_classes: int) -> tuple[list[float], list[float]]:
    """Per-class Dice and IoU (classes 0..K-1) of two index maps on one grid: what training
    validation scores, the same numbers `case_metrics` gives."""
    pred, lab = _as_labels(prediction, "prediction").cpu(), _as_labels(label, "label").cpu()
    dice, iou = _dice_iou(_one_hot(pred, num_classes), _one_hot(lab, num_classes))
    return [float(v) for v in dice], [float(v) for v in iou]


def case_metrics(
    prediction: Any,
    label: Any,
    num_classes: int,
    spacing: Sequence[float] | None = None,
) -> list[dict[str, float]]:
    """Dice, IoU, HD95 (mm) per class (0..K-1) for one case.

    `prediction` and `label` hold class indices, shape (*spatial) or (1, *spatial), on the same grid;
    `spacing` is the voxel size per spatial axis (default 1). Returns one dict per class with
    dice, iou, hd95 (NaN when exactly one of the two is empty), pred_voxels, label_voxels and
    diagonal_mm (the image diagonal, used as worst-case HD95 in summaries).
    """
    from monai.metrics import compute_hausdorff_distance

    pred = _as_labels(prediction, "prediction").cpu()
    lab = _as_labels(label, "label").cpu()
    if pred.shape != lab.shape:
        raise InputError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(lab.shape)}")
    for name, t in (("prediction", pred), ("label", lab)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise InputError(f"{name} holds values {sorted(torch.unique(t).tolist())} outside 0..{num_classes - 1}")
    spacing = [1.0] * pred.dim() if spacing is None else [float(s) for s in spacing]
    if len(spacing) != pred.dim():
        raise InputError(f"spacing {spacing} has {len(spacing)} entries for a {pred.dim()}D mask")
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing)))

    p1, y1 = _one_hot(pred, num_classes), _one_hot(lab, num_classes)
    dice, iou = _dice_iou(p1, y1)
    p_vox = p1.sum(dim=tuple(range(2, p1.dim())))[0]
    y_vox = y1.sum(dim=tuple(range(2, y1.dim())))[0]

    rows = []
    for k in range(num_classes):
        np_, ny = int(p_vox[k]), int(y_vox[k])
        if np_ == 0 and ny == 0:
            hd = 0.0
        elif np_ == 0 or ny == 0:
            hd = float("nan")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hd = float(
                    compute_hausdorff_distance(
                        p1[:, k : k + 1], y1[:, k : k + 1], include_background=True, percentile=95, spacing=spacing
                    )[0, 0]
                )
        rows.append(
            {
                "dice": float(dice[k]),
                "iou": float(iou[k]),
                "hd95": hd,
                "pred_voxels": np_,
                "label_voxels": ny,
                "diagonal_mm": diagonal,
            }
        )
    return rows


def metric_records(case_id: str, rows: list[dict[str, float]], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Flat CSV rows (one per class) for one case: case, class, class_index and the metrics."""
    if len(rows) != len(class_names):
        raise InputError(f"{len(rows)} metric rows for {len(class_names)} class names {list(class_names)}")
    return [{"case": case_id, "class": n, "class_index": k, **r} for k, (n, r) in enumerate(zip(class_names, rows))]


def foreground_mean(rows: list[dict[str, float]], metric: str = "dice") -> float:
    """One case's mean over the foreground classes (1..K-1), HD95 capped at the diagonal."""
    values = [_summary_value(r, metric) for r in rows[1:]]
    return float(np.mean(values)) if values else float("nan")


def _summary_value(row: dict[str, Any], metric: str) -> float:
    v = float(row[metric])
    if metric == "hd95" and math.isnan(v):
        return float(row["diagonal_mm"])
    return v


def metric_key(name: str) -> str:
    """A class name as a key part that MLflow, CSV headers and DVC all take (ASCII letters, digits, _.-)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def summarize(records: list[dict[str, Any]], class_names: Sequence[str]) -> dict[str, float]:
    """Flat summary over cases (foreground classes only; background is trivially high).

    Keys: `{dice,iou,hd95}_{mean,median}_{class}` and `..._foreground` (per-case foreground mean,
    then mean/median over cases), `hd95_undefined_{class}` (cases where exactly one mask was
    empty, counted in HD95 at the image diagonal) and `num_cases`. No value is NaN.
    """
    cases: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        cases.setdefault(r["case"], []).append(r)
    for rows in cases.values():
        rows.sort(key=lambda r: r["class_index"])
    out: dict[str, float] = {"num_cases": float(len(cases))}
    if not cases:
        return out
    fg = list(range(1, len(class_names)))
    for metric in METRICS:
        for k in fg:
            vals = [_summary_value(rows[k], metric) for rows in cases.values()]
            out[f"{metric}_mean_{metric_key(class_names[k])}"] = float(np.mean(vals))
            out[f"{metric}_median_{metric_key(class_names[k])}"] = float(np.median(vals))
        if fg:
            per_case = [foreground_mean(rows, metric) for rows in cases.values()]
            out[f"{metric}_mean_foreground"] = float(np.mean(per_case))
            out[f"{metric}_median_foreground"] = float(np.median(per_case))
    for k in fg:
        out[f"hd95_undefined_{metric_key(class_names[k])}"] = float(
            sum(math.isnan(float(rows[k]["hd95"])) for rows in cases.values())
        )
    return out
