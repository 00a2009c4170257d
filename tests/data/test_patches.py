"""Lazy patch reading (pipeline.data.patches): windows equal pad-then-crop of the whole volume,
RAM-cached and memory-mapped cases give the same patches, and DataLoader workers are seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.training import make_config, prepare_data

from pipeline.data.patches import CaseStore, RandPatchd, StoredCase, cache_budget_bytes, reflect, sample_locations

DATA_3D = {"size": (24, 28, 20)}


def _store(tmp_path: Path, arrays: dict[str, np.ndarray], cache_bytes: int) -> CaseStore:
    paths = {}
    for key, arr in arrays.items():
        paths[key] = tmp_path / f"c_{key}.npy"
        np.save(paths[key], arr)
    loc = tmp_path / "c_locations.npy"
    locations, n_fg = sample_locations(arrays["label"][0], seed=0)
    np.save(loc, locations)
    return CaseStore([StoredCase("c", paths, arrays["image"].shape[1:], loc, n_fg)], cache_bytes)


def test_reflect_matches_numpy_symmetric_padding() -> None:
    for n in (1, 2, 5):
        base = np.arange(n)
        padded = np.pad(base, (13, 11), mode="symmetric")
        assert np.array_equal(base[reflect(np.arange(-13, n + 11), n)], padded)


@pytest.mark.parametrize(
    "shape,input_size,margin", [((30, 26), (20, 20), 6), ((5, 9, 7), (12, 8, 16), 3), ((40, 40), (16, 16), 0)]
)
@pytest.mark.parametrize("cached", [False, True])
def test_window_equals_pad_then_crop(tmp_path: Path, shape, input_size, margin, cached: bool) -> None:
    """Each window is the crop of the volume mirror-padded by `margin` and then up to the patch
    size, centred (up to the border clamp) on a stored location, foreground with probability pos."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    label = (rng.random((1, *shape)) > 0.8).astype(np.uint8)
    store = _store(tmp_path, {"image": image, "label": label}, cache_bytes=10**9 if cached else 0)
    assert store.cached_cases == (1 if cached else 0)
    t = RandPatchd(store, ("image", "label"), input_size, margin, pos=1.0)
    t.set_random_state(3)
    pads = []
    for n, size in zip(shape, input_size):
        extra = max(0, size - (n + 2 * margin))
        pads.append((margin + extra // 2, margin + extra - extra // 2))
    big_image = np.pad(image, [(0, 0), *pads], mode="symmetric")
    big_label = np.pad(label, [(0, 0), *pads], mode="symmetric")
    for _ in range(20):
        out = t({"case": 0})
        assert out["image"].shape == (2, *input_size) and out["label"].shape == (1, *input_size)
        # find where the window sits in the padded volume: the one offset whose crop matches
        found = False
        for start in np.ndindex(*(b - s + 1 for b, s in zip(big_image.shape[1:], input_size))):
            sl = (slice(None), *(slice(a, a + s) for a, s in zip(start, input_size)))
            if np.array_equal(big_image[sl], out["image"]):
                found = np.array_equal(big_label[sl], out["label"])
                break
        assert found, "window is not a crop of the mirror-padded volume"
        # pos=1: the centre is a foreground voxel, and the border clamp keeps it inside the window
        assert out["label"].any()


def test_background_centres_when_pos_is_zero(tmp_path: Path) -> None:
    label = np.zeros((1, 60, 60), np.uint8)
    label[0, 25:35, 25:35] = 1
    store = _store(tmp_path, {"image": label.astype(np.float32), "label": label}, 0)
    t = RandPatchd(store, ("image", "label"), (5, 5), 0, pos=0.0)
    t.set_random_state(0)
    centres = [t({"case": 0})["label"][0, 2, 2] for _ in range(50)]
    assert not any(centres)  # every centre voxel is background


def test_cache_budget() -> None:
    assert cache_budget_bytes(0.5) == 2**29
    free = cache_budget_bytes(None)
    assert free > 0 and cache_budget_bytes(None, processes_per_node=2) <= free


def _batches(cfg, root: Path, seed: int) -> list[dict[str, torch.Tensor]]:
    from pipeline.data.manifest import load_manifest
    from pipeline.training.data import train_dataset, train_loader

    torch.manual_seed(seed)  # what set_determinism does per epoch: the workers' base seed comes from here
    ds = train_dataset(cfg, load_manifest(root))
    return [{k: batch[k].clone() for k in ("image", "label")} for batch in train_loader(cfg, ds, epoch_seed=seed)]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_is_seeded_in_and_across_workers(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, workers: int
) -> None:
    """Same seed -> same batches (also with 2 worker processes, and whether cases are cached or
    memory-mapped); another seed -> other batches; two workers never draw the same patches."""
    root = prepare_data(tmp_path, tmp_path_factory.mktemp("patch_data"), dims=3, **DATA_3D)
    aug = {"elastic": False, "rotate": True, "flip": True, "intensity": True}
    base = {
        "iterations_per_epoch": 4,
        "batch_size": 2,
        "patch_size": [16, 16, 16],
        "num_workers": workers,
        "augment": aug,
    }
    mapped = make_config(3, "same", train={**base, "cache_gb": 0})
    cached = make_config(3, "same", train={**base, "cache_gb": 1})
    a, b = _batches(mapped, root, 5), _batches(cached, root, 5)
    assert len(a) == 4
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    other = _batches(mapped, root, 6)
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, other))
    if workers:  # batches 0 and 1 come from different workers: their augmentations must differ
        assert not torch.equal(a[0]["image"], a[1]["image"])


def test_training_reads_no_whole_volume_when_not_cached(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    """With cache_gb=0 every read (patch window or location) goes through a memory map."""
    from pipeline.data.manifest import load_manifest
    from pipeline.training.data import train_dataset, train_loader

    root = prepare_data(tmp_path, tmp_path_factory.mktemp("patch_data_mm"), dims=3, **DATA_3D)
    cfg = make_config(
        3, "same", train={"iterations_per_epoch": 2, "batch_size": 2, "patch_size": [16, 16, 16], "cache_gb": 0}
    )
    loads: list[str | None] = []
    real_load = np.load

    def spy(file, *args, **kwargs):
        loads.append(kwargs.get("mmap_mode"))
        return real_load(file, *args, **kwargs)

    ds = train_dataset(cfg, load_manifest(root))
    assert ds.store.cached_cases == 0
    monkeypatch.setattr(np, "load", spy)
    for batch in train_loader(cfg, ds, epoch_seed=1):
        assert tuple(batch["image"].shape[2:]) == (16, 16, 16)
    assert loads and all(m == "r" for m in loads), loads  # arrays and locations alike


def test_worker_processes_collate_batches_whichever_augmentations_fired(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A spatial augmentation turns a label float, a skipped one leaves it uint8; in worker
    processes the batch is collated into shared memory of the first sample's dtype, so a batch
    mixing the two failed. Every sample now leaves the chain as float32 image, uint8 label."""
    root = prepare_data(tmp_path, tmp_path_factory.mktemp("patch_data_mixed"), dims=3, **DATA_3D)
    aug = {"elastic": True, "rotate": True, "flip": False, "intensity": False, "prob": 0.5}
    train = {"iterations_per_epoch": 6, "batch_size": 4, "patch_size": [16, 16, 16], "num_workers": 2, "augment": aug}
    batches = _batches(make_config(3, "same", train=train), root, 3)
    assert len(batches) == 6
    assert all(b["label"].dtype == torch.uint8 and b["image"].dtype == torch.float32 for b in batches)
