"""The planner (`unet-pipeline plan`): depth, patch, batch and features from a dataset fingerprint.

Hand-written fingerprints with known answers (the hippocampus and ISBI shapes, a large CT volume, a
tiny dataset), and the real path: synthetic data -> preprocess -> `plan` -> a config that trains.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from helpers.training import make_config, prepare_data

from pipeline.model.shapes import legal_input_size
from pipeline.planning import STEP_VOXELS, plan


def _fingerprint(median: list[float], spacing: list[float] | None = None, train: int = 180) -> dict:
    dims = len(median)
    spacing = spacing or [1.0] * dims
    return {
        "spatial_dims": dims,
        "cases": train,
        "shape": {"median": median},
        "spacing": {"median": spacing},
        "cases_per_split": {"train": train, "val": 0},
    }


def test_hippocampus_shape_gets_a_whole_case_patch() -> None:
    p = plan(_fingerprint([35.0, 50.0, 35.5]))
    assert p.features == [16, 32, 64, 128]  # depth 3: 35 -> 17 -> 8 -> 4 voxels at the bottleneck
    assert p.patch_size == [40, 56, 40] and p.tile_size == p.patch_size  # the median case, rounded up to 8
    assert p.batch_size == STEP_VOXELS // (40 * 56 * 40) == 3


def test_isbi_shape_gets_the_papers_tile() -> None:
    p = plan(_fingerprint([512.0, 512.0], train=20), padding="valid")
    assert p.features == [32, 64, 128, 256, 512] and p.batch_size == 1
    assert p.patch_size == [388, 388] and list(legal_input_size(p.patch_size, 4, "valid")) == [572, 572]


def test_a_large_volume_shrinks_to_the_budget() -> None:
    """512 x 512 x 300 CT: depth 4, and the patch shrinks (largest axis over the median first) until
    one patch fits the step budget; each axis stays a multiple of 16."""
    p = plan(_fingerprint([512.0, 512.0, 300.0], spacing=[0.8, 0.8, 1.5], train=40))
    assert p.features == [16, 32, 64, 128, 256]
    assert math.prod(p.patch_size) <= STEP_VOXELS and all(n % 16 == 0 for n in p.patch_size)
    assert p.batch_size >= 1 and p.batch_size * math.prod(p.patch_size) <= STEP_VOXELS


def test_a_tiny_dataset_caps_the_batch() -> None:
    """Three 32^3 cases: 5 % of the training voxels is under one patch, so the batch is 1."""
    p = plan(_fingerprint([32.0, 32.0, 32.0], train=3))
    assert p.patch_size == [32, 32, 32] and p.batch_size == 1


def test_plan_cli_writes_a_config_that_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from pipeline.cli import main
    from pipeline.config import load_config
    from pipeline.stages import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    base = tmp_path / "base.yaml"
    cfg = make_config(2, "same", train={"epochs": 1, "iterations_per_epoch": 2})
    base.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["plan", "-c", str(base)]) == 2  # no preprocessed/ yet: a clear error
    assert "fingerprint.json not found" in capsys.readouterr().err
    prepare_data(tmp_path, tmp_path / "cache", dims=2)
    capsys.readouterr()  # what preprocess printed
    assert main(["plan", "-c", str(base)]) in (0, None)
    text = capsys.readouterr().out
    assert text.startswith("# planned by `unet-pipeline plan`") and "depth" in text
    (tmp_path / "planned.yaml").write_text(text)
    planned = load_config(tmp_path / "planned.yaml")
    assert planned.train.patch_size == [64, 64] and planned.inference.tile_size == [64, 64]  # the 64^2 cases
    assert planned.model.features[0] == 32 and planned.train.epochs == 1  # the rest from the base config
    outcome = train.run(planned)
    assert outcome is None and (tmp_path / planned.train.member_dir() / "best.pt").is_file()
