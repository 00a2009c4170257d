"""What the evaluate stage puts into the pipeline's MLflow run (the export stage's is in `registry`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.tracking.runs import active_pipeline_run, read_run_ref

if TYPE_CHECKING:
    from pipeline.config import Config


def member_runs(cfg: Config) -> str:
    """The training runs of the ensemble's members, in member order (comma-separated run ids)."""
    refs = [read_run_ref(cfg.train.member_dir(k)) for k in cfg.train.members]
    return ",".join(ref.run_id if ref else "?" for ref in refs)


def log_evaluation(
    cfg: Config, reports: Path, summary: dict[str, float], figures: list[Path], settings: dict[str, Any]
) -> None:
    """Held-out metrics (prefixed `eval_`), the reports, the figures and the inference settings (as a dict)."""
    import mlflow

    with active_pipeline_run(cfg):
        if len(cfg.train.members) > 1:  # the ensemble's members, each with its own training run
            mlflow.set_tags(
                {
                    "ensemble_members": str(len(cfg.train.members)),
                    "ensemble": cfg.train.ensemble,
                    "ensemble_member_runs": member_runs(cfg),
                }
            )
        mlflow.log_metrics({f"eval_{k}": v for k, v in summary.items() if math.isfinite(v)})
        mlflow.log_dict(settings, "evaluation/inference_settings.json")
        for name in ("metrics.csv", "metrics.json", "per_case_dice.csv"):
            mlflow.log_artifact(str(reports / name), "evaluation")
        for path in figures:
            mlflow.log_artifact(str(path), "evaluation/figures")
