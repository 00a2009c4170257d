"""Validation during training: whole-image inference on the val split, per-class Dice and IoU.

Uses the same inference path as the evaluate stage and the exported predictor
(`pipeline.inference.predict_probabilities`: overlap-tile in 'valid' mode, sliding window in
'same' mode), so the Dice that picks the best checkpoint is the Dice the evaluate stage reproduces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import Config


def metric_key(name: str) -> str:
    """A class name as an MLflow/CSV-safe key part."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


@dataclass
class ValidationResult:
    dice: list[float]  # per class, mean over cases (background included at index 0)
    iou: list[float]
    examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def dice_mean(self) -> float:
        """Mean foreground Dice: what selects the best checkpoint."""
        return float(np.mean(self.dice[1:]))

    @property
    def iou_mean(self) -> float:
        return float(np.mean(self.iou[1:]))

    def metrics(self, class_names: Sequence[str]) -> dict[str, float]:
        out = {"val_dice_mean": self.dice_mean, "val_iou_mean": self.iou_mean}
        for k, name in enumerate(class_names):
            if k == 0:
                continue
            out[f"val_dice_{metric_key(name)}"] = self.dice[k]
            out[f"val_iou_{metric_key(name)}"] = self.iou[k]
        return out


def dice_iou(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> tuple[list[float], list[float]]:
    """Per-class Dice and IoU of two index maps (*spatial); a class absent from both scores 1."""
    from monai.metrics import compute_dice, compute_iou
    from monai.networks.utils import one_hot

    p = one_hot(pred.long()[None, None], num_classes, dim=1)
    y = one_hot(label.long()[None, None], num_classes, dim=1)
    dice = compute_dice(p, y, include_background=True, ignore_empty=False)[0]
    iou = compute_iou(p, y, include_background=True, ignore_empty=False)[0]
    return [float(v) for v in dice], [float(v) for v in iou]


def validate(
    net: torch.nn.Module,
    cases: list[dict[str, Any]],
    cfg: Config,
    num_classes: int,
    device: torch.device,
    n_examples: int = 3,
) -> ValidationResult:
    """Predict every val case whole and score it; keeps the first `n_examples` for overlay figures."""
    from pipeline.inference import InferenceSettings, predict_probabilities
    from pipeline.training.data import load_case_arrays

    s = InferenceSettings.from_config(cfg)
    was_training = net.training
    net.eval()
    dices, ious, examples = [], [], []
    try:
        for case in cases:
            image, label = load_case_arrays(case)
            x = torch.from_numpy(image).to(device)
            prob = predict_probabilities(
                x,
                net,
                padding=s.padding,
                depth=s.depth,
                tile_size=s.tile_size,
                overlap=s.overlap,
                blend=s.blend,
                batch_size=s.batch_size,
                tta=False,
            )
            pred = prob.argmax(0).cpu()
            d, i = dice_iou(pred, torch.from_numpy(label[0].astype(np.int64)), num_classes)
            dices.append(d)
            ious.append(i)
            if len(examples) < n_examples:
                examples.append((case["id"], image, label, pred.numpy()[None]))
    finally:
        net.train(was_training)
    return ValidationResult(dice=np.mean(dices, axis=0).tolist(), iou=np.mean(ious, axis=0).tolist(), examples=examples)


def save_overlays(result: ValidationResult, path: Path, spatial_dims: int, num_classes: int, epoch: int) -> Path:
    """One PNG, one row per example case: image / ground truth / prediction."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from pipeline.evaluation.figures import overlay_figure, save_figure

    rows = []
    for cid, image, label, pred in result.examples:
        fig = overlay_figure(
            image, label, pred, spatial_dims=spatial_dims, num_classes=num_classes, title=f"{cid} (epoch {epoch})"
        )
        fig.canvas.draw()
        rows.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        plt.close(fig)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    stacked = np.concatenate(rows, axis=0)
    fig = plt.figure(figsize=(stacked.shape[1] / 100, stacked.shape[0] / 100), dpi=100)
    fig.figimage(stacked)
    return save_figure(fig, path, dpi=100)
