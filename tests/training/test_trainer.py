"""The training loop (pipeline.training.trainer) through the train stage: convergence (2D/3D, valid/same,
bf16 and channels-last, torch.compile), checkpoints and history, and its refusals.

Every test reads data made by the real embedded path: `synthesize` (small) -> preprocess stage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.training import DATA_3D, LABELS, make_config, prepare_data, read_history

# 3D: a small one-pooling net on 40^3 volumes (the synthetic default size), BN, batch 4, poly LR
MODEL_3D = {"features": [16, 32], "norm": "batch"}
TRAIN_3D = {"epochs": 8, "batch_size": 4, "iterations_per_epoch": 8, "lr": 5e-3, "scheduler": "poly"}


def _check_outputs(workdir: Path, cfg, epochs: int) -> list[dict[str, str]]:
    for name in ("last.pt", "best.pt"):
        state = torch.load(workdir / "checkpoints" / "fold_0" / name, map_location="cpu", weights_only=True)
        assert state["model_args"]["padding"] == cfg.model.padding
        assert state["class_names"] == LABELS
    rows = read_history(workdir / "checkpoints" / "fold_0" / "train_history.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert set(rows[0]) >= {
        "train_loss",
        "val_dice_mean",
        "val_iou_mean",
        "val_dice_round",
        "val_iou_angular",
        "lr",
        "epoch_time",
    }
    return rows


def _val_dice(rows: list[dict[str, str]]) -> list[float]:
    return [float(r["val_dice_mean"]) for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_train_2d_converges(workdir: Path, data_cache: Path, padding: str) -> None:
    from pipeline.stages.train import run

    prepare_data(workdir, data_cache, dims=2)
    cfg = make_config(2, padding)
    run(cfg)
    rows = _check_outputs(workdir, cfg, cfg.train.epochs)
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.6 * losses[0], losses
    assert _val_dice(rows)[-1] >= 0.80, rows
    best = torch.load(workdir / "checkpoints" / "fold_0" / "best.pt", map_location="cpu", weights_only=True)
    assert best["best_metric"] == pytest.approx(max(_val_dice(rows)), abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_train_3d_converges(workdir: Path, data_cache: Path, padding: str) -> None:
    from pipeline.stages.train import run

    prepare_data(workdir, data_cache, dims=3, **DATA_3D)
    cfg = make_config(
        3,
        padding,
        model=MODEL_3D,
        train={**TRAIN_3D, "patch_size": [16] * 3 if padding == "valid" else [24] * 3},
        inference={"overlap": 0.25},
    )
    run(cfg)
    rows = _check_outputs(workdir, cfg, cfg.train.epochs)
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.6 * losses[0], losses
    assert _val_dice(rows)[-1] >= 0.80, rows


@pytest.mark.slow
def test_train_3d_with_bf16_and_channels_last_converges(
    workdir: Path, data_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train.bf16` and `train.channels_last` on: the run says so, and it converges like the
    float32 one above (weights and checkpoints stay float32, default layout on disk)."""
    from pipeline.stages.train import run

    prepare_data(workdir, data_cache, dims=3, **DATA_3D)
    train = {**TRAIN_3D, "patch_size": [24] * 3, "bf16": True, "channels_last": True}
    cfg = make_config(3, "same", model=MODEL_3D, train=train, inference={"overlap": 0.25})
    run(cfg)
    assert "on cpu (bf16, channels_last);" in capsys.readouterr().out
    rows = _check_outputs(workdir, cfg, cfg.train.epochs)
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.6 * losses[0], losses
    assert _val_dice(rows)[-1] >= 0.80, rows
    state = torch.load(workdir / "checkpoints" / "fold_0" / "best.pt", map_location="cpu", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state["model"].values() if t.is_floating_point())


@pytest.mark.slow
def test_compiled_training_step_matches_eager(workdir: Path, data_cache: Path) -> None:
    """`train.compile`: torch.compile of the network gives the eager run's losses (same seed)."""
    from pipeline.stages.train import run

    prepare_data(workdir, data_cache, dims=2)
    histories = []
    for compiled in (False, True):
        cfg = make_config(2, "same", train={"epochs": 1, "iterations_per_epoch": 4, "compile": compiled})
        cfg.train.output_dir = workdir / f"ckpt_{compiled}"
        run(cfg)
        histories.append(read_history(workdir / f"ckpt_{compiled}" / "fold_0" / "train_history.csv"))
    eager, compiled = (float(h[0]["train_loss"]) for h in histories)
    assert compiled == pytest.approx(eager, rel=1e-3)


def test_batch_norm_over_one_sample_is_named(workdir: Path, data_cache: Path, capsys) -> None:
    """Batch norm with batch 1 trains as instance norm and validates with running averages: the run
    says so and names the fix; with a batch of 2, or instance norm, it says nothing."""
    from pipeline.stages.train import run
    from pipeline.training.config_notes import batch_norm_note

    assert batch_norm_note(make_config(2, "same", model={"norm": "batch"}, train={"batch_size": 2})) is None
    assert batch_norm_note(make_config(2, "same", model={"norm": "instance"}, train={"batch_size": 1})) is None
    prepare_data(workdir, data_cache, dims=2)
    cfg = make_config(
        2,
        "same",
        model={"features": [8, 16], "norm": "batch"},
        train={"epochs": 1, "iterations_per_epoch": 2, "batch_size": 1},
    )
    run(cfg)
    out = capsys.readouterr().out
    assert "model.norm: batch with train.batch_size: 1" in out and "model.norm: instance" in out


def test_weighted_ce_needs_weight_maps(workdir: Path, data_cache: Path) -> None:
    from pipeline.data.manifest import ManifestError
    from pipeline.stages.train import run

    prepare_data(workdir, data_cache, dims=2)
    with pytest.raises(ManifestError, match="border_weights"):
        run(make_config(2, "same", train={"loss": "weighted_ce", "patch_size": [32, 32]}))


def test_missing_manifest_is_a_clear_error(workdir: Path) -> None:
    from pipeline.data.manifest import ManifestError
    from pipeline.stages.train import run

    with pytest.raises(ManifestError, match="preprocess"):
        run(make_config(2, "same"))
