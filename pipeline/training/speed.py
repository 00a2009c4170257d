"""The training step's speed options, one place for the trainer and the throughput benchmark.

`train.channels_last` (NHWC / NDHWC memory format, the layout oneDNN's direct convolutions
prefer), `train.bf16` (bfloat16 autocast of the forward pass; the loss stays float32) and
`train.compile` (`torch.compile` of the network). Which of them pays on which machine is measured
in benchmarks/README.md (`train_throughput.py --variants`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def memory_format(spatial_dims: int, channels_last: bool) -> torch.memory_format:
    """channels_last (2D) / channels_last_3d (3D) when asked for, else torch's default layout."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def step_autocast(device: torch.device, bf16: bool) -> Any:
    """bfloat16 autocast for the forward pass (CPU: oneDNN's AVX512-BF16 / AMX kernels), or nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
