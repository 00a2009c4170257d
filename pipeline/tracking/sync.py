"""Runs logged to the local store while the tracking server was away, uploaded once it is back.

MLflow cannot create a run with a chosen id, so an uploaded run gets a new id on the server; the two
are linked by tags (`unet_pipeline.offline_run_id` on the server's run, `unet_pipeline.uploaded_as`
on the local one, which also keeps the local run from being uploaded twice), and the pipeline's
`mlflow_run.json` files that named the local run are pointed at the server's. Calls a server-logged
run could not deliver before it ended are kept in the local store as a run tagged
`unet_pipeline.pending_for`; the upload appends them to that server run instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipeline.tracking.availability import offline_uri
from pipeline.tracking.outbox import PENDING_FOR_TAG

OFFLINE_RUN_TAG = "unet_pipeline.offline_run_id"
UPLOADED_TAG = "unet_pipeline.uploaded_as"
_BATCH = 1000  # MLflow's limit of metrics per log_batch


def _copy_run(src: Any, dst: Any, run: Any, target_id: str, fresh: bool) -> None:
    """Params (when `fresh`), every metric's whole history, tags, artifacts and status of `run`."""
    from mlflow.entities import Param, RunTag

    run_id = run.info.run_id
    if fresh:
        params = [Param(k, v) for k, v in run.data.params.items()]
        for i in range(0, len(params), 100):
            dst.log_batch(target_id, params=params[i : i + 100])
    history = [m for key in run.data.metrics for m in src.get_metric_history(run_id, key)]
    for i in range(0, len(history), _BATCH):
        dst.log_batch(target_id, metrics=history[i : i + _BATCH])
    tags = [RunTag(k, v) for k, v in run.data.tags.items() if not k.startswith(("mlflow.", "unet_pipeline.pending"))]
    dst.log_batch(target_id, tags=[*tags, RunTag(OFFLINE_RUN_TAG, run_id)])
    with tempfile.TemporaryDirectory() as tmp:
        if src.list_artifacts(run_id):
            dst.log_artifacts(target_id, src.download_artifacts(run_id, "", tmp))
    if run.info.status != "RUNNING" and fresh:
        dst.set_terminated(target_id, run.info.status, run.info.end_time)


def sync_offline(target: str, source: str | None = None, say: Callable[[str], None] = print) -> dict[str, str]:
    """Upload every not-yet-uploaded run of the local store `source` into the server `target`.

    Args:
        target: the tracking server's URI.
        source: the local store (default: `mlflow-offline.db` in the working directory).
        say: one line per uploaded run.

    Returns:
        {local run id: server run id}.
    """
    from mlflow.tracking import MlflowClient

    src, dst = MlflowClient(tracking_uri=source or offline_uri()), MlflowClient(tracking_uri=target)
    done: dict[str, str] = {}
    for exp in src.search_experiments():
        for run in src.search_runs([exp.experiment_id], max_results=50000, order_by=["attributes.start_time ASC"]):
            if UPLOADED_TAG in run.data.tags:
                continue
            pending_for = run.data.tags.get(PENDING_FOR_TAG)
            if pending_for:
                target_id = pending_for
            else:
                found = dst.get_experiment_by_name(exp.name)
                exp_id = found.experiment_id if found is not None else dst.create_experiment(exp.name)
                name = run.data.tags.get("mlflow.runName")
                target_id = dst.create_run(exp_id, start_time=run.info.start_time, run_name=name).info.run_id
            _copy_run(src, dst, run, target_id, fresh=not pending_for)
            src.set_tag(run.info.run_id, UPLOADED_TAG, target_id)
            done[run.info.run_id] = target_id
            what = "the pending calls of" if pending_for else "run"
            say(f"uploaded {what} {run.info.run_id} -> {target} run {target_id}")
    return done


def repoint_run_refs(folders: Iterable[Path], uploaded: dict[str, str], target: str) -> list[Path]:
    """Point the `mlflow_run.json` files in `folders` that name an uploaded local run at its server run,
    so the later stages log to the server.

    Returns:
        The files rewritten.
    """
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.runs import RUN_FILE, RunRef, read_run_ref, write_run_ref

    client = MlflowClient(tracking_uri=target)
    changed = []
    for folder in folders:
        ref = read_run_ref(folder)
        if ref is not None and ref.run_id in uploaded:
            server_id = uploaded[ref.run_id]
            exp_id = client.get_run(server_id).info.experiment_id
            write_run_ref(folder, RunRef(server_id, exp_id, ref.experiment, target))
            changed.append(Path(folder) / RUN_FILE)
    return changed
