"""Overlap-tile inference (pipeline.inference.tiles): exact tiling against one whole-image pass, and
the mirror padding it uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.evaluation import reflect_pad_np, small_unet

from pipeline.inference import mirror_pad, overlap_tile, plan_tiles
from pipeline.model import legal_input_size, margin


def whole_image_reference(net, image: np.ndarray, depth: int) -> torch.Tensor:
    """ONE forward pass over the image mirror-padded (numpy, reflect) by the margin on the low side and
    to the smallest legal size on the high side, cropped to the image: what tiling must reproduce."""
    size = image.shape[1:]
    m = margin(depth)
    legal = legal_input_size(size, depth)
    padded = reflect_pad_np(image, m, [lg - n - m for lg, n in zip(legal, size)])
    with torch.no_grad():
        out = net(torch.from_numpy(padded)[None])[0]
    return out[(slice(None), *(slice(0, n) for n in size))]


@pytest.mark.parametrize(
    "depth,features,size,tile",
    [
        (2, (4, 8, 16), (37, 50), (20, 24)),  # not divisible by the tile
        (2, (4, 8, 16), (64, 64), (24, 24)),
        (2, (4, 8, 16), (5, 7), (20, 20)),  # smaller than one tile and than the margin (20)
        (2, (4, 8, 16), (1, 30), (12, 12)),  # a 1-pixel axis
        (3, (4, 8, 8, 8), (45, 29), (12, 12)),  # output tile 12 is not a multiple of 2**3: stride 8
        (3, (4, 8, 8, 8), (70, 33), (20, 36)),
    ],
)
def test_overlap_tile_2d_equals_one_whole_image_pass(depth, features, size, tile):
    net = small_unet(2, "valid", features, out_channels=3, seed=depth)
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, *size))
    plan = plan_tiles(size, depth, tile)
    out = overlap_tile(torch.from_numpy(image), net, depth, tile, batch_size=3)
    ref = whole_image_reference(net, image, depth)
    assert out.shape == (3, *size)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0), (plan, (out - ref).abs().max())
    # the case is a real tiling test: several tiles wherever the image exceeds one tile
    assert plan.num_tiles >= (2 if any(n > t for n, t in zip(size, plan.output_tile)) else 1)


@pytest.mark.parametrize("size", [(21, 14, 9), (6, 5, 3), (16, 16, 16)])
def test_overlap_tile_3d_equals_one_whole_image_pass(size):
    depth, tile = 1, (8, 8, 6)
    net = small_unet(3, "valid", (2, 4), out_channels=2, seed=3)
    image = np.random.default_rng(2).normal(size=(1, *size))
    out = overlap_tile(torch.from_numpy(image), net, depth, tile, batch_size=4)
    ref = whole_image_reference(net, image, depth)
    assert out.shape == (2, *size)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0), (out - ref).abs().max()


def test_overlap_tile_3d_depth2_multi_tile():
    depth, size, tile = 2, (30, 13, 9), (6, 6, 6)
    net = small_unet(3, "valid", (2, 2, 4), out_channels=2, seed=4)
    plan = plan_tiles(size, depth, tile)
    assert plan.num_tiles > 1
    image = np.random.default_rng(5).normal(size=(1, *size))
    out = overlap_tile(torch.from_numpy(image), net, depth, tile, batch_size=2)
    ref = whole_image_reference(net, image, depth)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0), (out - ref).abs().max()


@pytest.mark.parametrize("n,low,high", [(5, 3, 20), (1, 4, 4), (2, 7, 9), (10, 3, 3), (4, 0, 11)])
def test_mirror_pad_matches_numpy_reflect(n, low, high):
    x = torch.arange(n * 3, dtype=torch.float32).reshape(1, 3, n)
    got = mirror_pad(x, [low], [high]).numpy()
    assert np.array_equal(got, np.pad(x.numpy(), [(0, 0), (0, 0), (low, high)], mode="reflect"))


def test_overlap_tile_rejects_same_padding_net():
    net = small_unet(2, "same", (4, 8, 16))
    with pytest.raises(ValueError, match="valid-padding"):
        overlap_tile(torch.randn(1, 20, 20), net, 2, (8, 8))
