"""Class labels of an import: `--labels NAME=RAW,...`, a dataset.json's `labels`, raw mask values -> class indices."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from pipeline.data.errors import DatasetError


@dataclass(frozen=True)
class LabelSpec:
    """Class names in index order and the raw mask value each comes from."""

    names: list[str]
    raw_to_class: dict[int, int]

    @property
    def mapping_record(self) -> dict[str, int]:
        """What dataset.json records as `label_mapping` (JSON keys are strings)."""
        return {str(raw): cls for raw, cls in sorted(self.raw_to_class.items())}


def parse_labels(text: str) -> LabelSpec:
    """Parse `--labels`: `cell=255,membrane=0` -> names [cell, membrane], raw 255 -> 0, raw 0 -> 1.

    Raw mask values are never guessed, so the user names each class and the value its pixels hold.

    Args:
        text: comma-separated `NAME=RAW_VALUE` items, in class-index order.

    Returns:
        The class names and the raw value -> class index mapping.

    Raises:
        DatasetError: an item is not `NAME=RAW_VALUE`, a name or value is given twice, or fewer
            than two classes are given.
    """
    names: list[str] = []
    raw_to_class: dict[int, int] = {}
    for i, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip() or not re.fullmatch(r"-?\d+", raw.strip()):
            raise DatasetError([f"--labels: {item!r} is not NAME=RAW_VALUE (e.g. cell=255,membrane=0)"])
        value = int(raw)
        if name.strip() in names:
            raise DatasetError([f"--labels: class name {name.strip()!r} given twice"])
        if value in raw_to_class:
            raise DatasetError([f"--labels: raw value {value} given for two classes"])
        names.append(name.strip())
        raw_to_class[value] = i
    if len(names) < 2:
        raise DatasetError([f"--labels {text!r}: needs at least two classes (background and one more)"])
    return LabelSpec(names, raw_to_class)


def _msd_labels(meta: dict[str, Any], path: Path) -> list[str]:
    """MSD (`{"0": "background"}`) or nnU-Net v2 (`{"background": 0}`) labels -> names by index."""
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DatasetError([f"{path}: no 'labels' mapping"])
    if all(re.fullmatch(r"\d+", str(k)) for k in labels):
        pairs = {int(k): str(v) for k, v in labels.items()}
    elif all(isinstance(v, int) for v in labels.values()):
        pairs = {int(v): str(k) for k, v in labels.items()}
    else:
        raise DatasetError(
            [f"{path}: 'labels' must map indices to names (MSD) or names to integer indices (nnU-Net v2), got {labels}"]
        )
    if sorted(pairs) != list(range(len(pairs))):
        raise DatasetError([f"{path}: label indices {sorted(pairs)} are not contiguous 0..{len(pairs) - 1}"])
    return [pairs[i] for i in range(len(pairs))]


def map_label(label: ArrayLike, spec: LabelSpec | None, where: str, n_classes: int) -> np.ndarray:
    """Raw mask values -> class indices (uint8), so that every staged mask holds 0..n_classes-1.

    Args:
        label: the mask as read (channel-first; any integer values).
        spec: the `--labels` mapping; None when the values already are class indices.
        where: how errors name the mask (its file, or the case id of an in-memory page).
        n_classes: number of classes, checked against when `spec` is None.

    Returns:
        The mask as uint8 class indices, same shape.

    Raises:
        DatasetError: a value is not mapped by `spec`, or (without `spec`) is not a class index;
            the message lists the values found.
    """
    arr = np.asarray(label)
    values = np.unique(arr)
    if spec is None:
        outside = [v for v in values.tolist() if v not in range(n_classes)]
        if outside:
            raise DatasetError([f"{where}: label values {outside} are not class indices 0..{n_classes - 1}"])
        return arr.astype(np.uint8)
    unmapped = sorted(set(values.tolist()) - set(spec.raw_to_class))
    if unmapped:
        raise DatasetError(
            [
                f"{where}: mask values {unmapped} are not mapped by --labels (found values {values.tolist()}; "
                f"mapped: {spec.mapping_record})"
            ]
        )
    lut = np.zeros(int(values.max()) - int(values.min()) + 1, np.uint8)
    for raw, cls in spec.raw_to_class.items():
        if values.min() <= raw <= values.max():
            lut[raw - int(values.min())] = cls
    return lut[arr.astype(np.int64) - int(values.min())]


def _found_values(masks: Iterable[ArrayLike]) -> list[int]:
    """The distinct values of all `masks`, sorted: what an import without a mapping lists."""
    found: set[int] = set()
    for mask in masks:
        found.update(np.unique(np.asarray(mask)).tolist())
    return sorted(found)
