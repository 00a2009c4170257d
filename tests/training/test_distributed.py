"""The train entry point under `torchrun --nproc_per_node 2` (DDP, gloo on CPU): both ranks finish,
rank 0 alone writes the checkpoint and creates the one MLflow run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.ports import free_port
from helpers.training import make_config, prepare_data

pytestmark = pytest.mark.slow  # real subprocess runs: make test-fast skips this module

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def test_torchrun_two_processes_one_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, repo_root: Path
) -> None:
    from mlflow.tracking import MlflowClient

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.is_file():
        pytest.skip(f"{torchrun} not found")
    prepare_data(tmp_path, tmp_path_factory.mktemp("ddp_data"), dims=2)
    cfg = make_config(2, "same", train={"epochs": 2, "iterations_per_epoch": 2, "batch_size": 2})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    cmd = [
        str(torchrun),
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "-m",
        "pipeline",
        "train",
        "-c",
        "cfg.yaml",
        "-S",
        "train.iterations_per_epoch=3",
        "--max-epochs",
        "1",
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # both ranks got through; rank 0 alone reported the epoch
    assert "rank 0/2: finished at epoch 1" in out and "rank 1/2: finished at epoch 1" in out, out[-4000:]
    assert "2 process(es) on cpu" in out
    assert out.count("epoch 1/2  loss") == 1, out[-4000:]

    # rank 0's checkpoint: one epoch of 3 iterations per rank, resumable (epoch 1 of 2)
    state = torch.load(tmp_path / "checkpoints" / "fold_0" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert state["scheduler"]["last_epoch"] == 3
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "checkpoints").iterdir())
    # DDP kept the replicas identical: the saved weights carry no `module.` prefix (the bare net)
    assert not any(k.startswith("module.") for k in state["model"])

    client = MlflowClient(tracking_uri=uri)
    exps = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in exps])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.run_id == state["mlflow_run_id"]
    assert run.data.params["train.iterations_per_epoch"] == "3"  # the -S override reached the run
    assert run.data.tags["train_complete"] == "false"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]


def _checkpoint_digest(path: Path) -> str:
    from pipeline.io.digests import weights_digest
    from pipeline.model import UNet

    state = torch.load(path, weights_only=True)
    net = UNet(**state["model_args"])
    net.load_state_dict(state["model"])
    return weights_digest(net.named_parameters())


def test_torchrun_two_nodes_c10d_identical_weights(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, repo_root: Path
) -> None:
    """Two separate `torchrun --nnodes 2 --nproc_per_node 1` node agents meet through a c10d
    rendezvous on localhost (gloo); after a few iterations both ranks hold the weights that rank 0
    saved, bit for bit."""
    import re

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.is_file():
        pytest.skip(f"{torchrun} not found")
    prepare_data(tmp_path, tmp_path_factory.mktemp("ddp2_data"), dims=2)
    cfg = make_config(2, "valid", train={"epochs": 1, "iterations_per_epoch": 3, "batch_size": 2})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    port = free_port()
    node = [
        str(torchrun),
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{port}",
        "--rdzv_id",
        "two-node-test",
        "--local_addr",
        "127.0.0.1",
        "-m",
        "pipeline",
        "train",
        "-c",
        "cfg.yaml",
    ]
    procs = [
        subprocess.Popen(
            node,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert [p.returncode for p in procs] == [0, 0], "\n=====\n".join(o[-3000:] for o in outs)
    text = "\n".join(outs)
    digests = dict(re.findall(r"rank (\d)/2: finished at epoch 1, weights sha256 ([0-9a-f]{64})", text))
    assert set(digests) == {"0", "1"}, text[-4000:]
    assert digests["0"] == digests["1"], "the two nodes ended with different weights"
    assert digests["0"] == _checkpoint_digest(tmp_path / "checkpoints" / "fold_0" / "last.pt")
    assert "2 process(es) on cpu" in text
