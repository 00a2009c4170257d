"""A tracking server that is down, or goes away mid-run (pipeline.tracking.availability / outbox /
sync): said within seconds, training goes on, nothing is lost. Real `mlflow server` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.mlflow_server import MlflowServer, free_port
from helpers.training import make_config, prepare_data


def _workdir(tmp_path: Path, epochs: int) -> Path:
    from pipeline.config import complete_yaml

    prepare_data(tmp_path, tmp_path.parent / "cache", dims=2, cases=6)
    cfg = make_config(2, train={"epochs": epochs, "iterations_per_epoch": 2}, model={"features": [4, 8]})
    (tmp_path / "cfg.yaml").write_text(complete_yaml(cfg))
    return tmp_path / "cfg.yaml"


def _cli(cwd: Path, uri: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "pipeline", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_closed_port_is_one_line_and_exit_2_under_fail(tmp_path: Path) -> None:
    """The 8.5 silent minutes of MLflow's retries are gone: the probe answers before any data is read
    (there is none here), and the subprocess timeout would catch a hang."""
    from pipeline.config import complete_yaml

    (tmp_path / "cfg.yaml").write_text(complete_yaml(make_config(2, tracking={"on_unavailable": "fail"})))
    uri = f"http://127.0.0.1:{free_port()}"
    proc = _cli(tmp_path, uri, "train", "-c", "cfg.yaml", timeout=30)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: MLflow tracking server " + uri), lines
    assert "on_unavailable: local" in lines[0]


@pytest.mark.slow
def test_local_fallback_trains_then_sync_uploads_every_epoch(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.sync import OFFLINE_RUN_TAG, UPLOADED_TAG

    _workdir(tmp_path, epochs=2)
    down = f"http://127.0.0.1:{free_port()}"
    proc = _cli(tmp_path, down, "train", "-c", "cfg.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"MLflow tracking server {down} is not reachable" in proc.stderr
    offline = f"sqlite:///{tmp_path / 'mlflow-offline.db'}"
    local = MlflowClient(offline)
    (local_run,) = local.search_runs([e.experiment_id for e in local.search_experiments()])
    assert [m.step for m in local.get_metric_history(local_run.info.run_id, "train_loss")] == [1, 2]

    server = MlflowServer(tmp_path / "server").start()
    try:
        proc = _cli(tmp_path, server.uri, "tracking", "sync", "-c", "cfg.yaml")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "1 run(s) uploaded" in proc.stdout
        client = MlflowClient(server.uri)
        (up,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
        assert up.data.tags[OFFLINE_RUN_TAG] == local_run.info.run_id
        assert [m.step for m in client.get_metric_history(up.info.run_id, "train_loss")] == [1, 2]
        assert up.data.params == local_run.data.params and up.info.status == "FINISHED"
        assert client.list_artifacts(up.info.run_id), "the config and history artifacts came along"
        assert local.get_run(local_run.info.run_id).data.tags[UPLOADED_TAG] == up.info.run_id
        assert up.info.run_id in (tmp_path / "checkpoints/fold_0/mlflow_run.json").read_text()
        again = _cli(tmp_path, server.uri, "tracking", "sync", "-c", "cfg.yaml")
        assert "0 run(s) uploaded" in again.stdout, "nothing is uploaded twice"
    finally:
        server.stop()


@pytest.mark.slow
def test_server_killed_after_epoch_1_and_back_after_epoch_3_gets_every_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    from pipeline.config import load_config
    from pipeline.stages import train
    from pipeline.tracking import availability
    from pipeline.tracking.training_run import TrainingTracker

    cfg_path = _workdir(tmp_path, epochs=5)
    server = MlflowServer(tmp_path / "server").start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    for key, value in availability.HTTP_RETRY_DEFAULTS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(availability, "_DECIDED", {})
    log_epoch = TrainingTracker.log_epoch

    def outage(self: TrainingTracker, epoch: int, row: dict, overlay: Path | None = None) -> None:
        log_epoch(self, epoch, row, overlay)
        if epoch == 1:
            server.stop()
        elif epoch == 3:
            server.start()

    monkeypatch.setattr(TrainingTracker, "log_epoch", outage)
    try:
        train.run(load_config(cfg_path))
        client = MlflowClient(server.uri)
        (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4, 5]
        assert run.info.status == "FINISHED"
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert "stopped answering" in err and "is back" in err
