"""Sliding-window inference (pipeline.inference.windows): seam-free blending, any size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.evaluation import PointwiseNet, small_unet

from pipeline.inference import InferenceSettings, predict_logits


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
