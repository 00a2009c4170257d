"""The machine a run names (`cpu_name`), read from real /proc/cpuinfo-format files."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from pipeline.tracking.context import cpu_name

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9R45
stepping\t: 1

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9R45
"""

# aarch64 Linux: no "model name", no "cpu family"
ARM = """processor\t: 0
BogoMIPS\t: 243.75
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_x86_names_model_family_and_model(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text(X86)
    assert cpu_name(f) == "AMD EPYC 9R45 (family 26 model 2)"


def test_without_a_model_name_falls_back_to_the_platform(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text(ARM)
    expected = platform.processor() or platform.machine() or "unknown"
    assert cpu_name(f) == expected
    assert cpu_name(tmp_path / "absent") == expected


def test_this_machine_is_named_from_its_own_cpuinfo() -> None:
    real = Path("/proc/cpuinfo")
    if not real.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    names = [line.split(":", 1)[1].strip() for line in real.read_text().splitlines() if line.startswith("model name")]
    assert cpu_name() == cpu_name(real)
    if names:
        assert cpu_name().startswith(names[0])
