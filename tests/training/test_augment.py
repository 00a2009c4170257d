"""Training augmentation (pipeline.training.augment): the elastic deformation."""

from __future__ import annotations

import numpy as np
import pytest
import torch


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
