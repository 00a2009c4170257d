"""Fixtures for the train/tracking tests: a tiny `preprocessed/` tree and a matching config.

The tree is written directly in the documented layout (docs/ARCHITECTURE.md) -- two foreground
classes (discs and boxes) with distinct intensities on Gaussian noise -- so the training tests do
not depend on the preprocess stage's own test data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Config, parse_config

LABELS = ["background", "disc", "box"]


def _case(rng: np.random.Generator, shape: tuple[int, ...], n_objects: int) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices(shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for i in range(n_objects):
        cls = 1 + i % 2
        r = rng.uniform(0.1, 0.18) * min(shape)
        centre = [rng.uniform(r + 1, s - r - 1) for s in shape]
        off = np.stack([g - c for g, c in zip(grid, centre)])
        inside = (np.sqrt((off**2).sum(0)) <= r) if cls == 1 else (np.abs(off).max(0) <= 0.8 * r)
        label[inside] = cls
    image = rng.normal(0.0, 0.35, shape).astype(np.float32)
    image += np.select([label == 1, label == 2], [1.2, -1.2], 0.0).astype(np.float32)
    return image[None], label[None]


def write_preprocessed(
    root: Path,
    dims: int = 2,
    size: int = 64,
    n_train: int = 6,
    n_val: int = 2,
    seed: int = 0,
    weights: bool = False,
) -> Path:
    """Write `root/preprocessed/` (manifest + cases) and return that directory."""
    out = Path(root) / "preprocessed"
    (out / "cases").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size,) * dims
    cases: list[dict[str, Any]] = []
    ids = [f"case{i:03d}" for i in range(n_train + n_val)]
    for cid in ids:
        image, label = _case(rng, shape, n_objects=4 if dims == 2 else 2)
        np.save(out / "cases" / f"{cid}_image.npy", image)
        np.save(out / "cases" / f"{cid}_label.npy", label)
        weight = None
        if weights:
            w = (1.0 + 2.0 * (label > 0)).astype(np.float32)
            np.save(out / "cases" / f"{cid}_weight.npy", w)
            weight = f"cases/{cid}_weight.npy"
        cases.append(
            {
                "id": cid,
                "image": f"cases/{cid}_image.npy",
                "label": f"cases/{cid}_label.npy",
                "weight": weight,
                "source_images": [f"imagesTr/{cid}_0000.nii.gz"],
                "source_label": f"labelsTr/{cid}.nii.gz",
                "original": {
                    "shape": list(shape),
                    "affine": np.eye(dims + 1).tolist(),
                    "spacing": [1.0] * dims,
                    "origin": [0.0] * dims,
                    "direction": np.eye(dims).ravel().tolist(),
                },
                "shape": list(shape),
            }
        )
    manifest = {
        "spatial_dims": dims,
        "in_channels": 1,
        "labels": LABELS,
        "preprocessing": {
            "orientation": None,
            "spacing": None,
            "crop_foreground": False,
            "normalization": {"scheme": "none", "nonzero": False, "clip": None, "mean": None, "std": None},
        },
        "splits": {"train": ids[:n_train], "val": ids[n_train:]},
        "folds": [ids[n_train:]],
        "cases": cases,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (out / "fingerprint.json").write_text(json.dumps({"cases": len(ids), "spatial_dims": dims}))
    return out


def make_config(dims: int = 2, padding: str = "valid", **sections: dict[str, Any]) -> Config:
    """A tiny, fast config; `sections` deep-merge into the defaults (e.g. train={"epochs": 2})."""
    raw: dict[str, Any] = {
        "name": f"test-{dims}d-{padding}",
        "seed": 0,
        "data": {"spatial_dims": dims},
        "model": {"features": [8, 16, 32], "padding": padding},
        "train": {
            "epochs": 4,
            "iterations_per_epoch": 10,
            "batch_size": 4,
            "patch_size": [44] * dims if padding == "valid" else [48] * dims,
            "lr": 3e-3,
            "scheduler": "none",
            "augment": {"elastic": False, "rotate": False, "intensity": False, "flip": True},
        },
        "inference": {"batch_size": 2},
        "tracking": {"experiment": "test"},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(name), dict):
            merged = dict(raw[name])
            for k, v in values.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            raw[name] = merged
        else:
            raw[name] = values
    return parse_config(raw, "<test>")
