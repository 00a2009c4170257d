"""The per-epoch training history as a CSV that `dvc plots show` draws.

Columns: epoch, train_loss, val_dice_mean, val_iou_mean, val_dice_<class>, val_iou_<class>, lr,
epoch_time. Epochs without validation (val_every > 1) leave the val columns empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.evaluation.metrics import metric_key


def history_columns(class_names: Sequence[str]) -> list[str]:
    cols = ["epoch", "train_loss", "val_dice_mean", "val_iou_mean"]
    for name in class_names[1:]:
        cols += [f"val_dice_{metric_key(name)}", f"val_iou_{metric_key(name)}"]
    return cols + ["lr", "epoch_time"]


def write_history(history: Sequence[dict[str, Any]], class_names: Sequence[str], path: Path) -> Path:
    """Write the whole history atomically (it is small; rewriting keeps a resumed run consistent)."""
    from pipeline.io.tables import write_csv

    return write_csv(path, history, history_columns(class_names))
