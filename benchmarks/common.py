"""Shared helpers for the benchmark scripts: devices, timing, peak memory, tables, the JSON line.

Benchmarks print numbers, they are not tests. Every script ends with exactly one JSON object on
its last line (`emit_result`) so a collector can `tail -n 1` each of them.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/x.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(REPO))

# the same names a training run's MLflow tags `host_cpu` / `host_cores` hold
from pipeline.tracking.context import cpu_cores, cpu_name  # noqa: E402

# ----------------------------------------------------------------------------- arguments, machine


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def base_parser(description: str) -> argparse.ArgumentParser:
    """`--quick` and `--device`, shared by every script."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="reduced run (< 60 s on the 2-core machine), same code path")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    return p


def setup_torch(device: str | None, threads: int | None) -> str:
    """Resolve the device, fix the thread count and seed; returns the device string."""
    import torch

    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but torch.cuda.is_available() is False")
    torch.set_num_threads(threads or cpu_cores())
    torch.manual_seed(0)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # the same for every model compared
    return device


def machine_info(device: str = "cpu") -> str:
    """One line naming the machine, so a table can be traced to where it ran."""
    import torch

    cpu = cpu_name()
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    line = f"{cpu}, {cpu_cores()} cores{mem}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.startswith("cuda"):
        line += f"; {torch.cuda.get_device_name(0)}"
    return line


def shared_data_dir() -> Path:
    """`$UNET_SHARED_DATA`, default `<repo>/../shared/data` (the real datasets, never copied in)."""
    return Path(os.environ.get("UNET_SHARED_DATA", REPO.parent / "shared" / "data"))


# ----------------------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_calls(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of fn after `warmup` untimed ones (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def time_until(
    fn: Callable[[], Any], device: str, warmup: int, min_steps: int, min_seconds: float, max_steps: int
) -> tuple[int, float]:
    """Run fn at least `min_steps` times and until `min_seconds` passed (at most `max_steps`).

    Returns (steps, seconds) of the timed part: throughput = steps / seconds.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    steps, t0 = 0, time.perf_counter()
    while steps < max_steps and (steps < min_steps or time.perf_counter() - t0 < min_seconds):
        fn()
        sync(device)
        steps += 1
    return steps, time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def geometric_mean(xs: Iterable[float]) -> float:
    xs = [float(x) for x in xs]
    if not xs or any(x <= 0 for x in xs):
        return float("nan")
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


# ----------------------------------------------------------------------------- memory


def _status_kb(field: str) -> int | None:
    try:
        m = re.search(rf"{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux >= 4.0: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Give freed heap back to the OS so the next measurement starts from a clean RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of the code inside the `with` block.

    CPU: the process's peak RSS (VmHWM, reset at entry via /proc/self/clear_refs; if that is not
    possible, `resource.getrusage` max RSS, which is monotone over the process, and `reset_ok` is
    False). `delta_mb` is the peak above the RSS at entry -- the block's own footprint.
    CUDA: `torch.cuda.max_memory_allocated` after resetting the peak stats.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.start_mb = self.peak_mb = self.delta_mb = float("nan")
        self.cuda_peak_mb: float | None = None
        self.reset_ok = False

    def __enter__(self) -> PeakMemory:
        _trim_heap()
        self.reset_ok = _reset_peak_rss()
        self.start_mb = (_status_kb("VmRSS") or 0) / 1024
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kb("VmHWM") if self.reset_ok else None
        if hwm is None:
            import resource

            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        self.peak_mb = hwm / 1024
        self.delta_mb = self.peak_mb - self.start_mb
        if self.device.startswith("cuda"):
            import torch

            sync(self.device)
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    def describe(self) -> str:
        """The memory cell of a table: GPU peak on CUDA, else the block's RSS peak above its start."""
        if self.cuda_peak_mb is not None:
            return f"{self.cuda_peak_mb:,.0f}"
        return f"{self.delta_mb:,.0f}" if self.reset_ok else f"{self.peak_mb:,.0f} (process max)"


def memory_header(device: str) -> str:
    return "peak GPU alloc (MiB)" if device.startswith("cuda") else "peak RSS above start (MiB)"


# ----------------------------------------------------------------------------- output


def fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 10**-(digits)):
            return f"{x:.{digits}g}"
        return f"{x:,.{digits}f}"
    return str(x)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def emit_result(metric: str, ours: float, baseline: float, unit: str, **extra: Any) -> dict[str, Any]:
    """Print the one-line JSON summary; it must be the script's very last line of output.
    `extra` adds keys (e.g. `peer={"name": ..., "mean_dice": ...}`) after the standard ones."""
    ratio = ours / baseline if baseline and not math.isnan(baseline) else float("nan")
    record = {
        "metric": metric,
        "ours": _json_num(ours),
        "baseline": _json_num(baseline),
        "ratio": _json_num(ratio),
        "unit": unit,
        **extra,
    }
    sys.stderr.flush()
    print(json.dumps(record), flush=True)
    return record


def _json_num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, 6)


# ----------------------------------------------------------------------------- shared inputs and baselines


def isbi_slice(size: int | None = None) -> tuple[Any, str]:
    """(1, 512, 512) z-scored ISBI 2012 slice 0 (random when the shared data is absent), centre-cropped
    to `size` x `size` when given; returns (tensor, a line saying what it is)."""
    import numpy as np
    import torch

    path = shared_data_dir() / "isbi2012-em" / "images" / "slice_00.png"
    if path.is_file():
        from PIL import Image

        arr = np.asarray(Image.open(path), dtype=np.float32)
        source = f"ISBI 2012 {path.name}"
    else:
        arr = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
        source = "random 512x512 (shared ISBI data not found)"
    if size is not None:
        lo = [(n - size) // 2 for n in arr.shape]
        arr = arr[lo[0] : lo[0] + size, lo[1] : lo[1] + size]
        source += f", centre {size}x{size}"
    arr = (arr - arr.mean()) / (arr.std() + 1e-8)
    return torch.from_numpy(np.ascontiguousarray(arr))[None], source


def matched_basic_unet(dims: int, features: Sequence[int], norm: str, out_channels: int = 2) -> Any:
    """MONAI `BasicUNet` laid out as our U-Net at these widths (5 of them: BasicUNet has 4 poolings):
    ReLU, the same normalisation, no dropout, transposed-conv upsampling."""
    from monai.networks.nets import BasicUNet

    if len(features) != 5:
        raise SystemExit(f"error: BasicUNet has 4 poolings; it needs 5 widths, got {list(features)}")
    monai_norm: Any = None if norm == "none" else ((norm, {"affine": True}) if norm == "instance" else norm)
    return BasicUNet(
        spatial_dims=dims,
        in_channels=1,
        out_channels=out_channels,
        features=(*features, features[0]),
        act=("relu", {"inplace": True}),
        norm=monai_norm,
        dropout=0.0,
        upsample="deconv",
    )
