"""What the evaluate stage puts into the pipeline's MLflow run (the export stage's is in `registry`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.tracking.runs import active_pipeline_run


def log_evaluation(cfg: Any, reports: Path, summary: dict[str, float], figures: list[Path], settings: Any) -> None:
    """Held-out metrics (prefixed `eval_`), the reports, the figures and the inference settings."""
    import mlflow

    with active_pipeline_run(cfg, reports):
        mlflow.log_metrics({f"eval_{k}": v for k, v in summary.items() if math.isfinite(v)})
        mlflow.log_dict(settings.to_dict(), "evaluation/inference_settings.json")
        for name in ("metrics.csv", "metrics.json", "per_case_dice.csv"):
            mlflow.log_artifact(str(reports / name), "evaluation")
        for path in figures:
            mlflow.log_artifact(str(path), "evaluation/figures")
