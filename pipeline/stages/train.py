"""DVC stage `train`: preprocessed/ -> checkpoints/fold_<k>/ ({last,best}.pt, train_history.csv,
val_overlays.png, mlflow_run.json) for member k = `train.member` of the ensemble `train.members`.

Run as `python -m pipeline.stages.train [--config params.yaml] [-S key=value] [--max-epochs N]`
(or `unet-pipeline train`), or under `torchrun --nproc_per_node N` for DDP; dvc.yaml runs one
`unet-pipeline train -S train.member=<k>` per member (`foreach`). Re-running the same command after
an interruption resumes from checkpoints/fold_<k>/last.pt.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.config import Config
from pipeline.errors import InputError


def run(cfg: Config, max_epochs: int | None = None) -> None:
    """Train per cfg; `max_epochs` stops early after that epoch (the run stays resumable)."""
    from pipeline.training.trainer import train

    if max_epochs is not None and max_epochs < 1:
        raise InputError(f"--max-epochs must be >= 1, got {max_epochs}")
    train(cfg, max_epochs=max_epochs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="stop after this epoch (resumable; LR schedule unchanged)"
    )


def run_from_args(cfg: Config, args: argparse.Namespace) -> None:
    run(cfg, max_epochs=args.max_epochs)


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
