"""The per-epoch training history as a CSV that `dvc plots show` draws.

Columns: epoch, train_loss, val_dice_mean, val_iou_mean, val_dice_<class>, val_iou_<class>, lr,
epoch_time. Epochs without validation (val_every > 1) leave the val columns empty.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.training.validation import metric_key


def history_columns(class_names: Sequence[str]) -> list[str]:
    cols = ["epoch", "train_loss", "val_dice_mean", "val_iou_mean"]
    for name in class_names[1:]:
        cols += [f"val_dice_{metric_key(name)}", f"val_iou_{metric_key(name)}"]
    return cols + ["lr", "epoch_time"]


def write_history(history: Sequence[dict[str, Any]], class_names: Sequence[str], path: Path) -> Path:
    """Write the whole history atomically (it is small; rewriting keeps a resumed run consistent)."""
    cols = history_columns(class_names)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({c: _fmt(row.get(c)) for c in cols})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(buf.getvalue())
    os.replace(tmp, path)
    return path


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
