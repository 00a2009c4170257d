"""Training data feeding (pipeline.training.data): balanced, aligned patches, flips on the allowed axes
only, and the patch geometry's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.training import DATA_3D, make_config, prepare_data


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


@pytest.mark.parametrize("recipe", ["light", "nnunet"])
@pytest.mark.parametrize("flip_axes", [None, [1]])
def test_flips_only_mirror_the_allowed_axes(flip_axes: list[int] | None, recipe: str) -> None:
    """flip_axes=[1] (e.g. left-right only) never mirrors axes 0 or 2; None mirrors each axis sometimes."""
    from monai.transforms import Compose

    from pipeline.config import AugmentConfig
    from pipeline.inference import flip_axes_combinations
    from pipeline.training.recipes import RECIPES

    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    aug = AugmentConfig(flip_axes=flip_axes, prob=1.0, rotate=False, intensity=False, elastic=False, recipe=recipe)
    chain = Compose(RECIPES[recipe](["image"], ("bilinear",), aug, 3))
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
