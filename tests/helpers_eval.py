"""Small nets and arrays shared by the inference, metrics and evaluate tests."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.model import UNet


def small_unet(spatial_dims: int, padding: str = "valid", features=(4, 8, 16), out_channels: int = 3, seed: int = 0,
               in_channels: int = 1, dtype=torch.float64) -> UNet:
    """A tiny random U-Net in eval mode (float64 so equality checks can be tight)."""
    torch.manual_seed(seed)
    return UNet(spatial_dims, in_channels, out_channels, list(features), padding=padding).to(dtype).eval()


def reflect_pad_np(image: np.ndarray, low: int, high: list[int]) -> np.ndarray:
    """numpy's mirror padding of the spatial axes of (C, *spatial): an independent reference."""
    return np.pad(image, [(0, 0)] + [(low, h) for h in high], mode="reflect")


class PointwiseNet(torch.nn.Module):
    """A 1x1(x1) convolution with constant weights: no context, so any correct tiling must reproduce
    its whole-image output exactly, whatever the window weights."""

    def __init__(self, spatial_dims: int, in_channels: int = 1, out_channels: int = 2, weight: float = 0.5, bias: float = 0.1):
        super().__init__()
        conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
        self.conv = conv(in_channels, out_channels, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.fill_(weight)
            for k in range(out_channels):
                self.conv.bias[k] = bias * (k + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
