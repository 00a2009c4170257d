"""Checkpoints and resuming (pipeline.training.checkpoint): an interrupted run resumes to the
uninterrupted one's weights and history; another config or dataset starts over.

Every test reads data made by the real embedded path: `synthesize` (small) -> preprocess stage.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.training import make_config, prepare_data


@pytest.mark.slow
def test_resume_equals_uninterrupted(workdir: Path, data_cache: Path) -> None:
    """Train 3 epochs straight vs 1 epoch, 'killed', re-run to 3: same weights, same history."""
    from mlflow.tracking import MlflowClient

    from pipeline.stages.train import run
    from pipeline.tracking import read_run_ref

    prepare_data(workdir, data_cache, dims=2)
    aug = {"elastic": True, "rotate": True, "flip": True, "intensity": True, "prob": 0.5}
    train = {"epochs": 3, "iterations_per_epoch": 4, "scheduler": "poly", "augment": aug}
    model = {"features": [8, 16, 32], "dropout": 0.2}
    straight = make_config(2, "valid", model=model, train={**train, "output_dir": "ck_straight"})
    run(straight)
    resumed = make_config(2, "valid", model=model, train={**train, "output_dir": "ck_resumed"})
    run(resumed, max_epochs=1)
    first = torch.load(workdir / "ck_resumed" / "fold_0" / "last.pt", weights_only=True)
    assert first["epoch"] == 1
    run_id = read_run_ref(workdir / "ck_resumed" / "fold_0").run_id
    run(resumed)

    a = torch.load(workdir / "ck_straight" / "fold_0" / "last.pt", weights_only=True)
    b = torch.load(workdir / "ck_resumed" / "fold_0" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert a["model"].keys() == b["model"].keys()
    for key, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][key], tensor, atol=1e-6, rtol=0, msg=key)
    for key in ("train_loss", "val_dice_mean", "val_iou_mean"):
        assert [h[key] for h in b["history"]] == pytest.approx([h[key] for h in a["history"]], abs=1e-6), key
    assert b["scheduler"]["last_epoch"] == a["scheduler"]["last_epoch"] == 12
    # the resumed training kept logging into the run it started
    assert b["mlflow_run_id"] == run_id == read_run_ref(workdir / "ck_resumed" / "fold_0").run_id
    steps = [
        m.step
        for m in MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"]).get_metric_history(run_id, "train_loss")
    ]
    assert sorted(steps) == [1, 2, 3]


def test_other_config_starts_over(workdir: Path, data_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.stages.train import run

    prepare_data(workdir, data_cache, dims=2)
    cfg = make_config(2, "same", train={"epochs": 2, "iterations_per_epoch": 2})
    run(cfg, max_epochs=1)
    changed = make_config(2, "same", train={"epochs": 2, "iterations_per_epoch": 2, "lr": 1e-4})
    run(changed)
    out = capsys.readouterr()
    assert "different config" in out.out + out.err
    state = torch.load(workdir / "checkpoints" / "fold_0" / "last.pt", weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    assert state["config"]["train"]["lr"] == 1e-4


def test_finished_run_on_another_dataset_retrains(workdir: Path, data_cache: Path, capsys) -> None:
    """`dvc repro` reruns train when preprocessed/ changes; the persisted checkpoint of the old data
    must not pass for the new result. With the same data and code it is kept, and the stage's other
    outputs (history, overlays) are written again."""
    import json

    from pipeline.stages.train import run

    root = prepare_data(workdir, data_cache, dims=2)
    cfg = make_config(2, "same", train={"epochs": 1, "iterations_per_epoch": 2})
    run(cfg)
    (workdir / "checkpoints" / "fold_0" / "val_overlays.png").unlink()
    run(cfg)  # same config, code and data: nothing to train, outputs rewritten
    out = capsys.readouterr()
    assert (
        "nothing to train" in out.out + out.err and (workdir / "checkpoints" / "fold_0" / "val_overlays.png").is_file()
    )
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"] = manifest["splits"]["train"][1:]  # one case fewer: another dataset
    (root / "manifest.json").write_text(json.dumps(manifest))
    run(cfg)
    out = capsys.readouterr()
    assert "starts over" in out.out + out.err and "nothing to train" not in out.out + out.err
