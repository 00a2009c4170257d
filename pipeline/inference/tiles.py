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
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from pipeline.errors import InputError
from pipeline.model import legal_input_size, margin, output_size

Net = Callable[[torch.Tensor], torch.Tensor]  # a torch module, a TorchScript module or an ONNX Runtime wrapper


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles go for one image size (all sizes per spatial axis)."""

    image_size: tuple[int, ...]
    margin: int  # mirror padding on the low side; context lost per side by the net
    input_tile: tuple[int, ...]  # legal network input size
    output_tile: tuple[int, ...]  # what the net returns for `input_tile`
    stride: tuple[int, ...]  # multiple of 2**depth, <= output_tile
    starts: tuple[tuple[int, ...], ...]  # per axis: tile start offsets in the padded image
    pad_high: tuple[int, ...]  # mirror padding on the high side (>= margin)

    @property
    def padded_size(self) -> tuple[int, ...]:
        return tuple(n + self.margin + h for n, h in zip(self.image_size, self.pad_high))

    @property
    def num_tiles(self) -> int:
        return math.prod(len(s) for s in self.starts)

    def tiles(self) -> Iterator[tuple[int, ...]]:
        """Start corner of every tile, in the padded image (= of its output, in output space)."""
        return itertools.product(*self.starts)


def plan_tiles(image_size: Sequence[int], depth: int, tile_output: Sequence[int]) -> TilePlan:
    """Tile layout whose outputs cover `image_size` exactly, with phase-aligned starts.

    `tile_output` is the requested output size per tile; it is shrunk to the image where the image
    is smaller (no work on pure padding) and rounded up to the next legal output size, never below
    2**depth so the stride is at least one pooling period.
    """
    image_size = tuple(int(n) for n in image_size)
    if len(tile_output) != len(image_size):
        raise InputError(
            f"tile size {tuple(tile_output)} has {len(tile_output)} axes, image {image_size} has {len(image_size)}"
        )
    if any(n < 1 for n in image_size):
        raise InputError(f"image size {image_size} has an empty axis")
    step = 2**depth
    wanted = [max(step, min(int(t), n)) for t, n in zip(tile_output, image_size)]
    input_tile = legal_input_size(wanted, depth, "valid")
    out_tile = output_size(input_tile, depth, "valid")
    m = margin(depth, "valid")
    stride = tuple((t // step) * step for t in out_tile)
    starts, pad_high = [], []
    for n, t, s in zip(image_size, out_tile, stride):
        count = 1 if n <= t else 1 + math.ceil((n - t) / s)
        starts.append(tuple(k * s for k in range(count)))
        covered = (count - 1) * s + t
        pad_high.append(covered - n + m)
    return TilePlan(image_size, m, tuple(input_tile), tuple(out_tile), stride, tuple(starts), tuple(pad_high))


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
    covered = tuple(p - 2 * plan.margin for p in plan.padded_size)
    out: torch.Tensor | None = None

    def flush(corners: list[tuple[int, ...]], batch: list[torch.Tensor]) -> None:
        nonlocal out
        pred = net(torch.stack(batch))
        if isinstance(pred, (tuple, list)):
            pred = pred[0]
        pred = torch.as_tensor(pred)
        if tuple(pred.shape[2:]) != plan.output_tile or pred.shape[0] != len(batch):
            raise InputError(
                f"overlap-tile: the net returned shape {tuple(pred.shape)} for input tiles "
                f"{tuple(torch.stack(batch).shape)}; "
                f"a depth-{depth} valid-padding U-Net must return spatial size {plan.output_tile} "
                "(is the net a 'same'-padding model, or is depth wrong?)"
            )
        if out is None:
            out = pred.new_empty((pred.shape[1], *covered))
        for corner, tile in zip(corners, pred):
            region = tuple(slice(c, c + t) for c, t in zip(corner, plan.output_tile))
            out[(slice(None), *region)] = tile

    corners: list[tuple[int, ...]] = []
    batch: list[torch.Tensor] = []
    tiles = plan.tiles()
    if progress:
        from tqdm import tqdm

        tiles = tqdm(tiles, total=plan.num_tiles, desc="tiles", leave=False)
    for corner in tiles:
        region = tuple(slice(c, c + t) for c, t in zip(corner, plan.input_tile))
        corners.append(corner)
        batch.append(padded[(slice(None), *region)])
        if len(batch) == batch_size:
            flush(corners, batch)
            corners, batch = [], []
    if batch:
        flush(corners, batch)
    assert out is not None
    return out[(slice(None), *(slice(0, n) for n in plan.image_size))]
