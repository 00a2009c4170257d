"""The weights' moving average (pipeline.training.ema, `train.ema_decay`): the warmed-up decay by
hand on a known sequence of weights and batch-norm statistics, and through a real training run:
what validation scored is what best.pt keeps as `model` (what evaluate and export load), with the
trained weights beside it. Resuming with the average is tested in test_checkpoint.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.training import make_config, prepare_data, read_history

from pipeline.training.ema import build_ema, ema_decay_at


def test_decay_warms_up_then_holds() -> None:
    got = [float(ema_decay_at(0.9, torch.tensor(n))) for n in (0, 1, 8, 80, 1000)]
    assert got == pytest.approx([1 / 10, 2 / 11, 9 / 18, 0.9, 0.9])


def test_average_of_known_weights_and_batch_norm_statistics() -> None:
    """Weights 1, 2, ..., 6 and running means 10, 20, ..., 60 in turn: the average follows
    avg <- d_n * avg + (1 - d_n) * new with d_n = min(decay, (1 + n) / (10 + n)), the first copied."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    ema = build_ema(net, decay=0.5)
    expected_w = expected_m = 0.0
    for n, value in enumerate(range(1, 7)):
        with torch.no_grad():
            net[0].weight.fill_(value)
            net[1].running_mean.fill_(10 * value)
            net[1].num_batches_tracked.fill_(value)
        ema.update_parameters(net)
        d = 0.0 if n == 0 else min(0.5, (1 + n) / (10 + n))
        expected_w = d * expected_w + (1 - d) * value
        expected_m = d * expected_m + (1 - d) * 10 * value
    avg = ema.module
    assert float(avg[0].weight.detach()) == pytest.approx(expected_w, rel=1e-6)
    assert float(avg[1].running_mean) == pytest.approx(expected_m, rel=1e-6)
    assert int(avg[1].num_batches_tracked) == 6  # the net's counter, not an average of it
    assert expected_w not in (1.0, 6.0)  # an average, neither the first nor the last weights
    assert float(net[0].weight.detach()) == 6.0  # the net itself is untouched


@pytest.mark.slow
def test_best_pt_keeps_the_validated_average(workdir: Path, data_cache: Path) -> None:
    from pipeline.stages.train import run
    from pipeline.training.checkpoint import load_trained_net
    from pipeline.training.validation import validate

    prepare_data(workdir, data_cache, dims=2)
    cfg = make_config(2, "same", train={"epochs": 3, "iterations_per_epoch": 6, "ema_decay": 0.9})
    run(cfg)
    member = workdir / "checkpoints" / "fold_0"
    best = torch.load(member / "best.pt", weights_only=True)
    assert best["ema_updates"] == 6 * best["epoch"]
    differs = [
        k for k, v in best["model"].items() if v.is_floating_point() and not torch.equal(v, best["training_model"][k])
    ]
    assert differs, "best.pt's model is the trained weights, not their average"
    net, _ = load_trained_net(member / "best.pt")
    from pipeline.data.manifest import load_manifest

    manifest = load_manifest(cfg.preprocess.output_dir).for_member(1, 0, cfg.seed)
    again = validate(net, manifest, manifest.split("val"), cfg, torch.device("cpu"))
    rows = read_history(member / "train_history.csv")
    assert again.dice_mean == pytest.approx(best["best_metric"], abs=1e-6)
    assert best["best_metric"] == pytest.approx(max(float(r["val_dice_mean"]) for r in rows), abs=1e-6)
