"""Inference settings (pipeline.inference.settings): the whole image as one tile when it fits the memory budget."""

from __future__ import annotations

from dataclasses import replace

import torch
from helpers.evaluation import small_unet

from pipeline.inference import InferenceSettings, predict_logits
from pipeline.model import legal_input_size


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
