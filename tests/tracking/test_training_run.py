"""MLflow tracking of the train stage: a local sqlite store read back with MlflowClient, and a real
`mlflow server` on 127.0.0.1 (the team-server path) read back over its REST API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers.mlflow_server import MlflowServer
from helpers.training import LABELS, make_config, prepare_data

from pipeline.tracking.context import cpu_name

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

EPOCHS = 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _short_config(**extra: Any):
    return make_config(2, "same", train={"epochs": EPOCHS, "iterations_per_epoch": 2, "batch_size": 2}, **extra)


def _epoch_metrics() -> list[str]:
    keys = ["train_loss", "val_dice_mean", "val_iou_mean", "lr", "epoch_time"]
    for name in LABELS[1:]:
        keys += [f"val_dice_{name}", f"val_iou_{name}"]
    return keys


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracking_data")


def _git_dvc_repo(root: Path) -> tuple[str, str]:
    """Make `root` a git repo whose data/ is DVC-tracked (real `git` and `dvc add`); (commit, data md5)."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (
        ["git", "init", "-q"],
        [dvc, "init", "-q"],
        [dvc, "add", "-q", "data"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "data"],
    ):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, timeout=120)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    md5 = yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    return commit, md5


def test_mlflow_client_reads_the_training_run(
    tmp_path: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from pipeline.stages.train import run
    from pipeline.tracking import read_run_ref

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    prepare_data(tmp_path, data_cache, dims=2)
    commit, md5 = _git_dvc_repo(tmp_path)
    cfg = _short_config()
    run(cfg)

    ref = read_run_ref(tmp_path / cfg.train.member_dir(0))
    assert ref is not None and ref.tracking_uri == uri
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [ref.run_id]
    r = runs[0]
    assert r.info.status == "FINISHED"

    # per-epoch metrics: one value per epoch, steps 1..EPOCHS
    for key in _epoch_metrics():
        hist = client.get_metric_history(ref.run_id, key)
        assert sorted(m.step for m in hist) == list(range(1, EPOCHS + 1)), key
    dice = {m.step: m.value for m in client.get_metric_history(ref.run_id, "val_dice_mean")}
    assert all(0.0 <= v <= 1.0 for v in dice.values())
    assert client.get_metric_history(ref.run_id, "lr")[0].value == pytest.approx(cfg.train.lr)

    # flattened params, all of them
    params = r.data.params
    assert params["train.epochs"] == str(EPOCHS) and params["model.padding"] == "same"
    assert json.loads(params["model.features"]) == cfg.model.features
    assert set(cfg.flat()) <= set(params)

    # tags: git commit, DVC data hash, config name, the machine and library versions
    tags = r.data.tags
    assert tags["git_commit"] == commit
    assert tags["dvc_data_md5"] == md5
    assert tags["config_name"] == cfg.name
    assert tags["host_cpu"] == cpu_name() and tags["host_cpu"]
    assert tags["torch_version"] == metadata.version("torch") == torch.__version__
    assert tags["monai_version"] == metadata.version("monai")
    assert tags["train_complete"] == "true"

    # artifacts: the resolved config and the validation overlay PNG
    paths = {a.path for top in client.list_artifacts(ref.run_id) for a in client.list_artifacts(ref.run_id, top.path)}
    assert {"config/config.yaml", "validation/val_overlays.png", "train/train_history.csv"} <= paths, paths
    local = Path(client.download_artifacts(ref.run_id, "config/config.yaml", str(tmp_path / "dl")))
    assert yaml.safe_load(local.read_text()) == cfg.model_dump(mode="json")
    png = Path(client.download_artifacts(ref.run_id, "validation/val_overlays.png", str(tmp_path / "dl")))
    assert png.read_bytes()[:8] == PNG_MAGIC


# -- the team-server path -----------------------------------------------------------------------


def _get(base: str, route: str, **query: str) -> Any:
    url = f"{base}{route}?{urllib.parse.urlencode(query)}" if query else f"{base}{route}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = resp.read()
    return json.loads(body) if resp.headers.get_content_type() == "application/json" else body


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` (1 worker, sqlite backend, proxied artifacts) on a free local port."""
    server = MlflowServer(tmp_path / "server").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_team_server_over_rest(
    tmp_path: Path, data_cache: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.stages.train import run
    from pipeline.tracking import read_run_ref

    base = mlflow_server.uri
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
    prepare_data(work, data_cache, dims=2)
    cfg = _short_config()
    run(cfg)

    ref = read_run_ref(work / cfg.train.member_dir(0))
    assert ref is not None and ref.tracking_uri == base
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists()  # nothing went to a local store

    got = _get(base, "/api/2.0/mlflow/runs/get", run_id=ref.run_id)["run"]
    assert got["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in got["data"]["params"]}
    tags = {t["key"]: t["value"] for t in got["data"]["tags"]}
    assert params["train.epochs"] == str(EPOCHS) and tags["config_name"] == cfg.name
    assert {m["key"] for m in got["data"]["metrics"]} >= set(_epoch_metrics())
    hist = _get(base, "/api/2.0/mlflow/metrics/get-history", run_id=ref.run_id, metric_key="train_loss")
    assert sorted(int(m["step"]) for m in hist["metrics"]) == list(range(1, EPOCHS + 1))

    found = _get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=cfg.tracking.experiment)
    exp_id = found["experiment"]["experiment_id"]
    assert found["experiment"]["artifact_location"].startswith("mlflow-artifacts:")
    req = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [exp_id]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        listed = json.loads(resp.read())["runs"]
    assert [x["info"]["run_id"] for x in listed] == [ref.run_id]

    # the overlay went over HTTP into the server's artifact store, and comes back the same way
    png = _get(base, "/get-artifact", path="validation/val_overlays.png", run_uuid=ref.run_id)
    assert png[:8] == PNG_MAGIC
    stored = list(mlflow_server.artifacts.rglob("val_overlays.png"))
    assert len(stored) == 1 and stored[0].read_bytes() == png
