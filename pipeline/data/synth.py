"""The embedded default dataset: small, deterministic, byte-for-byte reproducible.

Objects of two classes on a smooth noisy background: 1 "round" (circles / spheres) and
2 "angular" (squares / cubes, triangles / triangular prisms, crosses), each class with its own
mean intensity, several per image, some placed touching (same-class neighbours keep a one-voxel
background gap, as touching cells do in the U-Net paper). Small enough that a tiny U-Net learns
it on 2 CPU cores in about a minute.

Determinism: case i draws from `numpy.random.default_rng([seed, i])` (independent of the number
of cases), and files are written by SimpleITK, whose NIfTI gzip stream has a zero timestamp.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.canonical import DATASET_JSON, build_dataset_json, dumps, image_relpath, label_relpath
from pipeline.errors import InputError

LABELS = ["background", "round", "angular"]
DEFAULTS = {2: {"cases": 40, "size": (96, 96)}, 3: {"cases": 20, "size": (40, 40, 40)}}
# intensities (a.u., stored as int16): background, round, angular
BG_MEAN, BG_SMOOTH_AMP, NOISE_SD = 60.0, 15.0, 12.0
CLASS_MEAN = {1: 180.0, 2: 120.0}
OBJECT_JITTER = 10.0


def _grid(size: tuple[int, ...]) -> list[np.ndarray]:
    return list(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size], indexing="ij"))


def _shape_mask(kind: str, grid: list[np.ndarray], centre: np.ndarray, r: float, theta: float) -> np.ndarray:
    """A boolean mask of one object; the in-plane (x, y) pose is rotated by `theta`."""
    dx, dy = grid[0] - centre[0], grid[1] - centre[1]
    u = math.cos(theta) * dx + math.sin(theta) * dy
    v = -math.sin(theta) * dx + math.cos(theta) * dy
    w = grid[2] - centre[2] if len(grid) == 3 else None
    if kind == "round":
        dist2 = dx**2 + dy**2 + (w**2 if w is not None else 0.0)
        return dist2 <= r**2
    if kind == "square":
        s = 0.8 * r
        m = (np.abs(u) <= s) & (np.abs(v) <= s)
        return m & (np.abs(w) <= s) if w is not None else m
    if kind == "triangle":  # equilateral, circumradius r; a prism in 3D
        m = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = theta + math.pi / 2 + k * 2 * math.pi / 3
            m &= (math.cos(a) * dx + math.sin(a) * dy) >= -0.5 * r
        return m & (np.abs(w) <= 0.7 * r) if w is not None else m
    if kind == "cross":
        t = max(r / 3.0, 1.5)
        if w is None:
            return ((np.abs(u) <= r) & (np.abs(v) <= t)) | ((np.abs(v) <= r) & (np.abs(u) <= t))
        bars = [
            (np.abs(u) <= r) & (np.abs(v) <= t) & (np.abs(w) <= t),
            (np.abs(v) <= r) & (np.abs(u) <= t) & (np.abs(w) <= t),
            (np.abs(w) <= r) & (np.abs(u) <= t) & (np.abs(v) <= t),
        ]
        return bars[0] | bars[1] | bars[2]
    raise InputError(kind)


def _place_objects(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    """A label map with several non-overlapping objects, some touching."""
    dims = len(size)
    grid = _grid(size)
    label = np.zeros(size, np.uint8)
    n_objects = int(rng.integers(5, 9)) if dims == 2 else int(rng.integers(3, 6))
    r_lo, r_hi = (6.0, 12.0) if dims == 2 else (5.0, 8.0)
    centres: list[tuple[np.ndarray, float]] = []
    for _ in range(n_objects):
        cls = int(rng.integers(1, 3))
        kind = "round" if cls == 1 else ["square", "triangle", "cross"][int(rng.integers(0, 3))]
        r = float(rng.uniform(r_lo, r_hi))
        theta = float(rng.uniform(0, math.pi / 2)) if dims == 2 else float(rng.choice([0.0, math.pi / 4]))
        # objects of another class may touch this one; same-class ones keep a 1-voxel gap
        blocked = (label != 0) & (label != cls) | ndimage.binary_dilation(label == cls)
        touch = bool(centres) and rng.random() < 0.6
        placed = None
        if touch:  # slide outwards from a previous object until there is no overlap
            c0, r0 = centres[int(rng.integers(0, len(centres)))]
            direction = rng.normal(size=dims)
            direction /= np.linalg.norm(direction)
            for step in np.arange(0.5 * (r0 + r), 2.0 * (r0 + r) + 2, 0.5):
                c = c0 + step * direction
                if np.any(c - r < 1) or np.any(c + r > np.asarray(size) - 2):
                    break
                m = _shape_mask(kind, grid, c, r, theta)
                if not (m & blocked).any():
                    placed = (c, m)
                    break
        for _attempt in range(100 if placed is None else 0):
            c = np.array([rng.uniform(r + 1, n - r - 2) for n in size])
            m = _shape_mask(kind, grid, c, r, theta)
            if not (ndimage.binary_dilation(m, iterations=2) & (label != 0)).any():
                placed = (c, m)
                break
        if placed is None:
            continue
        c, m = placed
        label[m] = cls
        centres.append((c, r))
    return label


def _render(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """Intensities: smooth background + per-object class intensity, slight blur, white noise."""
    smooth = ndimage.gaussian_filter(rng.normal(size=label.shape), sigma=label.shape[0] / 12.0)
    smooth *= BG_SMOOTH_AMP / max(float(np.abs(smooth).max()), 1e-6)
    image = BG_MEAN + smooth
    for cls, mean in CLASS_MEAN.items():
        objects, n = ndimage.label(label == cls)
        for i in range(1, n + 1):
            image[objects == i] = mean + rng.normal(0.0, OBJECT_JITTER)
    image = ndimage.gaussian_filter(image, sigma=0.6) + rng.normal(0.0, NOISE_SD, size=label.shape)
    return np.clip(np.round(image), 0, 255).astype(np.int16)


def synth_case(seed: int, index: int, dims: int, size: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image int16, label uint8), both `(x, y[, z])`, for case `index` of `seed`."""
    size = size or DEFAULTS[dims]["size"]
    rng = np.random.default_rng([seed, index])
    label = _place_objects(rng, tuple(size))
    return _render(rng, label), label


def synthesize(
    out_dir: str | Path, dims: int = 2, cases: int | None = None, seed: int = 0, size: tuple[int, ...] | None = None
) -> Path:
    """Write the synthetic dataset in the canonical layout to `out_dir` (atomically); `size` (per
    spatial axis, default DEFAULTS[dims]["size"]) lets tests use smaller images."""
    from pipeline.io import atomic_dir, write_image, write_text_atomic

    if dims not in DEFAULTS:
        raise InputError(f"dims must be 2 or 3, got {dims}")
    n = DEFAULTS[dims]["cases"] if cases is None else cases
    if n < 1:
        raise InputError(f"cases must be >= 1, got {n}")
    if size is not None and (len(size) != dims or any(int(s) < 16 for s in size)):
        raise InputError(f"size must have {dims} entries, each >= 16, got {size}")
    out = Path(out_dir)
    ids = [f"synth_{i:03d}" for i in range(n)]
    affine = np.eye(dims + 1)  # 1 mm (or px) isotropic, RAS-aligned, origin 0
    with atomic_dir(out) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        from pipeline.progress import progress

        for i, cid in enumerate(progress(ids, desc="synth", unit="case")):
            image, label = synth_case(seed, i, dims, tuple(size) if size else None)
            write_image(image, affine, tmp / image_relpath(cid, 0))
            write_image(label, affine, tmp / label_relpath(cid))
        meta = build_dataset_json(
            name=f"synthetic-{dims}d",
            description=f"Generated shapes: circles/spheres (round) and squares, triangles, crosses (angular) "
            f"on a noisy background; {dims}D, {n} cases, seed {seed}",
            spatial_dims=dims,
            modality="other",
            channel_names={"0": "synthetic"},
            labels=LABELS,
            label_mapping=None,
            source=f"unet-pipeline data synth --dims {dims} --cases {n} --seed {seed}",
            case_ids=ids,
        )
        write_text_atomic(tmp / DATASET_JSON, dumps(meta))
    return out
