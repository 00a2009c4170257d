"""MLflow tracking for the whole pipeline: one run shared by train -> evaluate -> export.

The train stage creates the run and records its id in `reports/mlflow_run.json`; the later stages
reopen it (`active_pipeline_run`) so one run holds the params, curves, metrics, figures and models
of one pipeline execution. mlflow itself is imported only when a run is touched.
"""

from pipeline.tracking.context import config_tags, dvc_data_hash, git_commit
from pipeline.tracking.runs import (
    RUN_FILE,
    PipelineRun,
    RunRef,
    active_pipeline_run,
    read_run_ref,
    write_run_ref,
)
from pipeline.tracking.uri import resolve_tracking_uri

__all__ = [
    "RUN_FILE",
    "PipelineRun",
    "RunRef",
    "active_pipeline_run",
    "config_tags",
    "dvc_data_hash",
    "git_commit",
    "read_run_ref",
    "resolve_tracking_uri",
    "write_run_ref",
]
