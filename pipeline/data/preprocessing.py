"""The preprocess stage's work: data/ (canonical raw layout) -> preprocessed/ (arrays + manifest).

Every case is validated first (all problems reported together, naming the file); only then are
the cases pushed through the MONAI chain of `pipeline.data.transforms`, one case per worker at a
time (peak memory follows the largest case, not the number of cases), into a temp dir that
replaces `preprocessed/` at the end, so a failure leaves the previous output intact.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError
from pipeline.data.canonical import Case, DatasetInfo, load_dataset

CASES = "cases"


def _class_names(cfg: Config, info: DatasetInfo) -> list[str]:
    """Class names in index order: the config's when given (they must agree with dataset.json)."""
    names = info.labels
    if cfg.data.labels is not None and list(cfg.data.labels) != names:
        raise ConfigError(
            f"data.labels={cfg.data.labels} does not match {info.root / 'dataset.json'} labels {names}; "
            "fix the config or re-import the dataset"
        )
    if info.spatial_dims != cfg.data.spatial_dims:
        raise ConfigError(
            f"data.spatial_dims={cfg.data.spatial_dims} but {info.root / 'dataset.json'} holds a "
            f"{info.spatial_dims}D dataset; use a {info.spatial_dims}D config"
        )
    return names


def _process_case(case: Case, *, spec: dict[str, Any], out_dir: Path, weights: dict[str, Any] | None) -> dict[str, Any]:
    """One case through the chain; returns its manifest entry (paths relative to preprocessed/)."""
    import zlib

    import numpy as np

    from pipeline.data.patches import sample_locations
    from pipeline.data.transforms import preprocessing_transforms
    from pipeline.data.weight_map import border_weight_map

    chain = preprocessing_transforms(spec, keys=("image", "label"))
    d = chain({"image": [str(p) for p in case.images], "label": str(case.label)})
    image = np.ascontiguousarray(d["image"].numpy(), dtype=np.float32)
    label = np.ascontiguousarray(np.rint(d["label"].numpy()), dtype=np.uint8)
    entry: dict[str, Any] = {
        "id": case.id,
        "image": f"{CASES}/{case.id}_image.npy",
        "label": f"{CASES}/{case.id}_label.npy",
        "weight": None,
        "locations": f"{CASES}/{case.id}_locations.npy",
        "shape": list(image.shape[1:]),
        "spacing": [float(s) for s in d["image"].pixdim.tolist()],
    }
    np.save(out_dir / f"{case.id}_image.npy", image)
    np.save(out_dir / f"{case.id}_label.npy", label)
    # where training centres its patches, so it never scans a whole label map per patch
    locations, entry["n_fg"] = sample_locations(label[0], seed=zlib.crc32(case.id.encode()))
    np.save(out_dir / f"{case.id}_locations.npy", locations)
    if weights is not None:
        w = border_weight_map(
            label[0],
            n_classes=weights["n_classes"],
            w0=weights["w0"],
            sigma=weights["sigma"],
            background=weights["background"],
        )
        np.save(out_dir / f"{case.id}_weight.npy", w[None])
        entry["weight"] = f"{CASES}/{case.id}_weight.npy"
    return entry


def _original_geometry(shape: Sequence[int], spacing: Sequence[float], affine: list[list[float]]) -> dict[str, Any]:
    """The source grid, enough to put a prediction back: RAS affine, plus origin and direction
    (RAS, unit columns) split out of it for readers that want ITK-style geometry."""
    d = len(shape)
    origin = [float(affine[i][d]) for i in range(d)]
    direction = [[float(affine[i][j]) / float(spacing[j]) for j in range(d)] for i in range(d)]
    return {"shape": list(shape), "spacing": list(spacing), "affine": affine, "origin": origin, "direction": direction}


def _splits(cfg: Config, ids: list[str]) -> tuple[dict[str, list[str]], list[list[str]]]:
    from pipeline.data.splits import make_splits

    p, fixed = cfg.preprocess, cfg.preprocess.split
    return make_splits(
        ids,
        folds=p.folds,
        fold=p.fold,
        seed=cfg.seed,
        fixed_train=fixed.train if fixed else None,
        fixed_val=fixed.val if fixed else None,
    )


def preprocess_dataset(cfg: Config) -> dict[str, Any]:
    """Validate data/, then write preprocessed/{manifest.json, fingerprint.json, cases/}; returns the manifest."""
    from pipeline.data.fingerprint import compute_fingerprint
    from pipeline.data.parallel import parallel_map
    from pipeline.data.transforms import preprocessing_spec
    from pipeline.data.validation import validate_cases
    from pipeline.io import atomic_dir, write_text_atomic

    p = cfg.preprocess
    info = load_dataset(cfg.data.root)
    labels = _class_names(cfg, info)
    if p.border_weights and p.weight_background >= len(labels):
        raise ConfigError(f"preprocess.weight_background={p.weight_background} is not a class index of {labels}")
    stats = validate_cases(
        info.cases,
        where=info.root / "dataset.json",
        spatial_dims=cfg.data.spatial_dims,
        label_values=range(len(labels)),
        in_channels=cfg.data.in_channels,
        num_workers=p.num_workers,
    )
    splits, folds = _splits(cfg, [c.id for c in info.cases])
    fingerprint = compute_fingerprint(
        stats, labels=labels, orientation=p.orientation, splits=splits, folds=folds, modality=cfg.data.modality
    )
    spec = preprocessing_spec(cfg, fingerprint)
    weights = None
    if p.border_weights:
        weights = {"n_classes": len(labels), "w0": p.w0, "sigma": p.sigma, "background": p.weight_background}
    stats_by_id = {s.id: s for s in stats}
    with atomic_dir(p.output_dir) as tmp:
        (tmp / CASES).mkdir()
        fn = functools.partial(_process_case, spec=spec, out_dir=tmp / CASES, weights=weights)
        entries = parallel_map(fn, info.cases, p.num_workers, desc="preprocess")
        for case, entry in zip(info.cases, entries):
            s = stats_by_id[case.id]
            entry["source_images"] = [str(x) for x in case.images]
            entry["source_label"] = str(case.label)
            entry["original"] = _original_geometry(s.shape, s.spacing, s.affine)
        manifest = {
            "spatial_dims": cfg.data.spatial_dims,
            "in_channels": cfg.data.in_channels,
            "labels": labels,
            "label_mapping": info.meta.get("label_mapping"),
            "dataset": info.meta.get("name"),
            "preprocessing": spec,
            "splits": splits,
            "folds": folds,
            "cases": sorted(entries, key=lambda e: e["id"]),
        }
        write_text_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        write_text_atomic(tmp / "fingerprint.json", json.dumps(fingerprint, indent=1) + "\n")
    return manifest
