"""Validation during training: whole-image inference on the val split, per-class Dice and IoU.

Uses the same inference path as the evaluate stage and the exported predictor
(`pipeline.inference.predict_probabilities`: overlap-tile in 'valid' mode, sliding window in
'same' mode), so the Dice that picks the best checkpoint is the Dice the evaluate stage reproduces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Config
from pipeline.data.manifest import Manifest
from pipeline.evaluation.metrics import metric_key


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


def validate(
    net: torch.nn.Module,
    manifest: Manifest,
    case_ids: Sequence[str],
    cfg: Config,
    device: torch.device,
    n_examples: int = 3,
) -> ValidationResult:
    """Predict every val case whole, one case in memory at a time, and score it; keeps the first
    `n_examples` for the overlay figure."""
    from pipeline.evaluation.metrics import dice_iou
    from pipeline.inference import InferenceSettings, predict_probabilities

    settings = dataclasses.replace(InferenceSettings.from_config(cfg), tta=False)
    num_classes = len(manifest.labels)
    was_training = net.training
    net.eval()
    dices, ious, examples = [], [], []
    try:
        for cid in case_ids:
            image = np.load(manifest.path(cid, "image")).astype(np.float32, copy=False)
            label = np.load(manifest.path(cid, "label"))
            prob = predict_probabilities(torch.from_numpy(image).to(device), net, settings)
            pred = prob.argmax(0).cpu().numpy()
            d, i = dice_iou(pred, label[0], num_classes)
            dices.append(d)
            ious.append(i)
            if len(examples) < n_examples:
                examples.append((cid, image, label, pred[None]))
    finally:
        net.train(was_training)
    return ValidationResult(dice=np.mean(dices, axis=0).tolist(), iou=np.mean(ious, axis=0).tolist(), examples=examples)


def save_overlays(result: ValidationResult, path: Path, spatial_dims: int, epoch: int) -> Path:
    """One PNG, one row per example case: image / ground truth / prediction."""
    from pipeline.evaluation.figures import overlay_grid, save_figure

    rows = [(f"{cid} (epoch {epoch})", image, label, pred) for cid, image, label, pred in result.examples]
    return save_figure(overlay_grid(rows, spatial_dims=spatial_dims), path, dpi=100)
