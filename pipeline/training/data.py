"""MONAI data feeding for training: the preprocessed cases -> balanced, augmented patches.

The preprocess stage has already normalised and resampled every case (`preprocessed/`, see
docs/ARCHITECTURE.md), so only patch reading and augmentation happen here. Patches are read
lazily (`pipeline.data.patches`): memory-mapped windows around stored foreground/background
locations, with whole cases kept in RAM only up to `train.cache_gb`. Patch geometry follows the
network: in 'valid' mode the image patch is the legal input size around the requested output
patch and the label (and weight map) is the centre crop the network actually predicts; in 'same'
mode both are the patch size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import AugmentConfig, Config
from pipeline.data.manifest import ManifestError

# rotation range per dimensionality: full turns in-plane for 2D (microscopy has no "up"),
# small tilts in 3D where anatomy has an orientation
_ROTATE = {2: (math.pi,), 3: (math.pi / 12,) * 3}
_SCALE = 0.1  # +-10 % zoom together with rotation


@dataclass(frozen=True)
class PatchGeometry:
    """Input patch (what the network sees) and output patch (what the loss sees)."""

    input_size: tuple[int, ...]
    output_size: tuple[int, ...]
    margin: int  # context lost per side; 0 in 'same' mode


def patch_geometry(cfg: Config) -> PatchGeometry:
    """The patch sizes for cfg.train.patch_size, raising a clear error for an illegal same-mode size."""
    from pipeline.model import check_input_size, legal_input_size, margin, output_size

    depth, padding = cfg.depth, cfg.model.padding
    if padding == "valid":
        inp = legal_input_size(cfg.train.patch_size, depth, "valid")
        return PatchGeometry(tuple(inp), tuple(output_size(inp, depth, "valid")), margin(depth, "valid"))
    size = tuple(cfg.train.patch_size)
    try:
        check_input_size(size, depth, "same")
    except ValueError as exc:
        raise ValueError(f"train.patch_size={list(size)} does not fit model.padding='same': {exc}") from None
    return PatchGeometry(size, size, 0)


def check_manifest(manifest: dict[str, Any], cfg: Config, root: Path) -> None:
    """Fail before training on a manifest that cannot feed this config."""
    where = Path(root) / "manifest.json"
    for key in ("spatial_dims", "in_channels", "labels", "splits", "cases"):
        if key not in manifest:
            raise ManifestError(f"{where}: missing key {key!r}")
    if manifest["spatial_dims"] != cfg.data.spatial_dims:
        raise ManifestError(
            f"{where}: spatial_dims={manifest['spatial_dims']} but the config has "
            f"data.spatial_dims={cfg.data.spatial_dims}; re-run preprocess with this config"
        )
    if len(manifest["labels"]) < 2:
        raise ManifestError(f"{where}: needs at least 2 labels (background + 1), got {manifest['labels']}")
    ids = {c["id"] for c in manifest["cases"]}
    for split in ("train", "val"):
        listed = manifest["splits"].get(split) or []
        if not listed:
            raise ManifestError(f"{where}: split {split!r} is empty")
        missing = sorted(set(listed) - ids)
        if missing:
            raise ManifestError(f"{where}: split {split!r} names cases not in 'cases': {missing[:5]}")
    no_locations = [c["id"] for c in manifest["cases"] if not c.get("locations") or "n_fg" not in c]
    if no_locations:
        raise ManifestError(
            f"{where}: cases {no_locations[:5]} have no stored patch locations (written by an older "
            "preprocess); re-run the preprocess stage"
        )
    if cfg.train.loss == "weighted_ce":
        no_weight = [
            c["id"] for c in manifest["cases"] if c["id"] in manifest["splits"]["train"] and not c.get("weight")
        ]
        if no_weight:
            raise ManifestError(
                f"{where}: train.loss='weighted_ce' needs border weight maps, but cases {no_weight[:5]} have none; "
                "set preprocess.border_weights: true and re-run preprocess"
            )


def case_dicts(manifest: dict[str, Any], root: Path, split: str, with_weight: bool = False) -> list[dict[str, Any]]:
    """MONAI-style dicts {id, image, label[, weight]} with absolute paths, in split order."""
    by_id = {c["id"]: c for c in manifest["cases"]}
    out = []
    for cid in manifest["splits"][split]:
        c = by_id[cid]
        d = {"id": cid, "image": str(Path(root) / c["image"]), "label": str(Path(root) / c["label"])}
        if with_weight:
            d["weight"] = str(Path(root) / c["weight"])
        out.append(d)
    return out


def load_case_arrays(case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Whole image (C, *spatial) float32 and label (1, *spatial) for validation."""
    return np.load(case["image"]).astype(np.float32, copy=False), np.load(case["label"])


def flip_transforms(keys: Sequence[str], aug: AugmentConfig, dims: int) -> list[Any]:
    """One random mirror per allowed axis; the flip chance `aug.prob` is shared among the axes."""
    from monai.transforms import RandFlipd

    axes = list(range(dims)) if aug.flip_axes is None else aug.flip_axes
    return [RandFlipd(keys=list(keys), prob=aug.prob / len(axes), spatial_axis=axis) for axis in axes]


def train_transforms(cfg: Config, keys: tuple[str, ...], store: Any) -> Any:
    """Lazy fg/bg-balanced window read -> elastic/rotate/flip/intensity -> label centre crop."""
    from monai.transforms import (
        CenterSpatialCropd,
        Compose,
        EnsureTyped,
        RandAffined,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    from pipeline.data.patches import RandPatchd
    from pipeline.training.augment import RandElasticd

    geo = patch_geometry(cfg)
    aug = cfg.train.augment
    dims = cfg.data.spatial_dims
    others = tuple(k for k in keys if k != "image")
    # label by nearest neighbour; image and weight map interpolated
    modes = tuple("nearest" if k == "label" else "bilinear" for k in keys)
    chain: list[Any] = [
        # the window around a stored fg/bg location, borders mirrored as overlap-tile inference does
        RandPatchd(store, keys, geo.input_size, geo.margin, cfg.train.pos_fraction),
        EnsureTyped(keys=list(keys), track_meta=False),
    ]
    if aug.elastic:
        chain.append(
            RandElasticd(
                keys=list(keys), spacing=aug.elastic_sigma, magnitude=aug.elastic_magnitude, mode=modes, prob=aug.prob
            )
        )
    if aug.rotate:
        chain.append(
            RandAffined(
                keys=list(keys),
                prob=aug.prob,
                rotate_range=_ROTATE[dims],
                scale_range=(_SCALE,) * dims,
                mode=modes,
                padding_mode="reflection",
            )
        )
    if aug.flip:
        chain += flip_transforms(keys, aug, dims)
    if aug.intensity:
        chain += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=aug.prob),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=aug.prob),
            RandGaussianNoised(keys="image", std=0.05, prob=aug.prob / 2),
        ]
    if geo.margin and others:
        chain.append(CenterSpatialCropd(keys=list(others), roi_size=geo.output_size))
    chain.append(EnsureTyped(keys=list(keys), track_meta=False))
    return Compose(chain)


class RepeatDataset:
    """`length` samples drawn cyclically from `base`: an epoch is a number of iterations, not of cases."""

    def __init__(self, base: Any, length: int, store: Any = None) -> None:
        self.base = base
        self.length = length
        self.store = store  # the CaseStore the patches come from (for its cache figures)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.base[index % len(self.base)]


def case_store(
    cfg: Config, manifest: dict[str, Any], root: Path, keys: Sequence[str], processes_per_node: int = 1
) -> Any:
    """The train split as a `CaseStore`: cached in RAM up to `train.cache_gb`, memory-mapped beyond."""
    from pipeline.data.patches import CaseStore, StoredCase, cache_budget_bytes

    by_id = {c["id"]: c for c in manifest["cases"]}
    cases = [
        StoredCase(
            id=cid,
            arrays={k: Path(root) / by_id[cid][k] for k in keys},
            shape=tuple(by_id[cid]["shape"]),
            locations=Path(root) / by_id[cid]["locations"],
            n_fg=int(by_id[cid]["n_fg"]),
        )
        for cid in manifest["splits"]["train"]
    ]
    return CaseStore(cases, cache_budget_bytes(cfg.train.cache_gb, processes_per_node))


def train_dataset(
    cfg: Config, manifest: dict[str, Any], root: Path, world_size: int = 1, processes_per_node: int = 1
) -> RepeatDataset:
    """Patches of the train split, read lazily, sized to iterations_per_epoch x batch x ranks."""
    from monai.data import Dataset

    with_weight = cfg.train.loss == "weighted_ce"
    keys = ("image", "label", "weight") if with_weight else ("image", "label")
    store = case_store(cfg, manifest, root, keys, processes_per_node)
    base = Dataset(data=[{"case": i} for i in range(len(store))], transform=train_transforms(cfg, keys, store))
    return RepeatDataset(base, cfg.train.iterations_per_epoch * cfg.train.batch_size * world_size, store)


def train_loader(cfg: Config, dataset: RepeatDataset, epoch_seed: int, rank: int = 0, world_size: int = 1) -> Any:
    """A loader for one epoch whose order and augmentations depend only on (seed, epoch, rank)."""
    import torch
    from monai.data import DataLoader
    from torch.utils.data import DistributedSampler, RandomSampler

    if world_size > 1:
        sampler: Any = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=epoch_seed)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(epoch_seed))
    loader = DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.train.num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
    )
    # in-process (num_workers=0) augmentations draw from the transforms' own RandomStates;
    # workers re-seed them from the (epoch-seeded) torch generator via MONAI's worker_init_fn
    dataset.base.transform.set_random_state(seed=(epoch_seed + 7919 * rank) % 2**32)
    return loader
