"""Validate every case before anything is written, and collect what the fingerprint needs.

Each case is read once here: the checks (readable, complete, finite, label on the image's grid,
label values declared, dimensionality, channel count) and the statistics (shape, spacing,
intensity samples, class counts) come from the same read. All problems of all cases are collected
and raised together as one `DatasetError`, each line naming the file and the problem.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.canonical import Case
from pipeline.data.errors import DatasetError
from pipeline.data.parallel import parallel_map
from pipeline.io.geometry import spacing_from_affine

# label and image grids may differ by this fraction of the smallest voxel size (affine entries)
GEOMETRY_TOLERANCE = 1e-2
INTENSITY_SAMPLES = 10_000  # per case and channel, for the fingerprint's percentiles

__all__ = ["GEOMETRY_TOLERANCE", "CaseStats", "DatasetError", "inspect_case", "validate_cases"]


@dataclass
class CaseStats:
    """What one validated case contributes to the fingerprint."""

    id: str
    shape: tuple[int, ...]  # spatial
    spacing: tuple[float, ...]
    affine: list[list[float]]  # RAS
    n_channels: int
    label_counts: dict[int, int] = field(default_factory=dict)  # raw label value -> voxels
    fg_samples: list[np.ndarray] = field(default_factory=list)  # per channel, voxels with label > 0
    all_samples: list[np.ndarray] = field(default_factory=list)  # per channel, any voxel


def _sample(values: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    values = values.ravel()
    if values.size > n:
        values = values[rng.choice(values.size, n, replace=False)]
    return values.astype(np.float32)


def _fmt(values: Iterable[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _read_case(case: Case) -> tuple[Any, Any, list[str]]:
    """(image, label or None, problems); image None when it cannot be read."""
    from pipeline.io import ImageReadError, read_image

    try:
        image = read_image(list(case.images))
    except ImageReadError as exc:
        return None, None, [str(exc)]
    if case.label is None or not Path(case.label).exists():
        expected = case.label or "a label file"
        return image, None, [f"{case.name}: missing label for case {case.id!r} (expected {expected})"]
    try:
        return image, read_image(case.label), []
    except ImageReadError as exc:
        return image, None, [str(exc)]


def _image_problems(case: Case, image: Any, spatial_dims: int | None, in_channels: int | None) -> list[str]:
    """Dimensionality, channel count, NaN/Inf."""
    problems, d, arr = [], image.ndim - 1, image.numpy()
    if spatial_dims is not None and d != spatial_dims:
        problems.append(
            f"{case.name}: {d}D image (shape {tuple(image.shape[1:])}) but data.spatial_dims={spatial_dims}"
        )
    if in_channels is not None and image.shape[0] != in_channels:
        problems.append(f"{case.name}: {image.shape[0]} channel(s) but data.in_channels={in_channels}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        problems.append(f"{case.name}: {int(np.count_nonzero(~np.isfinite(arr)))} NaN/Inf voxel(s)")
    return problems


def _label_on_grid(case: Case, image: Any, label: Any) -> tuple[np.ndarray | None, list[str]]:
    """The label array when it has one channel, the image's shape and its affine; else None and why."""
    lab, arr = label.numpy(), image.numpy()
    if lab.shape[0] != 1:
        return None, [f"{case.label}: label has {lab.shape[0]} channels; a label map has one"]
    if lab.shape[1:] != arr.shape[1:]:
        shapes = f"label shape {tuple(lab.shape[1:])} does not match image {case.name} shape {tuple(arr.shape[1:])}"
        return None, [f"{case.label}: {shapes}"]
    img_aff, lab_aff = image.affine.numpy(), label.affine.numpy()
    spacing = spacing_from_affine(img_aff)
    diff = float(np.abs(img_aff - lab_aff).max())
    if diff > GEOMETRY_TOLERANCE * min(spacing):
        return lab, [
            f"{case.label}: label geometry (affine) differs from image {case.name} by {diff:.3g} mm "
            f"(tolerance {GEOMETRY_TOLERANCE:g} voxel); image affine {np.round(img_aff, 4).tolist()}, "
            f"label affine {np.round(lab_aff, 4).tolist()}"
        ]
    return lab, []


def _label_values(
    case: Case, lab: np.ndarray, label_values: Sequence[int] | None
) -> tuple[np.ndarray, dict[int, int], list[str]]:
    """(label with NaN as 0, voxel count per value, problems: NaN/Inf, non-integers, undeclared values)."""
    problems = []
    if lab.dtype.kind == "f":
        bad = ~np.isfinite(lab)
        if bad.any():
            problems.append(f"{case.label}: {int(bad.sum())} NaN/Inf voxel(s) in the label")
            lab = np.where(bad, 0, lab)
        if not np.array_equal(lab, np.round(lab)):
            problems.append(f"{case.label}: label holds non-integer values; a label map holds class indices")
    values, n = np.unique(lab, return_counts=True)
    counts = {int(v): int(c) for v, c in zip(values, n)}
    outside = sorted(set(counts) - {int(v) for v in label_values}) if label_values is not None else []
    if outside:
        declared = _fmt(sorted(label_values))
        problems.append(f"{case.label}: label values {_fmt(outside)} are outside the declared set {declared}")
    return lab, counts, problems


def _intensity_samples(case: Case, arr: np.ndarray, lab: np.ndarray | None, n: int) -> tuple[list, list]:
    """(foreground samples, all samples) per channel, finite values only, seeded by the case id."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    fg = (lab[0] > 0) if lab is not None else None
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else None
    fg_samples, all_samples = [], []
    for c in range(arr.shape[0]):
        all_samples.append(_sample(arr[c] if finite is None else arr[c][finite[c]], rng, n))
        if fg is None:
            fg_samples.append(np.zeros(0, np.float32))
        else:
            fg_samples.append(_sample(arr[c][fg if finite is None else (fg & finite[c])], rng, n))
    return fg_samples, all_samples


def inspect_case(
    case: Case,
    *,
    spatial_dims: int | None = None,
    label_values: Sequence[int] | None = None,
    in_channels: int | None = None,
    samples: int = INTENSITY_SAMPLES,
) -> tuple[CaseStats | None, list[str]]:
    """Read and check one case; returns its statistics (None when unusable) and its problems."""
    image, label, problems = _read_case(case)
    if image is None:
        return None, problems
    problems += _image_problems(case, image, spatial_dims, in_channels)
    lab, counts = None, {}
    if label is not None:
        lab, found = _label_on_grid(case, image, label)
        problems += found
    if lab is not None:
        lab, counts, found = _label_values(case, lab, label_values)
        problems += found
    arr = image.numpy()
    fg_samples, all_samples = _intensity_samples(case, arr, lab, samples)
    aff = image.affine.numpy()
    stats = CaseStats(
        id=case.id,
        shape=tuple(int(s) for s in arr.shape[1:]),
        spacing=tuple(spacing_from_affine(aff)),
        affine=aff.tolist(),
        n_channels=int(arr.shape[0]),
        label_counts=counts,
        fg_samples=fg_samples,
        all_samples=all_samples,
    )
    return stats, problems


def validate_cases(
    cases: Sequence[Case],
    *,
    where: str | Path,
    spatial_dims: int | None = None,
    label_values: Sequence[int] | None = None,
    in_channels: int | None = None,
    num_workers: int = 0,
) -> list[CaseStats]:
    """Check every case (in parallel); raise one `DatasetError` listing every problem found.

    `where` names the dataset in the empty-dataset error. With `spatial_dims=None` the cases must
    at least agree with each other.
    """
    if not cases:
        raise DatasetError([f"{where}: the dataset holds no cases"])
    seen: dict[str, Case] = {}
    problems: list[str] = []
    for case in cases:
        if case.id in seen:
            problems.append(f"{case.name}: case id {case.id!r} also used by {seen[case.id].name}")
        seen[case.id] = case
    fn = functools.partial(inspect_case, spatial_dims=spatial_dims, label_values=label_values, in_channels=in_channels)
    results = parallel_map(fn, list(cases), num_workers, desc="validate")
    stats, read = [], []
    for case, (stat, probs) in zip(cases, results):
        problems.extend(probs)
        if stat is not None:
            stats.append(stat)
            read.append((case, stat))
    if spatial_dims is None and read:
        first_case, first = read[0][0], len(read[0][1].shape)
        problems.extend(
            f"{case.name}: {len(s.shape)}D image, but {first_case.name} is {first}D; all cases must agree"
            for case, s in read
            if len(s.shape) != first
        )
    if problems:
        raise DatasetError(problems)
    return stats
