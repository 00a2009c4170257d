"""`preprocessed/manifest.json`: the one reader the train, evaluate and export stages share.

The preprocess stage writes it (docs/ARCHITECTURE.md). `load_manifest` returns a `Manifest`: the
parsed JSON (a dict, so `manifest["labels"]` reads as before) that knows its folder, resolves the
paths it lists and checks itself for each use, so that a stage finding it missing, unreadable,
incomplete or not fit for its config says so, naming the file and the stage to re-run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import MissingInputError, PipelineError

if TYPE_CHECKING:
    from pipeline.config import Config

MANIFEST = "manifest.json"


class ManifestError(PipelineError, ValueError):
    """`preprocessed/manifest.json` is missing, unreadable or does not fit the config."""


class Manifest(dict):
    """The manifest's JSON plus the folder it lies in (`root`, what its relative paths start from)."""

    def __init__(self, data: dict[str, Any], root: Path) -> None:
        super().__init__(data)
        self.root = Path(root)
        self.where = self.root / MANIFEST
        self._by_id = {c["id"]: c for c in self.get("cases", [])}

    @property
    def labels(self) -> list[str]:
        return [str(n) for n in self["labels"]]

    def case(self, case_id: str) -> dict[str, Any]:
        if case_id in self._by_id:
            return self._by_id[case_id]
        raise ManifestError(f"{self.where}: no case {case_id!r} under 'cases'")

    def split(self, name: str) -> list[str]:
        """The ids of a split, checked to be non-empty and listed under 'cases'."""
        ids = list(self["splits"].get(name) or [])
        if not ids:
            raise ManifestError(f"{self.where}: split {name!r} is empty")
        missing = sorted(set(ids) - self._by_id.keys())
        if missing:
            raise ManifestError(f"{self.where}: split {name!r} names cases not in 'cases': {missing[:5]}")
        return ids

    def for_member(self, members: int, member: int, seed: int) -> Manifest:
        """What member `member` of a `members`-fold ensemble trains on: this manifest with 'train'
        the training cases outside fold `member` (`splits.kfold`, `seed`) and 'val' that fold. The
        held-out 'val' split stays unseen by every member. One member: this manifest itself."""
        if members == 1:
            return self
        from pipeline.data.splits import kfold

        if len(self.split("train")) < members:
            raise ManifestError(
                f"{self.where}: {len(self.split('train'))} training case(s) cannot make {members} ensemble "
                "folds; list fewer train.members"
            )
        folds = kfold(self.split("train"), members, seed)
        train = sorted(cid for k, fold in enumerate(folds) if k != member for cid in fold)
        return Manifest({**self, "splits": {"train": train, "val": folds[member]}}, self.root)

    def path(self, case_id: str, key: str) -> Path:
        """A preprocessed array of a case (`image`, `label`, `weight`, `locations`), under root."""
        rel = self.case(case_id).get(key)
        if not rel:
            raise ManifestError(f"{self.where}: case {case_id!r} has no {key!r}; re-run the preprocess stage")
        return _existing(rel, [self.root], f"case {case_id}: preprocessed {key}")

    def sources(self, case_id: str) -> tuple[list[Path], Path]:
        """(per-channel raw image files, raw label file) of a case: absolute, or relative to the
        working directory or to root."""
        c = self.case(case_id)
        where = [Path("."), self.root]
        images = [_existing(p, where, f"case {case_id}: source image") for p in c["source_images"]]
        return images, _existing(c["source_label"], where, f"case {case_id}: source label")

    def held_out_case(self) -> str:
        """The first validation case (a training case when there is none): what export verifies on."""
        ids = list(self["splits"].get("val") or []) or list(self["splits"].get("train") or [])
        ids = ids or [c["id"] for c in self["cases"]]
        if not ids:
            raise ManifestError(f"{self.where} lists no cases")
        return ids[0]

    def held_out_image(self, spatial_dims: int, in_channels: int) -> tuple[str, Any]:
        """(id, preprocessed image) of `held_out_case`, checked to fit a model of these dimensions:
        what export verifies on and MLflow stores as the input example.

        Raises:
            ManifestError: the image's dimensionality or channel count does not fit.
        """
        import numpy as np

        case_id = self.held_out_case()
        image = np.load(self.path(case_id, "image"))
        if image.shape[0] != in_channels or image.ndim - 1 != spatial_dims:
            raise ManifestError(
                f"held-out case {case_id}: image shape {tuple(image.shape)} does not fit a {spatial_dims}D "
                f"{in_channels}-channel model"
            )
        return case_id, image

    def check_trainable(self, cfg: Config) -> None:
        """Fail before training on a manifest that cannot feed this config."""
        for key in ("spatial_dims", "in_channels"):
            if key not in self:
                raise ManifestError(f"{self.where}: missing key {key!r}; re-run the preprocess stage")
        if self["spatial_dims"] != cfg.data.spatial_dims:
            raise ManifestError(
                f"{self.where}: spatial_dims={self['spatial_dims']} but the config has "
                f"data.spatial_dims={cfg.data.spatial_dims}; re-run preprocess with this config"
            )
        if len(self["labels"]) < 2:
            raise ManifestError(f"{self.where}: needs at least 2 labels (background + 1), got {self['labels']}")
        train = self.split("train")
        self.split("val")
        no_locations = [c["id"] for c in self["cases"] if not c.get("locations") or "n_fg" not in c]
        if no_locations:
            raise ManifestError(
                f"{self.where}: cases {no_locations[:5]} have no stored patch locations (written by an older "
                "preprocess); re-run the preprocess stage"
            )
        no_weight = [cid for cid in train if not self.case(cid).get("weight")]
        if cfg.train.uses_weight_map and no_weight:
            raise ManifestError(
                f"{self.where}: train.loss={cfg.train.loss!r} needs border weight maps, but cases {no_weight[:5]} "
                "have none; set preprocess.border_weights: true and re-run preprocess"
            )


def _existing(path: str | Path, bases: Sequence[Path], what: str) -> Path:
    p = Path(path)
    for candidate in [p] if p.is_absolute() else [b / p for b in bases]:
        if candidate.exists():
            return candidate
    looked = "" if p.is_absolute() else f" (looked in {', '.join(str(b) for b in bases)})"
    raise MissingInputError(f"{what} {path} not found{looked}")


def load_manifest(
    pre_dir: str | Path, required: Sequence[str] = ("labels", "preprocessing", "splits", "cases")
) -> Manifest:
    """The parsed manifest, with every key in `required` present."""
    path = Path(pre_dir) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path} not found: run the preprocess stage first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run the preprocess stage") from None
    missing = [key for key in required if key not in data]
    if missing:
        raise ManifestError(f"{path} has no {', '.join(map(repr, missing))} entry; re-run the preprocess stage")
    return Manifest(data, Path(pre_dir))
