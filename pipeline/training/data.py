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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config import Config, ConfigError
from pipeline.data.manifest import Manifest


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
        raise ConfigError(f"train.patch_size={list(size)} does not fit model.padding='same': {exc}") from None
    return PatchGeometry(size, size, 0)


def train_transforms(cfg: Config, keys: tuple[str, ...], store: Any) -> Any:
    """Lazy fg/bg-balanced window read -> the `train.augment.recipe` augmentations -> label centre crop."""
    import torch
    from monai.transforms import CenterSpatialCropd, Compose, EnsureTyped

    from pipeline.data.patches import RandPatchd
    from pipeline.training.recipes import RECIPES

    geo = patch_geometry(cfg)
    aug = cfg.train.augment
    others = tuple(k for k in keys if k != "image")
    # label by nearest neighbour; image and weight map interpolated
    modes = tuple("nearest" if k == "label" else "bilinear" for k in keys)
    chain: list[Any] = [
        # the window around a stored fg/bg location, borders mirrored as overlap-tile inference does
        RandPatchd(store, keys, geo.input_size, geo.margin, cfg.train.pos_fraction),
        EnsureTyped(keys=list(keys), track_meta=False),
        *RECIPES[aug.recipe](keys, modes, aug, cfg.data.spatial_dims),
    ]
    if geo.margin and others:
        chain.append(CenterSpatialCropd(keys=list(others), roi_size=geo.output_size))
    # one dtype per key whichever augmentations fired (a spatial one turns the label float), so
    # worker processes can collate a batch into shared memory: label uint8, the rest float32
    dtypes = [torch.uint8 if k == "label" else torch.float32 for k in keys]
    chain.append(EnsureTyped(keys=list(keys), dtype=dtypes, track_meta=False))
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


def case_store(manifest: Manifest, keys: Sequence[str], cache_bytes: int) -> Any:
    """The train split as a `CaseStore`: cached in RAM up to `cache_bytes`, memory-mapped beyond."""
    from pipeline.data.patches import CaseStore, StoredCase

    cases = [
        StoredCase(
            id=cid,
            arrays={k: manifest.path(cid, k) for k in keys},
            shape=tuple(manifest.case(cid)["shape"]),
            locations=manifest.path(cid, "locations"),
            n_fg=int(manifest.case(cid)["n_fg"]),
        )
        for cid in manifest.split("train")
    ]
    return CaseStore(cases, cache_bytes)


def train_dataset(cfg: Config, manifest: Manifest, world_size: int = 1, processes_per_node: int = 1) -> RepeatDataset:
    """Patches of the train split, read lazily, sized to iterations_per_epoch x batch x ranks."""
    from monai.data import Dataset

    from pipeline.data.patches import cache_budget_bytes

    with_weight = cfg.train.uses_weight_map
    keys = ("image", "label", "weight") if with_weight else ("image", "label")
    store = case_store(manifest, keys, cache_budget_bytes(cfg.train.cache_gb, processes_per_node))
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
