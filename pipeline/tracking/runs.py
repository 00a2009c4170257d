"""The pipeline's one MLflow run: created by train, reopened by evaluate and export.

`PipelineRun` talks to MLflow through an `MlflowClient` bound to an explicit tracking URI and run
id -- no global "active run" -- so a resumed training, a DDP rank and a test process each log
exactly where they mean to. `active_pipeline_run` is the fluent-API door for later stages that
need `mlflow.start_run` (e.g. `mlflow.onnx.log_model`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError, MissingInputError
from pipeline.tracking.availability import tracking_uri_for
from pipeline.tracking.outbox import Outbox, keep_locally

if TYPE_CHECKING:
    from pipeline.config import Config

RUN_FILE = "mlflow_run.json"
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


@dataclass(frozen=True)
class RunRef:
    """What `checkpoints/fold_<k>/mlflow_run.json` holds."""

    run_id: str
    experiment_id: str
    experiment: str
    tracking_uri: str


def write_run_ref(run_dir: Path, ref: RunRef) -> Path:
    from pipeline.io.atomic import write_text_atomic

    path = Path(run_dir) / RUN_FILE
    write_text_atomic(path, json.dumps(asdict(ref), indent=2) + "\n")
    return path


def read_run_ref(run_dir: Path) -> RunRef | None:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return RunRef(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"{path} is not a valid MLflow run reference: {exc}") from None


def _param_str(value: Any) -> str:
    s = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return s if len(s) <= _MAX_PARAM_LEN else s[: _MAX_PARAM_LEN - 3] + "..."


class PipelineRun:
    """One MLflow run, addressed by id through a client bound to one tracking URI."""

    def __init__(self, tracking_uri: str, run_id: str, experiment_id: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.outbox = Outbox(tracking_uri, f"run {run_id}")  # calls kept while a server is away

    @property
    def ref(self) -> RunRef:
        return RunRef(self.run_id, self.experiment_id, self.experiment, self.tracking_uri)

    @classmethod
    def create(cls, cfg: Config, run_name: str | None = None, tags: Mapping[str, str] | None = None) -> PipelineRun:
        """A new run in cfg.tracking.experiment (created if missing)."""
        from mlflow.tracking import MlflowClient

        uri = tracking_uri_for(cfg)
        client = MlflowClient(tracking_uri=uri)
        name = cfg.tracking.experiment
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
        run = client.create_run(exp_id, run_name=run_name or cfg.name, tags=dict(tags or {}))
        return cls(uri, run.info.run_id, exp_id, name)

    @classmethod
    def reopen(cls, cfg: Config, run_id: str) -> PipelineRun | None:
        """The existing run `run_id` in the current store, marked running again; None if it is not there."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = tracking_uri_for(cfg)
        client = MlflowClient(tracking_uri=uri)
        try:
            run = client.get_run(run_id)
        except MlflowException:
            return None
        client.update_run(run_id, status="RUNNING")
        exp = client.get_experiment(run.info.experiment_id)
        return cls(uri, run_id, run.info.experiment_id, exp.name)

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params; keys already logged with another value are kept and reported, not overwritten
        (MLflow forbids changing a param, and a resumed run may see e.g. a new num_workers)."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new, changed = [], []
        for k, v in params.items():
            s = _param_str(v)
            if k not in existing:
                new.append(Param(k, s))
            elif existing[k] != s:
                changed.append(f"{k}: {existing[k]!r} -> {s!r}")
        if new:
            self.client.log_batch(self.run_id, params=new)
        if changed:
            warnings.warn(
                f"MLflow run {self.run_id} keeps its original params; now different: {'; '.join(changed)}", stacklevel=2
            )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            batch = [RunTag(k, str(v)) for k, v in tags.items()]
            self.outbox.call("tags", self.client.log_batch, self.run_id, [], [], batch)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import math
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        if batch:
            self.outbox.call(f"step {step}", self.client.log_batch, self.run_id, batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.outbox.call(f"artifact {Path(path).name}", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.outbox.call(f"artifact {artifact_file}", self.client.log_dict, self.run_id, obj, artifact_file)

    def finish(self, status: str = "FINISHED") -> None:
        """FINISHED, FAILED or KILLED; calls still kept for an absent server go to the local store."""
        self.outbox.call("the end of the run", self.client.set_terminated, self.run_id, status)
        left = self.outbox.flush()
        if left:
            keep_locally(self.tracking_uri, self.run_id, self.experiment, left)


@contextmanager
def active_pipeline_run(cfg: Config, run_dir: Path | None = None, create_missing: bool = True) -> Iterator[Any]:
    """`mlflow.start_run(run_id=...)` on the pipeline's run, for the evaluate and export stages.

    Reads `<run_dir>/mlflow_run.json` (default: member 0's, `checkpoints/fold_0/`, written by
    train). Without it (a stage run on its own), a new run is created and recorded there when
    `create_missing`, else MissingInputError. The previous global tracking URI is restored on exit,
    and the run is ended (FINISHED, or FAILED on error).
    """
    import mlflow

    run_dir = Path(run_dir) if run_dir is not None else cfg.train.member_dir(0)
    ref = read_run_ref(run_dir)
    uri = tracking_uri_for(cfg)
    run = PipelineRun.reopen(cfg, ref.run_id) if ref is not None else None
    if run is None:
        where = run_dir / RUN_FILE
        if not create_missing:
            raise MissingInputError(
                f"{where}: no MLflow run of this pipeline found in {uri}; run the train stage first"
            )
        if ref is not None:
            warnings.warn(
                f"{where} names run {ref.run_id}, which {uri} does not hold; starting a new run", stacklevel=2
            )
        from pipeline.tracking.context import config_tags

        run = PipelineRun.create(cfg, tags=config_tags(cfg))
        run.log_params(cfg.flat())
        write_run_ref(run_dir, run.ref)

    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run.run_id) as active:
            yield active
    finally:
        mlflow.set_tracking_uri(old_env)
        if old_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
