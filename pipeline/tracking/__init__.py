"""MLflow tracking for the whole pipeline: one run shared by train -> evaluate -> export.

The train stage creates the run and records its id in `checkpoints/fold_0/mlflow_run.json`; the
later stages reopen it (`active_pipeline_run`) so one run holds the params, curves, metrics, figures
and models of one pipeline execution. In a K-fold ensemble each member has its own run (beside its
checkpoints); member 0's is the pipeline's, and it records the others' ids. mlflow itself is
imported only when a run is touched.
"""

from pipeline._lazy import lazy_getattr

_EXPORTS = {
    "PipelineRun": "pipeline.tracking.runs",
    "RUN_FILE": "pipeline.tracking.runs",
    "RunRef": "pipeline.tracking.runs",
    "TrainingTracker": "pipeline.tracking.training_run",
    "active_pipeline_run": "pipeline.tracking.runs",
    "config_tags": "pipeline.tracking.context",
    "dvc_data_hash": "pipeline.tracking.context",
    "git_commit": "pipeline.tracking.context",
    "read_run_ref": "pipeline.tracking.runs",
    "resolve_tracking_uri": "pipeline.tracking.uri",
    "write_run_ref": "pipeline.tracking.runs",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
