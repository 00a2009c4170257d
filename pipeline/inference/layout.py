"""Eager inference in channels-last (`inference.channels_last`).

oneDNN's CPU convolutions run fastest on channels-last tensors; torch's default layout makes them
reorder every activation. The whole forward pass is 1.4-1.8x faster channels-last on this CPU, 2D
and 3D, valid and same padding, every normalisation (benchmarks/README.md, "Channels-last
inference"), provided instance norm keeps the layout (`pipeline.model.norms`). `auto` turns it on
for torch modules on the CPU; GPUs and other callables (ONNX Runtime, the MONAI bundle's inferer)
run as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from pipeline.inference.tiles import Net, net_device_dtype
from pipeline.model.layout import is_channels_last, memory_format

if TYPE_CHECKING:  # the exported bundle's copy of this module runs without pydantic
    from pipeline.config import Switch


class ChannelsLastInput(nn.Module):
    """Hands `net` its input in channels-last (an image with several channels arrives plainly contiguous)."""

    def __init__(self, net: nn.Module, fmt: torch.memory_format) -> None:
        super().__init__()
        self.net = net
        self.fmt = fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.fmt))


def wants_channels_last(net: Net, setting: Switch) -> bool:
    """`inference.channels_last` for this net: on, off, or `auto` = a torch module on the CPU."""
    if not isinstance(net, nn.Module) or setting is False:
        return False
    return setting is True or net_device_dtype(net, torch.empty(0))[0].type == "cpu"


@contextlib.contextmanager
def channels_last(net: Net, spatial_dims: int, setting: Switch) -> Iterator[Net]:
    """`net` running channels-last for the duration of the block, when `setting` asks for it.

    Its weights are converted in place (the first convolution picks its layout from them when the
    input has one channel) and converted back afterwards, so a net being trained leaves validation
    as it entered. A net whose weights are already channels-last (`train.channels_last`) keeps them.
    """
    if not wants_channels_last(net, setting):
        yield net
        return
    assert isinstance(net, nn.Module)
    fmt = memory_format(spatial_dims, True)
    already = any(is_channels_last(p) for p in net.parameters() if p.dim() == spatial_dims + 2)
    if not already:
        net.to(memory_format=fmt)
    try:
        yield ChannelsLastInput(net, fmt)
    finally:
        if not already:
            net.to(memory_format=torch.contiguous_format)
