"""Training speed switches (pipeline.training.speed): `auto` resolves per device."""

from __future__ import annotations

import torch


def test_speed_switches_resolve_auto() -> None:
    from pipeline.model.layout import memory_format
    from pipeline.training.speed import native_bf16, use_bf16

    cpu = torch.device("cpu")
    caps = torch.cpu.get_capabilities()
    assert native_bf16(cpu) == bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    assert use_bf16("auto", cpu) == native_bf16(cpu)
    assert use_bf16(True, cpu) and not use_bf16(False, cpu)
    assert memory_format(3, True) == torch.channels_last_3d and memory_format(2, True) == torch.channels_last
    assert memory_format(2, False) == torch.contiguous_format
