"""Deep supervision: extra heads on coarser decoder levels, a weighted loss over all levels,
training and exact resume with it, and an exported net that never sees the extra heads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.training import make_config, prepare_data

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.mark.parametrize("dims", [2, 3])
def test_levels_halve_and_the_finest_is_the_plain_forward(dims: int) -> None:
    from pipeline.model import UNet
    from pipeline.training.deep_supervision import DeepSupervisedNet

    torch.manual_seed(0)
    net = UNet(dims, 1, 3, features=[4, 8, 16, 32], padding="same", norm="instance").eval()
    ds = DeepSupervisedNet(net).eval()
    x = torch.randn(2, 1, *([16] * dims))
    outs = ds(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(16,) * dims, (8,) * dims, (4,) * dims]
    assert all(o.shape[:2] == (2, 3) for o in outs)
    torch.testing.assert_close(outs[0], net(x), rtol=0, atol=0)
    # the exported module is the plain net: the extra heads are not among its parameters
    assert not any(name.startswith("heads") for name, _ in net.named_parameters())


def test_level_weights_halve_and_sum_to_one() -> None:
    from pipeline.training.deep_supervision import level_weights

    w = level_weights(3)
    assert w == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert level_weights(1) == [1.0]


def test_loss_is_the_weighted_sum_of_each_level_against_the_shrunk_label() -> None:
    from pipeline.training.deep_supervision import DeepSupervisionLoss
    from pipeline.training.losses import MaskedDiceCE

    torch.manual_seed(1)
    label = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    label[..., :4, :4] = 1  # a block that survives 2x and 4x nearest shrinking exactly
    outs = [torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2)]
    base = MaskedDiceCE(2)
    small = [label, label[..., ::2, ::2], label[..., ::4, ::4]]
    assert small[2].flatten().tolist() == [1, 0, 0, 0]
    want = sum(w * base(o, lab) for w, o, lab in zip([4 / 7, 2 / 7, 1 / 7], outs, small))
    got = DeepSupervisionLoss(base)(outs, label)
    assert got.item() == pytest.approx(float(want), rel=1e-6)


def test_valid_padding_is_refused_at_load() -> None:
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="deep_supervision needs model.padding: same"):
        make_config(2, "valid", train={"deep_supervision": True})


@pytest.mark.slow
def test_trains_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2 epochs straight vs 1 + 1 resumed: the same net and the same extra heads."""
    from pipeline.stages.train import run
    from pipeline.training.checkpoint import load_trained_net

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    prepare_data(tmp_path, tmp_path / "cache", dims=2)
    model = {"features": [8, 16, 32], "norm": "instance"}
    train = {"epochs": 2, "iterations_per_epoch": 3, "patch_size": [32, 32], "deep_supervision": True}
    run(make_config(2, "same", model=model, train={**train, "output_dir": "ck_a"}))
    resumed = make_config(2, "same", model=model, train={**train, "output_dir": "ck_b"})
    run(resumed, max_epochs=1)
    run(resumed)
    a = torch.load(tmp_path / "ck_a" / "fold_0" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "ck_b" / "fold_0" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert set(a["deep_supervision_heads"]) == {"0.weight", "0.bias"}  # depth 2: one coarser level
    for part in ("model", "deep_supervision_heads"):
        for key, tensor in a[part].items():
            torch.testing.assert_close(b[part][key], tensor, atol=1e-6, rtol=0, msg=f"{part}.{key}")
    # evaluate / export load the plain net from the same checkpoint
    net, _ = load_trained_net(tmp_path / "ck_a" / "fold_0" / "best.pt")
    assert type(net).__name__ == "UNet"
