"""Whole-image prediction (pipeline.inference.whole_image): batches and dtypes, flip TTA, clean-up."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers.evaluation import PointwiseNet, small_unet

from pipeline.inference import (
    InferenceSettings,
    flip_axes_combinations,
    keep_largest,
    predict_logits,
    predict_probabilities,
)


def test_predict_logits_batch_and_device_dtype():
    net = small_unet(2, "valid", (4, 8, 16), out_channels=2)
    batch = torch.randn(2, 1, 30, 41, dtype=torch.float32)  # cast to the net's float64 inside
    out = predict_logits(batch, net, InferenceSettings(padding="valid", depth=2, tile_size=(16, 16), batch_size=5))
    assert out.shape == (2, 2, 30, 41) and out.dtype == torch.float64
    single = predict_logits(
        batch[1], net, InferenceSettings(padding="valid", depth=2, tile_size=(16, 16), batch_size=1)
    )
    assert torch.allclose(out[1], single, atol=1e-10)


def test_flip_tta():
    from helpers.evaluation import RampNet, ramp_tta

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
