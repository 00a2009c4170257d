"""Shape arithmetic of the U-Net, as plain functions the whole pipeline shares.

In 'valid' mode (Ronneberger et al. 2015) every 3x3 convolution loses one voxel per side, so an
input size is legal only if every max-pool sees an even size; the output is smaller than the input
by a constant margin per side. In 'same' mode the output equals the input and a size is legal when
it is divisible by 2**depth. Sizes are tuples, one entry per spatial dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipeline.errors import PipelineError

CONVS_PER_LEVEL = 2  # two 3x3 convolutions per level, each losing 1 voxel per side when unpadded
LOSS_PER_LEVEL = 2 * CONVS_PER_LEVEL  # voxels lost per level (both sides) in valid mode


class IllegalInputSize(PipelineError, ValueError):
    """An input size the network cannot process; the message names the nearest legal sizes."""


def _check_mode(padding: str) -> None:
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def margin(depth: int, padding: str = "valid") -> int:
    """Context lost per side (input - output) / 2; constant for a given depth."""
    _check_mode(padding)
    if padding == "same":
        return 0
    return (3 * LOSS_PER_LEVEL * 2**depth - 2 * LOSS_PER_LEVEL) // 2


def _bottom_input(n: int, depth: int) -> float:
    """Size entering the bottleneck for input n (valid mode); integral iff n is legal."""
    return (n - LOSS_PER_LEVEL * (2**depth - 1)) / 2**depth


def _valid_output(bottom_in: int, depth: int) -> int:
    return 2**depth * (bottom_in - LOSS_PER_LEVEL) - LOSS_PER_LEVEL * (2**depth - 1)


def _min_bottom_input(depth: int) -> int:
    b = LOSS_PER_LEVEL + 1
    while _valid_output(b, depth) < 1:
        b += 1
    return b


def _legal_1d(min_output: int, depth: int, padding: str) -> int:
    step = 2**depth
    if padding == "same":
        return max(step, math.ceil(min_output / step) * step)
    b = max(_min_bottom_input(depth), math.ceil((min_output + LOSS_PER_LEVEL * (step - 1)) / step) + LOSS_PER_LEVEL)
    return step * b + LOSS_PER_LEVEL * (step - 1)


def _nearest_legal(n: int, depth: int, padding: str) -> tuple[int | None, int]:
    above = _legal_1d(1, depth, padding)
    below = None
    while above < n:
        below, above = above, above + 2**depth
    return below, above


def check_input_size(input_size: Sequence[int], depth: int, padding: str = "valid") -> None:
    """Raise IllegalInputSize naming the nearest legal sizes if any dimension is illegal."""
    _check_mode(padding)
    bad = []
    for axis, n in enumerate(input_size):
        if padding == "same":
            legal = n >= 1 and n % 2**depth == 0
        else:
            b = _bottom_input(n, depth)
            legal = b == int(b) and int(b) >= _min_bottom_input(depth)
        if not legal:
            below, above = _nearest_legal(int(n), depth, padding)
            near = f"{below} or {above}" if below is not None else f"{above} (the smallest)"
            bad.append(f"axis {axis}: {n} (nearest legal: {near})")
    if bad:
        rule = (
            f"divisible by 2**depth = {2**depth}"
            if padding == "same"
            else f"of the form {2**depth}*k + {LOSS_PER_LEVEL * (2**depth - 1)}"
        )
        raise IllegalInputSize(
            f"input size {tuple(input_size)} is illegal for a depth-{depth} U-Net with {padding!r} padding "
            f"(each size must be {rule}): " + "; ".join(bad)
        )


def output_size(input_size: Sequence[int], depth: int, padding: str = "valid") -> tuple[int, ...]:
    """Spatial output size of the network for a (legal) input size."""
    check_input_size(input_size, depth, padding)
    if padding == "same":
        return tuple(int(n) for n in input_size)
    return tuple(_valid_output(int(_bottom_input(n, depth)), depth) for n in input_size)


def legal_input_size(min_output: Sequence[int], depth: int, padding: str = "valid") -> tuple[int, ...]:
    """Smallest legal input size whose output is at least `min_output` in every dimension."""
    _check_mode(padding)
    return tuple(_legal_1d(int(m), depth, padding) for m in min_output)


# Peak memory of a no-grad forward pass, bytes per input voxel per first-level width: measured as
# the peak RSS rise of valid-padding U-Nets at 2D 700² (f0 32, 64) and 1084² (f0 16) -> 25-34, and
# 3D 124³ (f0 16) and 92³ (f0 32) -> 11.5-11.7 (torch 2.13 CPU, oneDNN), rounded up.
FORWARD_BYTES_PER_VOXEL_PER_WIDTH = {2: 36, 3: 14}


def forward_bytes_per_voxel(features: Sequence[int], spatial_dims: int) -> float:
    """Estimated peak bytes per input voxel of one inference forward pass: what a tile size is
    budgeted with (the skips and the decoder's concatenations at full resolution dominate)."""
    if spatial_dims not in FORWARD_BYTES_PER_VOXEL_PER_WIDTH:
        raise IllegalInputSize(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return float(FORWARD_BYTES_PER_VOXEL_PER_WIDTH[spatial_dims] * int(features[0]))


def fit_to_size(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Centre-crop or mirror-pad a (C, *spatial) array to `size` (the overlap-tile padding)."""
    out = image
    for axis, n in enumerate(size, start=1):
        cur = out.shape[axis]
        if cur > n:
            start = (cur - n) // 2
            out = np.take(out, np.arange(start, start + n), axis=axis)
        elif cur < n:
            before = (n - cur) // 2
            pad = [(0, 0)] * out.ndim
            pad[axis] = (before, n - cur - before)
            out = np.pad(out, pad, mode="reflect" if cur > 1 else "edge")
    return np.ascontiguousarray(out, dtype=np.float32)
