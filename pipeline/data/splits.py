"""Train/validation split: K folds with a fixed seed, or a fixed split named in the config."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.data.errors import DatasetError


def kfold(ids: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """Shuffle the sorted ids with `seed` and cut them into `folds` near-equal folds (each sorted)."""
    ids = sorted(ids)
    if len(ids) < folds:
        raise DatasetError([f"{len(ids)} case(s) cannot make {folds} folds; lower preprocess.folds or add cases"])
    order = np.random.default_rng(seed).permutation(len(ids))
    return [sorted(ids[i] for i in part) for part in np.array_split(order, folds)]


def make_splits(
    ids: Sequence[str],
    *,
    folds: int,
    fold: int,
    seed: int,
    fixed_train: Sequence[str] | None = None,
    fixed_val: Sequence[str] | None = None,
) -> tuple[dict[str, list[str]], list[list[str]]]:
    """Returns `({"train": [...], "val": [...]}, folds)`.

    A fixed split (both lists given) wins over the folds; its ids must exist and not overlap.
    The K folds are still recorded (they need at least `folds` cases).
    """
    ids = sorted(ids)
    if fixed_train is not None and fixed_val is not None:
        known = set(ids)
        problems = [
            f"preprocess.split.{name}: case id {cid!r} is not in the dataset"
            for name, lst in (("train", fixed_train), ("val", fixed_val))
            for cid in lst
            if cid not in known
        ]
        both = sorted(set(fixed_train) & set(fixed_val))
        if both:
            problems.append(f"preprocess.split: ids in both train and val: {both}")
        if not fixed_val:
            problems.append("preprocess.split.val: empty; validation needs at least one case")
        if problems:
            raise DatasetError(problems)
        all_folds = kfold(ids, folds, seed) if len(ids) >= folds else [ids]
        return {"train": sorted(fixed_train), "val": sorted(fixed_val)}, all_folds
    all_folds = kfold(ids, folds, seed)
    val = all_folds[fold]
    train = sorted(i for k, f in enumerate(all_folds) if k != fold for i in f)
    return {"train": train, "val": val}, all_folds
