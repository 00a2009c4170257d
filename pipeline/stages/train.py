"""DVC stage `train`: preprocessed/ -> checkpoints/fold_<k>/ ({last,best}.pt, train_history.csv,
val_overlays.png, mlflow_run.json) for member k = `train.member` of the ensemble `train.members`.

Run as `unet-pipeline train [--config params.yaml] [-S key=value] [--max-epochs N]`
(or `python -m pipeline train`), or under `torchrun --nproc_per_node N -m pipeline train` for DDP; dvc.yaml runs one
`unet-pipeline train -S train.member=<k>` per member (`foreach`). Re-running the same command after
an interruption resumes from checkpoints/fold_<k>/last.pt.
"""

from __future__ import annotations

from pipeline.config import Config
from pipeline.errors import InputError


def run(cfg: Config, max_epochs: int | None = None) -> None:
    """Train per cfg; `max_epochs` stops early after that epoch (the run stays resumable)."""
    from pipeline.training.trainer import train

    if max_epochs is not None and max_epochs < 1:
        raise InputError(f"--max-epochs must be >= 1, got {max_epochs}")
    train(cfg, max_epochs=max_epochs)
