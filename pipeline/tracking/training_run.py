"""The MLflow side of one training member: open (or resume) its run, log each epoch, close it.

Only the main process (rank 0) of a training holds a `TrainingTracker`; the other ranks log
nothing. The trainer hands over plain values (paths, the history row, the epoch number), so this
module needs nothing from `pipeline.training`. mlflow itself is imported only when a run is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.tracking.context import config_tags
from pipeline.tracking.runs import PipelineRun, write_run_ref

if TYPE_CHECKING:
    from pipeline.config import Config

CONFIG_ARTIFACT = "config/config.yaml"


class TrainingTracker:
    """The MLflow run one training member logs into, from its first epoch to its last.

    Args:
        run: the run, as `open` found or created it.
    """

    def __init__(self, run: PipelineRun) -> None:
        self.run = run

    @property
    def run_id(self) -> str:
        """The MLflow run id, which the checkpoint records so that a resumed training reopens it."""
        return self.run.run_id

    @classmethod
    def open(cls, cfg: Config, reports: Path, resume_run_id: str | None, say: Callable[[str], None]) -> TrainingTracker:
        """Reopen the run a resumed checkpoint names, else create one; tag it, record where it is and log
        the config and the preprocessed dataset's fingerprint, so the run says what was trained on what.

        Args:
            cfg: the training's config (params, tags, experiment, tracking URI).
            reports: the member's folder; `mlflow_run.json` there lets the later stages find the run.
            resume_run_id: the run id of the checkpoint being resumed, or None for a fresh training.
            say: prints a line for the user (whether the run was resumed or had to be replaced).

        Returns:
            The tracker of the open run.
        """
        tags = config_tags(cfg)
        run = None
        if resume_run_id:
            run = PipelineRun.reopen(cfg, resume_run_id)
            if run is None:
                say(f"MLflow run {resume_run_id} not found in the tracking store; logging to a new run")
            else:
                say(f"resuming MLflow run {run.run_id}")
        if run is None:
            run = PipelineRun.create(cfg, tags=tags)
        else:
            run.set_tags(tags)
        write_run_ref(reports, run.ref)
        run.log_params(cfg.flat())
        run.log_dict(cfg.model_dump(mode="json"), CONFIG_ARTIFACT)
        fingerprint = Path(cfg.preprocess.output_dir) / "fingerprint.json"
        if fingerprint.is_file():
            run.log_artifact(fingerprint, "preprocess")
        return cls(run)

    def log_epoch(self, epoch: int, row: Mapping[str, float], overlay: Path | None = None) -> None:
        """Log one epoch's history row as metrics at step `epoch`, so MLflow draws the training curves.

        Args:
            epoch: the epoch just finished (the metrics' step).
            row: the epoch's history row; its `epoch` key, if present, is the step, not a metric.
            overlay: the validation overlay figure of this epoch, if one was drawn.
        """
        self.run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        if overlay is not None:
            self.run.log_artifact(overlay, "validation")

    def finish(self, status: str, epochs_done: int, complete: bool, history: Path) -> None:
        """Close the run; a finished one is tagged with how far training got, so an interrupted or
        capped (`--max-epochs`) training is told apart from a complete one.

        Args:
            status: FINISHED, FAILED or KILLED.
            epochs_done: the last epoch trained (tagged when FINISHED).
            complete: whether that is the config's last epoch; then the history CSV is logged too.
            history: the training history CSV.
        """
        if status == "FINISHED":
            self.run.set_tags({"train_epochs_done": str(epochs_done), "train_complete": str(complete).lower()})
            if complete:
                self.run.log_artifact(history, "train")
        self.run.finish(status)
