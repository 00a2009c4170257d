"""Train stage: convergence (2D/3D, valid/same), checkpoints, history, resume, losses, patches.

Every test reads data made by the real embedded path: `synthesize` (small) -> preprocess stage.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_train import LABELS, make_config, prepare_data

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# 3D: a small one-pooling net on 40^3 volumes (the synthetic default size), BN, batch 4, poly LR
DATA_3D = {"cases": 10, "size": (40, 40, 40)}
MODEL_3D = {"features": [16, 32], "norm": "batch"}
TRAIN_3D = {"epochs": 8, "batch_size": 4, "iterations_per_epoch": 8, "lr": 5e-3, "scheduler": "poly"}


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train_data")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp cwd with its own sqlite MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def _read_history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _check_outputs(workdir: Path, cfg, epochs: int) -> list[dict[str, str]]:
    for name in ("last.pt", "best.pt"):
        state = torch.load(workdir / "checkpoints" / "fold_0" / name, map_location="cpu", weights_only=True)
        assert state["model_args"]["padding"] == cfg.model.padding
        assert state["class_names"] == LABELS
    rows = _read_history(workdir / "checkpoints" / "fold_0" / "train_history.csv")
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
        histories.append(_read_history(workdir / f"ckpt_{compiled}" / "fold_0" / "train_history.csv"))
    eager, compiled = (float(h[0]["train_loss"]) for h in histories)
    assert compiled == pytest.approx(eager, rel=1e-3)


def test_speed_switches_resolve_auto() -> None:
    from pipeline.model.layout import memory_format
    from pipeline.training.speed import native_bf16, use_bf16

    cpu = torch.device("cpu")
    caps = torch.cpu.get_capabilities()
    assert native_bf16(cpu) == bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    assert use_bf16("auto", cpu) == native_bf16(cpu)
    assert use_bf16(True, cpu) and not use_bf16(False, cpu)
    assert memory_format(3, True) == torch.channels_last_3d and memory_format(2, True) == torch.channels_last
    assert memory_format(2, False) == torch.contiguous_format


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


@pytest.mark.parametrize("loss", ["weighted_ce", "dice_weighted_ce"])
def test_weighted_ce_with_border_weights_trains(workdir: Path, data_cache: Path, loss: str) -> None:
    """The preprocess stage's weight maps feed the paper's weighted cross-entropy (alone, or beside Dice)."""
    from pipeline.stages.train import run

    root = prepare_data(workdir, data_cache, dims=2, border_weights=True)
    w = np.load(next((root / "cases").glob("*_weight.npy")))
    assert w.max() > 5.0  # gaps between touching objects carry the w0 term
    cfg = make_config(2, "valid", train={"epochs": 2, "iterations_per_epoch": 4, "loss": loss, "ignore_label": 255})
    run(cfg)
    rows = _read_history(workdir / "checkpoints" / "fold_0" / "train_history.csv")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


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


def test_weighted_cross_entropy_by_hand() -> None:
    from pipeline.training.losses import WeightedCrossEntropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).T.reshape(1, 2, 3, 1)  # 3 pixels, 2 classes
    label = torch.tensor([0, 1, 1]).reshape(1, 1, 3, 1)
    weight = torch.tensor([1.0, 3.0, 10.0]).reshape(1, 1, 3, 1)
    ce = -torch.log_softmax(logits, 1).gather(1, label)[0, 0, :, 0]
    loss = WeightedCrossEntropy()(logits, label, weight)
    assert loss.item() == pytest.approx(float((ce * weight[0, 0, :, 0]).sum() / 3), rel=1e-6)
    # the ignored pixel (label 255) drops out of numerator and denominator
    ignored = WeightedCrossEntropy(ignore_label=255)(logits, torch.tensor([0, 1, 255]).reshape(1, 1, 3, 1), weight)
    assert ignored.item() == pytest.approx(float((ce[:2] * weight[0, 0, :2, 0]).sum() / 2), rel=1e-6)


def test_dice_weighted_ce_is_monai_dice_plus_the_weighted_ce() -> None:
    from monai.losses import DiceLoss

    from pipeline.training.losses import DiceWeightedCE, WeightedCrossEntropy

    torch.manual_seed(0)
    logits, label = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))
    weight = 1.0 + 9.0 * torch.rand(2, 1, 8, 8)
    want = DiceLoss(to_onehot_y=True, softmax=True, batch=True)(logits, label) + WeightedCrossEntropy()(
        logits, label, weight
    )
    assert DiceWeightedCE(3)(logits, label, weight).item() == pytest.approx(want.item(), rel=1e-5)
    heavier = DiceWeightedCE(3)(logits, label, weight * 2)  # the weight map reaches the CE term
    assert heavier.item() > DiceWeightedCE(3)(logits, label, weight).item()


def test_dice_ce_ignore_label_masks_voxels() -> None:
    from pipeline.training.losses import MaskedDiceCE

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8))
    plain = MaskedDiceCE(3)(logits, label)
    masked = label.clone()
    masked[:, :, :, 4:] = 255
    other = torch.randn(2, 3, 8, 8)
    other[..., :4] = logits[..., :4]  # differs only where the label is ignored
    a = MaskedDiceCE(3, ignore_label=255)(logits, masked)
    b = MaskedDiceCE(3, ignore_label=255)(other, masked)
    assert torch.isfinite(plain) and a.item() == pytest.approx(b.item(), rel=1e-6)
    # with nothing ignored the masked path equals MONAI's DiceCELoss
    assert MaskedDiceCE(3, ignore_label=7)(logits, label).item() == pytest.approx(plain.item(), rel=1e-5)


@pytest.mark.parametrize("dims,padding", [(2, "valid"), (3, "valid"), (2, "same")])
def test_patches_are_balanced_and_aligned(tmp_path: Path, data_cache: Path, dims: int, padding: str) -> None:
    """Valid mode: image patch = legal input, label = centre crop; labels stay under their image;
    pos_fraction=1 centres every patch on foreground."""
    from pipeline.data.manifest import load_manifest
    from pipeline.model import output_size
    from pipeline.training.data import patch_geometry, train_dataset, train_loader

    root = prepare_data(tmp_path, data_cache, dims=dims, **(DATA_3D if dims == 3 else {}))
    for augment in (False, True):
        aug = {"elastic": augment, "rotate": augment, "flip": augment, "intensity": False, "prob": 1.0}
        cfg = make_config(
            dims,
            padding,
            model={"features": [8, 16, 32]},
            train={
                "patch_size": [16] * dims,
                "pos_fraction": 1.0,
                "iterations_per_epoch": 3,
                "batch_size": 4,
                "augment": aug,
            },
        )
        geo = patch_geometry(cfg)
        if padding == "valid":
            assert geo.output_size == output_size(geo.input_size, cfg.depth) and geo.output_size >= (16,) * dims
        else:
            assert geo.input_size == geo.output_size == (16,) * dims
        ds = train_dataset(cfg, load_manifest(root))
        for batch in train_loader(cfg, ds, epoch_seed=3):
            image, label = batch["image"], batch["label"]
            assert tuple(image.shape[2:]) == geo.input_size and tuple(label.shape[2:]) == geo.output_size
            centre = (slice(None), slice(None)) + tuple(slice(geo.margin, geo.margin + s) for s in geo.output_size)
            inner = image[centre]
            assert set(label.unique().tolist()) <= {0.0, 1.0, 2.0}
            # z-scored synthetic intensities: objects brighter than background, voxel by voxel aligned
            means = {k: float(inner[label == k].mean()) for k in (0, 1, 2) if bool((label == k).any())}
            assert means[0] < 0.0 and all(means[0] + 0.4 < means[k] for k in means if k), means
            if not augment:  # every crop is centred on a foreground voxel (MONAI shifts it off the border)
                assert bool((label.flatten(1) > 0).any(1).all())


@pytest.mark.parametrize("flip_axes", [None, [1]])
def test_flips_only_mirror_the_allowed_axes(flip_axes: list[int] | None) -> None:
    """flip_axes=[1] (e.g. left-right only) never mirrors axes 0 or 2; None mirrors each axis sometimes."""
    from monai.transforms import Compose

    from pipeline.config import AugmentConfig
    from pipeline.inference import flip_axes_combinations
    from pipeline.training.data import flip_transforms

    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    chain = Compose(flip_transforms(["image"], AugmentConfig(flip_axes=flip_axes, prob=1.0), dims=3))
    chain.set_random_state(0)
    subsets = flip_axes_combinations(3)
    seen: set[int] = set()
    for _ in range(60):
        out = torch.as_tensor(chain({"image": x.clone()})["image"])
        mirrored = [c for c in subsets if torch.equal(out, torch.flip(x, [a + 1 for a in c]))]
        assert len(mirrored) == 1, "output is not a mirror of the input"
        seen.update(mirrored[0])
    assert seen == ({0, 1, 2} if flip_axes is None else {1})


def test_same_mode_rejects_illegal_patch() -> None:
    from pipeline.training.data import patch_geometry

    with pytest.raises(ValueError, match="patch_size"):
        patch_geometry(make_config(2, "same", train={"patch_size": [50, 50]}))


@pytest.mark.parametrize("dims", [2, 3])
def test_elastic_deformation_is_smooth_and_seeded(dims: int) -> None:
    from pipeline.training.augment import RandElasticd

    shape = (1,) + (24,) * dims
    grid = np.indices(shape[1:]).sum(0).astype(np.float32)[None]
    label = (grid > grid.mean()).astype(np.float32)
    t = RandElasticd(keys=["image", "label"], spacing=8, magnitude=2.0, mode=["bilinear", "nearest"], prob=1.0)
    out1 = t.set_random_state(seed=1)({"image": torch.from_numpy(grid), "label": torch.from_numpy(label)})
    out2 = t.set_random_state(seed=1)({"image": torch.from_numpy(grid), "label": torch.from_numpy(label)})
    torch.testing.assert_close(out1["image"], out2["image"])
    moved = (out1["image"] - torch.from_numpy(grid)).abs()
    assert 0.1 < float(moved.mean()) < 10  # displaced, by a few pixels, not scrambled
    assert set(out1["label"].unique().tolist()) <= {0.0, 1.0}
