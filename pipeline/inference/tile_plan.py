"""Where overlap-tile puts its tiles, and the stitching loop, for any array library.

The plan is integer arithmetic and the loop only slices and assigns, so the torch path
(`pipeline.inference.tiles.overlap_tile`) and the torch-free ONNX predictor
(`pipeline.predict.onnx_light`) run this same code; see `tiles` for why the layout is exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import InputError
from pipeline.model.shapes import legal_input_size, margin, output_size


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


def stitch_tiles(
    padded: Any,
    plan: TilePlan,
    forward: Callable[[list[Any]], Any],
    empty: Callable[[Any, tuple[int, ...]], Any],
    batch_size: int = 4,
    progress: bool = False,
) -> Any:
    """Logits (K, *plan.image_size) from a mirror-padded image (C, *plan.padded_size).

    `forward` maps a list of input tiles to their outputs (B, K, *plan.output_tile); `empty(pred,
    shape)` allocates the result like `pred` (torch: `pred.new_empty`, numpy: `np.empty`).
    """
    covered = tuple(p - 2 * plan.margin for p in plan.padded_size)
    out: Any = None

    def flush(corners: list[tuple[int, ...]], batch: list[Any]) -> None:
        nonlocal out
        pred = forward(batch)
        if tuple(pred.shape[2:]) != plan.output_tile or pred.shape[0] != len(batch):
            raise InputError(
                f"overlap-tile: the net returned shape {tuple(pred.shape)} for input tiles "
                f"{(len(batch), *batch[0].shape)}; a valid-padding U-Net must return spatial size "
                f"{plan.output_tile} here (is the net a 'same'-padding model, or is depth wrong?)"
            )
        if out is None:
            out = empty(pred, (pred.shape[1], *covered))
        for corner, tile in zip(corners, pred):
            region = tuple(slice(c, c + t) for c, t in zip(corner, plan.output_tile))
            out[(slice(None), *region)] = tile

    corners: list[tuple[int, ...]] = []
    batch: list[Any] = []
    tiles = plan.tiles()
    if progress:
        from pipeline.progress import progress

        tiles = progress(tiles, total=plan.num_tiles, desc="tiles", leave=False)
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
