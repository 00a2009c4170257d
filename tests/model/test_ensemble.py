"""Ensembles (`train.members`): the averaged network (pipeline.model.ensemble), the members'
config, and the stages, for K-fold members and for a seed ensemble (`train.ensemble: seeds`).

Two members trained by the real train stage on the embedded synthetic data; evaluate scores their
average and export saves it as one TorchScript / ONNX model that ONNX Runtime runs to the same
output; each member has its own MLflow run, member 0's holds the evaluation and names the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.training import make_config, prepare_data

from pipeline.config import ConfigError
from pipeline.model import UNet
from pipeline.model.ensemble import FoldEnsemble

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _nets(n: int) -> list[UNet]:
    torch.manual_seed(0)
    return [
        UNet(spatial_dims=2, in_channels=1, out_channels=3, features=(4, 8), padding="same").eval() for _ in range(n)
    ]


def test_fold_ensemble_averages_probabilities() -> None:
    """softmax(ensemble(x)) == the mean of the members' softmax, in eager mode and in TorchScript."""
    nets, x = _nets(3), torch.randn(2, 1, 16, 16)
    ens = FoldEnsemble(nets).eval()
    with torch.no_grad():
        want = torch.stack([torch.softmax(n(x), 1) for n in nets]).mean(0)
        torch.testing.assert_close(torch.softmax(ens(x), 1), want, atol=1e-6, rtol=1e-5)
        assert torch.equal(ens(x).argmax(1), want.argmax(1))
        scripted = torch.jit.script(ens)
        torch.testing.assert_close(scripted(x), ens(x))
    with pytest.raises(ValueError, match="at least 2"):
        FoldEnsemble(nets[:1])


def test_members_must_be_0_to_k_minus_1() -> None:
    with pytest.raises(ConfigError, match=r"\[0, 1, ..., K-1\]"):
        make_config(2, "same", train={"members": [0, 2]})
    with pytest.raises(ConfigError, match="train.member=2 is not one of"):
        make_config(2, "same", train={"members": [0, 1], "member": 2})
    with pytest.raises(ConfigError, match="train.ensemble"):
        make_config(2, "same", train={"members": [0, 1], "ensemble": "bagging"})


def test_two_members_train_evaluate_and_export_as_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort
    from mlflow.tracking import MlflowClient

    from pipeline.stages import evaluate, export, train
    from pipeline.tracking import read_run_ref
    from pipeline.training.checkpoint import load_trained_net

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    prepare_data(tmp_path, tmp_path / "cache", dims=2)
    base = {"epochs": 1, "iterations_per_epoch": 3, "members": [0, 1]}
    for k in (0, 1):  # what dvc.yaml's foreach runs: unet-pipeline train -S train.member=<k>
        train.run(make_config(2, "same", train={**base, "member": k}))
    cfg = make_config(2, "same", train=base)
    members = [load_trained_net(cfg.train.member_dir(k) / "best.pt")[0] for k in (0, 1)]
    first = [next(iter(m.parameters())) for m in members]
    assert not torch.equal(*first)  # each member trained on its own cases
    refs = [read_run_ref(cfg.train.member_dir(k)) for k in (0, 1)]
    assert refs[0].run_id != refs[1].run_id

    evaluate.run(cfg, device="cpu")
    summary = json.loads((Path(cfg.evaluate.reports_dir) / "metrics.json").read_text())
    assert 0.0 <= summary["dice_mean_foreground"] <= 1.0
    run = MlflowClient(tracking_uri=uri).get_run(refs[0].run_id)
    assert run.data.tags["ensemble_members"] == "2" and run.data.tags["ensemble"] == "folds"
    assert run.data.tags["ensemble_member_runs"] == f"{refs[0].run_id},{refs[1].run_id}"
    assert run.data.metrics["eval_dice_mean_foreground"] == pytest.approx(summary["dice_mean_foreground"])

    export.run(cfg, log_mlflow=False)
    out = Path(cfg.export.output_dir)
    up = json.loads((out / "configs/metadata.json").read_text())["unet_pipeline"]
    assert up["provenance"]["ensemble_members"] == 2 and up["provenance"]["ensemble"] == "folds"
    assert up["provenance"]["checkpoints"] == [str(cfg.train.member_dir(k) / "best.pt") for k in (0, 1)]
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        want = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0).numpy()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(got), 1).numpy(), want, atol=1e-5)


def test_a_seed_ensemble_member_is_the_single_model_with_seed_plus_k(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train.ensemble: seeds`: member k is exactly what one model trained on every training case with
    seed + k would be (same cases, same validation split, weights equal tensor for tensor); the
    export says which kind of ensemble it averages."""
    from pipeline.stages import export, train
    from pipeline.training.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    prepare_data(tmp_path, tmp_path / "cache", dims=2)
    base = {"epochs": 1, "iterations_per_epoch": 3, "members": [0, 1], "ensemble": "seeds"}
    for k in (0, 1):
        train.run(make_config(2, "same", train={**base, "member": k}))
    cfg = make_config(2, "same", train=base)
    for k in (0, 1):
        single = make_config(2, "same", seed=k, train={"epochs": 1, "iterations_per_epoch": 3, "output_dir": f"s{k}"})
        train.run(single)
        member, alone = (
            load_checkpoint(d / "best.pt")["model"] for d in (cfg.train.member_dir(k), single.train.member_dir())
        )
        assert member.keys() == alone.keys()
        assert all(torch.equal(member[name], alone[name]) for name in member), f"member {k} != seed {k} alone"
    first = [load_checkpoint(cfg.train.member_dir(k) / "best.pt")["model"] for k in (0, 1)]
    assert not all(torch.equal(first[0][n], first[1][n]) for n in first[0])  # the seeds made them differ
    export.run(cfg, log_mlflow=False)
    up = json.loads((Path(cfg.export.output_dir) / "configs/metadata.json").read_text())["unet_pipeline"]
    assert up["provenance"]["ensemble_members"] == 2 and up["provenance"]["ensemble"] == "seeds"
