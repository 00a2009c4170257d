"""Deep supervision (nnU-Net's lever): a loss on every decoder level, not only the last.

Coarser decoder levels get their own 1x1 head during training only; the exported network is the
plain `UNet` (its `forward` never touches these heads). The label is shrunk to each level's size
with nearest-neighbour sampling, as nnU-Net does, and the level losses are weighted 1, 1/2, 1/4, ...
(halving with depth), normalised to sum 1.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.model.unet import _CONV, UNet


class DeepSupervisedNet(nn.Module):
    """The net plus one head per coarser decoder level; forward returns the logits of every
    level, finest first (the first is exactly `net(x)`)."""

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net
        dims, out_ch = net.spatial_dims, net.head.out_channels
        widths = [dec[0].out_channels for dec in net.decoders]  # coarsest first
        self.heads = nn.ModuleList(_CONV[dims](w, out_ch, kernel_size=1) for w in reversed(widths[:-1]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = self.net.decoder_features(x)
        finest = self.net.head(levels[-1])
        return [finest, *(head(f) for head, f in zip(self.heads, reversed(levels[:-1])))]


def level_weights(n: int) -> list[float]:
    """1, 1/2, 1/4, ... for n levels (finest first), normalised to sum 1."""
    raw = [0.5**i for i in range(n)]
    return [w / sum(raw) for w in raw]


def _resize_nearest(x: torch.Tensor | None, size: torch.Size) -> torch.Tensor | None:
    if x is None or x.shape[2:] == size:
        return x
    return F.interpolate(x.float(), size=size, mode="nearest-exact").to(x.dtype)


class DeepSupervisionLoss(nn.Module):
    """sum_i w_i * loss(logits_i, label shrunk to level i, weight shrunk to level i)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(
        self, outputs: list[torch.Tensor], label: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for w, out in zip(level_weights(len(outputs)), outputs):
            size = out.shape[2:]
            total = total + w * self.base(out, _resize_nearest(label, size), _resize_nearest(weight, size))
        return total
