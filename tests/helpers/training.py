"""Fixtures for the train/tracking/distributed tests: the real embedded data path, made small.

`prepare_data` runs what a user runs -- `pipeline.data.synth.synthesize` (the embedded synthetic
dataset, here with fewer and smaller cases) and then the preprocess stage -- so the training tests
read `preprocessed/` exactly as written by the preprocess stage, not a hand-written imitation.
Prepared trees are cached per parameter set for the test session and copied into each test's
working directory.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from pipeline.config import Config, parse_config

LABELS = ["background", "round", "angular"]  # pipeline.data.synth.LABELS

# (cases, size) per dimensionality: small enough to train in seconds, big enough to hold objects
SMALL = {2: (10, (64, 64)), 3: (6, (32, 32, 32))}

# 3D data for the convergence and patch tests: 40^3 volumes (the synthetic default size)
DATA_3D = {"cases": 10, "size": (40, 40, 40)}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_config(dims: int = 2, padding: str = "valid", **sections: dict[str, Any]) -> Config:
    """A tiny, fast config reading `data/` and writing `preprocessed/` in the cwd; `sections`
    deep-merge into the defaults (e.g. train={"epochs": 2})."""
    raw: dict[str, Any] = {
        "name": f"test-{dims}d-{padding}",
        "seed": 0,
        "data": {"root": "data", "spatial_dims": dims, "modality": "other"},
        "preprocess": {"normalization": "zscore", "folds": 5, "fold": 0, "num_workers": 0, "border_weights": False},
        "model": {"features": [8, 16, 32], "padding": padding, "norm": "batch"},
        "train": {
            "epochs": 4,
            "iterations_per_epoch": 10,
            "batch_size": 4,
            "patch_size": [44] * dims if padding == "valid" else [48] * dims,
            "lr": 3e-3,
            "scheduler": "none",
            "augment": {"elastic": False, "rotate": False, "intensity": False, "flip": True},
        },
        "inference": {"batch_size": 4},
        "tracking": {"experiment": "test"},
    }
    return parse_config(_merge(raw, sections), "<test>")


_CACHE: dict[tuple[Any, ...], Path] = {}


def prepare_data(
    workdir: Path,
    cache_root: Path,
    dims: int = 2,
    cases: int | None = None,
    size: tuple[int, ...] | None = None,
    seed: int = 0,
    border_weights: bool = False,
) -> Path:
    """`workdir/data` (synthesize) and `workdir/preprocessed` (preprocess stage); returns the latter.

    The first call per parameter set does the real work under `cache_root`; later calls copy it.
    """
    from pipeline.data.synth import synthesize
    from pipeline.stages.preprocess import run as preprocess

    n, default_size = SMALL[dims]
    cases = n if cases is None else cases
    size = tuple(size or default_size)
    key = (dims, cases, size, seed, border_weights)
    src = _CACHE.get(key)
    if src is None or not (src / "preprocessed" / "manifest.json").is_file():
        src = Path(cache_root) / f"data{dims}d_{cases}x{'x'.join(map(str, size))}_s{seed}_w{int(border_weights)}"
        shutil.rmtree(src, ignore_errors=True)
        synthesize(src / "data", dims=dims, cases=cases, seed=seed, size=size)
        cfg = make_config(
            dims,
            data={"root": str(src / "data")},
            preprocess={"output_dir": str(src / "preprocessed"), "border_weights": border_weights},
        )
        preprocess(cfg)
        _CACHE[key] = src
    workdir = Path(workdir)
    for name in ("data", "preprocessed"):
        shutil.rmtree(workdir / name, ignore_errors=True)
        shutil.copytree(src / name, workdir / name)
    # the manifest names its source files by absolute path: nothing to rewrite, the cache stays
    return workdir / "preprocessed"


def read_history(path: Path) -> list[dict[str, str]]:
    """The rows of a `train_history.csv`."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
