"""Map a function over independent cases in worker processes, with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from pipeline.progress import progress

T = TypeVar("T")


def _init_worker() -> None:
    # each worker handles one case at a time: one torch thread each keeps 2 cores from thrashing
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def parallel_map(fn: Callable[[Any], T], items: Sequence[Any], num_workers: int, desc: str) -> list[T]:
    """`[fn(x) for x in items]` in order, in `num_workers` processes (0 or 1 = in this process)."""
    bar_kwargs = {"total": len(items), "desc": desc, "unit": "case", "file": sys.stderr, "dynamic_ncols": True}
    workers = min(num_workers, len(items))
    if workers <= 1:
        return [fn(x) for x in progress(items, **bar_kwargs)]
    # fork: workers inherit the imported modules (MONAI takes seconds to import); Linux only
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method), initializer=_init_worker) as pool:
        results: Iterable[T] = pool.map(fn, items, chunksize=1)
        return list(progress(results, **bar_kwargs))
