"""Patches read lazily from the preprocessed arrays: memory flat in the number of cases.

The preprocess stage writes every case as `.npy` arrays plus a sample of its foreground and
background voxel locations (`<id>_locations.npy`: the foreground's flat indices, then the
background's; the manifest says how many are foreground), as nnU-Net keeps its class locations. A
training sample picks a centre from those locations and reads only the window around it from a
memory-mapped array (and one entry of the memory-mapped locations), so a patch costs a patch's
worth of IO whatever the volume size, and no case is ever held whole unless the RAM cache
(`train.cache_gb`) has room for it.

Geometry matches what mirror-padding the whole volume and cropping would give: the window lives in
a virtual volume padded by `margin` on each side (the valid net's context, mirrored as overlap-tile
inference mirrors it) and up to the patch size, and indices outside the source are reflected
('symmetric', numpy's convention), so no padded copy of the volume is ever made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import Randomizable, Transform

# per case and kind (foreground / background): enough distinct centres for any patch sampler,
# small on disk (8 bytes each) even for 512^3 volumes
MAX_LOCATIONS = 100_000
# share of the memory available at start that the default RAM cache may fill
DEFAULT_CACHE_FRACTION = 0.3


def sample_locations(label: np.ndarray, seed: int, limit: int = MAX_LOCATIONS) -> tuple[np.ndarray, int]:
    """Flat indices of foreground (label > 0) voxels, then of background ones, each at most
    `limit`, drawn uniformly without replacement and sorted; returns (indices, number of fg)."""
    flat = np.asarray(label).reshape(-1)
    rng = np.random.default_rng(seed)
    parts = []
    for where in (flat > 0, flat == 0):
        idx = np.flatnonzero(where)
        if idx.size > limit:
            idx = np.sort(rng.choice(idx, limit, replace=False))
        parts.append(idx.astype(np.int64))
    return np.concatenate(parts), int(parts[0].size)


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cache_budget_bytes(cache_gb: float | None, processes_per_node: int = 1) -> int:
    """`train.cache_gb` in bytes; None = a fraction of the memory free now, shared by the node's ranks."""
    if cache_gb is not None:
        return int(cache_gb * 1024**3)
    return int(DEFAULT_CACHE_FRACTION * available_memory_bytes() / max(1, processes_per_node))


@dataclass
class StoredCase:
    """One preprocessed case on disk: its arrays by key, spatial shape and sampled locations."""

    id: str
    arrays: dict[str, Path]  # key (image, label, weight) -> .npy
    shape: tuple[int, ...]
    locations: Path  # .npy: n_fg foreground flat indices, then background ones
    n_fg: int


class CaseStore:
    """The training cases: read windows from memory-mapped `.npy`, or from RAM for cached cases.

    Cases are cached whole in split order until `cache_bytes` is used up; the rest are opened
    with `mmap_mode="r"` per read and closed again, so resident memory does not grow with the
    number of cases read (a long-lived map would keep every touched page counted as ours).
    """

    def __init__(self, cases: Sequence[StoredCase], cache_bytes: int = 0) -> None:
        self.cases = list(cases)
        self._ram: dict[tuple[int, str], np.ndarray] = {}
        used = 0
        for i, case in enumerate(self.cases):
            files = {**case.arrays, "locations": case.locations}
            size = sum(p.stat().st_size for p in files.values())
            if used + size > cache_bytes:
                break
            for key, path in files.items():
                self._ram[(i, key)] = np.load(path)
            used += size
        self.cached_cases = len({i for i, _ in self._ram})
        self.cached_bytes = used

    def __len__(self) -> int:
        return len(self.cases)

    def _array(self, i: int, key: str) -> np.ndarray:
        arr = self._ram.get((i, key))
        if arr is None:
            path = self.cases[i].locations if key == "locations" else self.cases[i].arrays[key]
            arr = np.load(path, mmap_mode="r")
        return arr

    def pick_location(self, i: int, foreground: bool, rng: np.random.RandomState) -> int:
        """A random stored flat index of case `i`, foreground or background (the other kind when
        the case has none of the asked one)."""
        n_fg = self.cases[i].n_fg
        locations = self._array(i, "locations")
        n_bg = locations.shape[0] - n_fg
        if (foreground and n_fg) or not n_bg:
            return int(locations[rng.randint(n_fg)])
        return int(locations[n_fg + rng.randint(n_bg)])

    def read_window(self, i: int, key: str, index: Sequence[np.ndarray]) -> np.ndarray:
        """`array[:, index[0], index[1], ...]` (outer indexing) reading only the bounding slab."""
        arr = self._array(i, key)
        lo = [int(ix.min()) for ix in index]
        slab = np.asarray(arr[(slice(None), *(slice(a, int(ix.max()) + 1) for a, ix in zip(lo, index)))])
        local = [ix - a for a, ix in zip(lo, index)]
        if all(
            ix.size == s and (ix.size < 2 or bool(np.all(np.diff(ix) == 1))) for ix, s in zip(local, slab.shape[1:])
        ):
            return np.ascontiguousarray(slab)  # plain window: no reflection
        return slab[np.ix_(np.arange(slab.shape[0]), *local)]


def reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices into a length-`n` axis under numpy's 'symmetric' padding (edge repeated), any distance out."""
    period = 2 * n
    index = np.mod(index, period)
    return np.where(index >= n, period - 1 - index, index)


class RandPatchd(Randomizable, Transform):
    """`{"case": i}` -> `{key: (C, *input_size) array}`: a foreground/background-balanced window.

    With probability `pos` the centre is a stored foreground location, else a background one
    (either, when a case has none of the other), as MONAI's `RandCropByPosNegLabeld` picks it; the
    window is clamped inside the virtual padded volume (margin mirrored on each side, then padded
    symmetrically up to `input_size`, as `BorderPad` + `SpatialPad` would).
    """

    def __init__(
        self, store: CaseStore, keys: Sequence[str], input_size: Sequence[int], margin: int, pos: float
    ) -> None:
        self.store = store
        self.keys = tuple(keys)
        self.input_size = tuple(int(s) for s in input_size)
        self.margin = int(margin)
        self.pos = float(pos)

    def randomize(self, data: Any = None) -> None:  # draws happen in __call__, from self.R
        pass

    def window(self, i: int) -> list[np.ndarray]:
        """Source indices per spatial axis of a random window of case `i`."""
        shape = self.store.cases[i].shape
        centre = np.unravel_index(self.store.pick_location(i, self.R.rand() < self.pos, self.R), shape)
        index = []
        for c, n, size in zip(centre, shape, self.input_size):
            padded = max(n + 2 * self.margin, size)
            before = self.margin + (padded - n - 2 * self.margin) // 2
            start = min(max(int(c) + before - size // 2, 0), padded - size)
            index.append(reflect(np.arange(start, start + size) - before, n))
        return index

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        i = int(data["case"])
        index = self.window(i)
        out = {k: v for k, v in data.items() if k != "case"}
        out["id"] = self.store.cases[i].id
        for key in self.keys:
            out[key] = self.store.read_window(i, key, index)
        return out
