"""The training step's speed options, one place for the trainer and the throughput benchmark.

`train.channels_last` (NHWC / NDHWC memory format, the layout oneDNN's direct convolutions
prefer), `train.bf16` (bfloat16 autocast of the forward pass; the loss stays float32) and
`train.compile` (`torch.compile` of the network). Which of them pays on which machine is measured
in benchmarks/README.md (`train_throughput.py --variants`): bf16 is on by default where the
hardware has it; channels-last and compile are switches (neither was faster in every configuration).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from pipeline.config import Switch, TrainConfig


def native_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX-BF16 (without them oneDNN emulates bf16 and the step gets slower)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu" and hasattr(torch.cpu, "get_capabilities"):
        caps = torch.cpu.get_capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return False


def use_bf16(setting: Switch, device: torch.device) -> bool:
    """`train.bf16`: on, off, or `auto` = where the hardware has native bf16 (`native_bf16`)."""
    return native_bf16(device) if setting == "auto" else bool(setting)


def step_autocast(device: torch.device, bf16: bool) -> Any:
    """bfloat16 autocast for the forward pass (CPU: oneDNN's AVX512-BF16 / AMX kernels), or nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def speed_summary(train: TrainConfig, device: torch.device) -> str:
    """The speed options in effect (`auto` resolved), as the trainer's describe line shows them:
    " (bf16, channels_last)", or "" when none is."""
    on = [
        name
        for name, active in (
            ("bf16", use_bf16(train.bf16, device)),
            ("channels_last", train.channels_last),
            ("compiled", train.compile),
        )
        if active
    ]
    return f" ({', '.join(on)})" if on else ""
