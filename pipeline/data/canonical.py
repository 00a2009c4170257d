"""The canonical raw layout `data/` (docs/ARCHITECTURE.md): dataset.json + imagesTr/ + labelsTr/.

`data synth` and `data import` write it; the preprocess stage reads it. One reader and one writer
here, so the layout is defined once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.errors import DatasetError

DATASET_JSON = "dataset.json"
FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class Case:
    """One training case: per-channel image files and its label file (None = missing)."""

    id: str
    images: tuple[Path, ...]
    label: Path | None

    @property
    def name(self) -> str:
        """How errors refer to the case: its first image file."""
        return str(self.images[0]) if self.images else self.id


@dataclass
class DatasetInfo:
    root: Path
    meta: dict[str, Any]
    cases: list[Case] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Class names in class-index order."""
        return [name for name, _ in sorted(self.meta["labels"].items(), key=lambda kv: int(kv[1]))]

    @property
    def spatial_dims(self) -> int:
        return int(self.meta["spatial_dims"])

    @property
    def modality(self) -> str:
        return str(self.meta.get("modality", "other"))


def image_relpath(case_id: str, channel: int) -> str:
    return f"imagesTr/{case_id}_{channel:04d}{FILE_ENDING}"


def label_relpath(case_id: str) -> str:
    return f"labelsTr/{case_id}{FILE_ENDING}"


def build_dataset_json(
    *,
    name: str,
    description: str,
    spatial_dims: int,
    modality: str,
    channel_names: dict[str, str],
    labels: list[str],
    label_mapping: dict[str, int] | None,
    source: str,
    case_ids: list[str],
) -> dict[str, Any]:
    """The canonical dataset.json (keys as in docs/ARCHITECTURE.md), cases in sorted order."""
    n_channels = len(channel_names)
    ids = sorted(case_ids)
    return {
        "name": name,
        "description": description,
        "spatial_dims": int(spatial_dims),
        "modality": modality,
        "channel_names": {str(k): v for k, v in channel_names.items()},
        "labels": {lab: i for i, lab in enumerate(labels)},
        "label_mapping": label_mapping,
        "file_ending": FILE_ENDING,
        "source": source,
        "numTraining": len(ids),
        "training": [
            {"id": cid, "images": [image_relpath(cid, c) for c in range(n_channels)], "label": label_relpath(cid)}
            for cid in ids
        ],
    }


def dumps(meta: dict[str, Any]) -> str:
    """Deterministic JSON text (byte-identical for equal content)."""
    return json.dumps(meta, indent=2) + "\n"


def load_dataset(root: str | Path) -> DatasetInfo:
    """Parse `root/dataset.json`; file existence and content are checked later by validation."""
    root = Path(root)
    path = root / DATASET_JSON
    if not path.is_file():
        raise DatasetError(
            [
                f"{path}: not found; create the dataset with `unet-pipeline data synth` or `unet-pipeline data "
                "import SRC`"
            ]
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError([f"{path}: not valid JSON ({exc})"]) from None
    problems = [f"{path}: missing key {key!r}" for key in ("spatial_dims", "labels", "training") if key not in meta]
    if problems:
        raise DatasetError(problems)
    labels = meta["labels"]
    if not isinstance(labels, dict) or sorted(int(v) for v in labels.values()) != list(range(len(labels))):
        raise DatasetError([f"{path}: 'labels' must map names to contiguous class indices 0..K-1, got {labels!r}"])
    cases = []
    for i, entry in enumerate(meta["training"]):
        images = entry.get("images") or ([entry["image"]] if "image" in entry else [])
        if not images:
            problems.append(f"{path}: training entry {i} ({entry.get('id', '?')}) lists no image")
            continue
        case_id = entry.get("id") or Path(images[0]).name.split(".")[0].removesuffix("_0000")
        label = entry.get("label")
        cases.append(Case(case_id, tuple(root / p for p in images), root / label if label else None))
    if problems:
        raise DatasetError(problems)
    return DatasetInfo(root=root, meta=meta, cases=cases)
