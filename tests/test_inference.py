"""Overlap-tile and sliding-window inference: exact tiling, seam-free blending, TTA, clean-up."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers_eval import PointwiseNet, reflect_pad_np, small_unet

from pipeline.errors import InputError
from pipeline.inference import (
    InferenceSettings,
    flip_axes_combinations,
    keep_largest,
    mirror_pad,
    overlap_tile,
    plan_tiles,
    predict_logits,
    predict_probabilities,
)
from pipeline.inference.layout import wants_channels_last
from pipeline.model import UNet, legal_input_size, margin, output_size
from pipeline.model.layout import is_channels_last


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


def test_tile_plan_phase_aligned_and_covering():
    for depth in (2, 3, 4):
        for size in [(7,), (100,), (389,), (1000,)]:
            plan = plan_tiles(size, depth, (30,))
            assert output_size(plan.input_tile, depth) == plan.output_tile
            starts = plan.starts[0]
            assert all(s % 2**depth == 0 for s in starts)  # pooling phase preserved
            assert all(b - a <= plan.output_tile[0] for a, b in zip(starts, starts[1:]))  # no gaps
            assert starts[-1] + plan.output_tile[0] >= size[0]  # covers the image
            assert plan.padded_size[0] == starts[-1] + plan.input_tile[0]


@pytest.mark.parametrize("n,low,high", [(5, 3, 20), (1, 4, 4), (2, 7, 9), (10, 3, 3), (4, 0, 11)])
def test_mirror_pad_matches_numpy_reflect(n, low, high):
    x = torch.arange(n * 3, dtype=torch.float32).reshape(1, 3, n)
    got = mirror_pad(x, [low], [high]).numpy()
    assert np.array_equal(got, np.pad(x.numpy(), [(0, 0), (0, 0), (low, high)], mode="reflect"))


def test_predict_logits_batch_and_device_dtype():
    net = small_unet(2, "valid", (4, 8, 16), out_channels=2)
    batch = torch.randn(2, 1, 30, 41, dtype=torch.float32)  # cast to the net's float64 inside
    out = predict_logits(batch, net, InferenceSettings(padding="valid", depth=2, tile_size=(16, 16), batch_size=5))
    assert out.shape == (2, 2, 30, 41) and out.dtype == torch.float64
    single = predict_logits(
        batch[1], net, InferenceSettings(padding="valid", depth=2, tile_size=(16, 16), batch_size=1)
    )
    assert torch.allclose(out[1], single, atol=1e-10)


def test_overlap_tile_rejects_same_padding_net():
    net = small_unet(2, "same", (4, 8, 16))
    with pytest.raises(ValueError, match="valid-padding"):
        overlap_tile(torch.randn(1, 20, 20), net, 2, (8, 8))


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("size", [(37, 50), (100, 29), (9, 6)])
def test_sliding_window_seam_free_on_constant_weight_model(blend, size):
    """A pointwise constant-weight conv has no context, so the blended windows must give exactly its
    whole-image output everywhere: any seam (unnormalised weights, gaps) would show."""
    net = PointwiseNet(2, out_channels=2).double().eval()
    image = torch.from_numpy(np.random.default_rng(0).normal(size=(1, *size)))
    out = predict_logits(image, net, InferenceSettings("same", 2, (16, 24), overlap=0.5, blend=blend))
    with torch.no_grad():
        ref = net(image[None])[0]
    assert out.shape == (2, *size)
    assert torch.allclose(out, ref, atol=1e-6), (out - ref).abs().max()

    # a net whose output is constant (zero weights) gives one constant map: no seams at all
    flat = PointwiseNet(2, out_channels=2, weight=0.0, bias=0.7).double().eval()
    out = predict_logits(image, flat, InferenceSettings("same", 2, (16, 24), overlap=0.25, blend=blend))
    assert torch.allclose(out[0], torch.full(size, 0.7, dtype=out.dtype), atol=1e-6)
    assert torch.allclose(out[1], torch.full(size, 1.4, dtype=out.dtype), atol=1e-6)


def test_sliding_window_3d_same_unet_any_size():
    net = small_unet(3, "same", (2, 4, 4), out_channels=3)
    image = torch.randn(1, 19, 9, 13, dtype=torch.float64)
    out = predict_logits(image, net, InferenceSettings("same", 2, (8, 8, 8), overlap=0.5))
    assert out.shape == (3, 19, 9, 13)
    assert torch.isfinite(out).all()
    # a single window covering the (legal-size) image equals one plain forward pass
    image = torch.randn(1, 8, 12, 16, dtype=torch.float64)
    out = predict_logits(image, net, InferenceSettings("same", 2, (8, 12, 16)))
    with torch.no_grad():
        assert torch.allclose(out, net(image[None])[0], atol=1e-10)


def test_flip_tta():
    from helpers_eval import RampNet, ramp_tta

    assert len(flip_axes_combinations(2)) == 4 and len(flip_axes_combinations(3)) == 8
    assert flip_axes_combinations(3, [0]) == [(), (0,)]
    # a flip-equivariant net: TTA must not change the probabilities
    net = PointwiseNet(3, out_channels=3).double().eval()
    image = torch.randn(1, 11, 7, 5, dtype=torch.float64)
    s3 = InferenceSettings(padding="same", depth=1, tile_size=(8, 8, 8))
    plain = predict_probabilities(image, net, s3)
    tta = predict_probabilities(image, net, replace(s3, tta=True))
    assert torch.allclose(plain, tta, atol=1e-6)
    assert torch.allclose(plain.sum(0), torch.ones(11, 7, 5, dtype=plain.dtype), atol=1e-6)
    # a net that ignores its input and answers a ramp: TTA averages the ramp with its mirror
    # images along exactly the TTA axes (closed form in numpy, one window covering the image)
    image = torch.zeros(1, 8, 12, dtype=torch.float64)
    s2 = InferenceSettings(padding="same", depth=1, tile_size=(8, 12), tta=True)
    for axes in ([0], [1], [0, 1]):
        got = predict_probabilities(image, RampNet(), replace(s2, tta_axes=tuple(axes)))[0].numpy()
        np.testing.assert_allclose(got, ramp_tta((8, 12), axes), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        flip_axes_combinations(2, [2])


def test_keep_largest_per_class():
    labels = torch.zeros(1, 12, 12, dtype=torch.long)
    labels[0, 0:4, 0:4] = 1  # largest class-1 component (16)
    labels[0, 8:10, 8:10] = 1  # small class-1 component (4): removed
    labels[0, 0:2, 8:12] = 2  # class 2, larger (8)
    labels[0, 10:12, 0:1] = 2  # class 2, smaller (2): removed
    out = keep_largest(labels, num_classes=3)
    expected = labels.clone()
    expected[0, 8:10, 8:10] = 0
    expected[0, 10:12, 0:1] = 0
    assert torch.equal(torch.as_tensor(out), expected)


def test_whole_image_tile_when_it_fits_the_memory_budget():
    """`inference.whole_image_mb`: a valid net takes the whole image as one tile when the estimated
    forward memory of its input fits; otherwise the configured tile; the logits are the same."""
    from pipeline.config import parse_config
    from pipeline.model.shapes import forward_bytes_per_voxel

    cfg = parse_config({"data": {"spatial_dims": 2}, "model": {"features": [4, 8], "padding": "valid"}})
    cfg.inference.tile_size = [16, 16]
    settings = InferenceSettings.from_config(cfg)
    assert settings.whole_image_voxels == int(2048 * 2**20 / forward_bytes_per_voxel([4, 8], 2))
    assert settings.output_tile((50, 37)) == (50, 37)
    fits = legal_input_size((50, 37), 1, "valid")
    small = replace(settings, whole_image_voxels=fits[0] * fits[1] - 1)
    assert small.output_tile((50, 37)) == (16, 16)  # one voxel over the budget: the configured tile
    assert replace(settings, whole_image_voxels=0).output_tile((50, 37)) == (16, 16)
    assert replace(settings, padding="same").output_tile((50, 37)) == (16, 16)

    net = small_unet(2, "valid", (4, 8), out_channels=2)
    x = torch.randn(1, 50, 37, dtype=torch.float64)
    whole = predict_logits(x, net, settings)
    tiled = predict_logits(x, net, small)
    assert whole.shape == tiled.shape == (2, 50, 37)
    torch.testing.assert_close(whole, tiled, atol=1e-10, rtol=0)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_channels_last_inference_gives_the_default_layout_answer(padding):
    """`inference.channels_last` runs the net channels-last (its first convolution sees a
    channels-last input) with the default layout's answer up to float rounding, and hands the net
    back with its weights as they were: a net under training leaves validation as it entered."""
    torch.manual_seed(0)
    net = UNet(3, 2, 3, (4, 8, 16), padding=padding, norm="instance").eval()
    image = torch.randn(2, 27, 22, 30)  # two channels: the input itself must be made channels-last
    settings = InferenceSettings(padding=padding, depth=2, tile_size=(16, 16, 16), channels_last=False)
    seen: list[bool] = []
    net.encoders[0][0].register_forward_pre_hook(lambda _m, args: seen.append(is_channels_last(args[0])))

    plain = predict_logits(image, net, settings)
    assert seen and not any(seen)
    seen.clear()
    fast = predict_logits(image, net, replace(settings, channels_last=True))
    assert seen and all(seen)
    assert torch.allclose(fast, plain, atol=1e-4)
    assert torch.equal(fast.argmax(0), plain.argmax(0))
    assert all(p.is_contiguous() for p in net.parameters())

    net.to(memory_format=torch.channels_last_3d)  # train.channels_last: the weights stay channels-last
    predict_logits(image, net, replace(settings, channels_last="auto"))
    assert is_channels_last(net.encoders[0][0].weight)


def test_channels_last_auto_is_for_torch_modules_on_the_cpu():
    net = UNet(2, 1, 2, (4, 8))
    assert wants_channels_last(net, "auto") and not wants_channels_last(net, False)
    assert not wants_channels_last(lambda x: x, "auto") and not wants_channels_last(lambda x: x, True)
    with pytest.raises(InputError, match="channels_last"):
        InferenceSettings(padding="valid", depth=1, tile_size=(8, 8), channels_last="yes")
