"""Overlap-tile inference for 'valid' padding: the strategy of the U-Net paper's Fig. 2.

A valid-padding U-Net predicts a centre region `margin` voxels smaller per side than its input, so
the image is mirror-padded by that margin and cut into input tiles whose *outputs* butt together
with no gaps and no blending. Max-pooling makes the network translation-equivariant only for shifts
that are multiples of 2**depth, so the tile stride is the largest multiple of 2**depth that fits
in the tile's output. Consecutive outputs then overlap by fewer than 2**depth voxels, and on that
overlap they hold identical values (the same voxel, seen with the same pooling phase), so the
stitched result is exactly what one forward pass over the whole mirror-padded image would give.

Instead of shifting the last tile back (which would break the pooling phase), the mirror padding
on the high side is extended so the last tile still fits; its surplus output is cropped away.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from pipeline.errors import InputError
from pipeline.inference.tile_plan import TilePlan, plan_tiles, stitch_tiles

__all__ = ["Net", "TilePlan", "mirror_pad", "net_device_dtype", "overlap_tile", "plan_tiles"]

Net = Callable[[torch.Tensor], torch.Tensor]  # a torch module, a TorchScript module or an ONNX Runtime wrapper


def _reflect_index(n: int, low: int, high: int, device: torch.device) -> torch.Tensor:
    """Source index of every padded position for mirror ('reflect', edge not repeated) padding.

    The reflection repeats periodically (period 2(n-1)) when the pad is wider than the image, as
    numpy's `np.pad(mode="reflect")` does, so even an image smaller than the margin is padded by
    mirroring, never by zeros; a 1-voxel axis has nothing to mirror and is replicated.
    """
    idx = torch.arange(-low, n + high, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def mirror_pad(x: torch.Tensor, pad_low: Sequence[int], pad_high: Sequence[int]) -> torch.Tensor:
    """Mirror-pad the trailing spatial axes of x (any leading axes) by per-axis low/high amounts."""
    first = x.dim() - len(pad_low)
    for axis, (lo, hi) in enumerate(zip(pad_low, pad_high)):
        d = first + axis
        if lo or hi:
            x = x.index_select(d, _reflect_index(x.shape[d], int(lo), int(hi), x.device))
    return x


def net_device_dtype(net: Net, fallback: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and float dtype of a torch module's parameters; the input's for other callables."""
    if isinstance(net, torch.nn.Module):
        for p in itertools.chain(net.parameters(), net.buffers()):
            if p.is_floating_point():
                return p.device, p.dtype
    dtype = fallback.dtype if fallback.is_floating_point() else torch.float32
    return fallback.device, dtype


@torch.no_grad()
def overlap_tile(
    image: torch.Tensor,
    net: Net,
    depth: int,
    tile_output: Sequence[int],
    batch_size: int = 4,
    progress: bool = False,
) -> torch.Tensor:
    """Logits (K, *spatial) for one image (C, *spatial) with a valid-padding net.

    `net` maps (B, C, *input_tile) to (B, K, *output_tile); it runs on batches of up to
    `batch_size` tiles. The result lives on the net's device.
    """
    if image.dim() < 3:
        raise InputError(f"expected an image (C, *spatial) with 2 or 3 spatial axes, got shape {tuple(image.shape)}")
    image = torch.as_tensor(image)  # a plain tensor: no MetaTensor bookkeeping per tile
    device, dtype = net_device_dtype(net, image)
    image = image.to(device=device, dtype=dtype)
    plan = plan_tiles(image.shape[1:], depth, tile_output)
    padded = mirror_pad(image, [plan.margin] * len(plan.image_size), plan.pad_high)

    def forward(batch: list[torch.Tensor]) -> torch.Tensor:
        pred = net(torch.stack(batch))
        return torch.as_tensor(pred[0] if isinstance(pred, (tuple, list)) else pred)

    return stitch_tiles(padded, plan, forward, lambda pred, shape: pred.new_empty(shape), batch_size, progress)
