"""The embedded default dataset (`data synth`, pipeline.data.synth): reproducible, and the one data.dvc records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main as cli
from pipeline.data.canonical import load_dataset
from pipeline.io import read_image


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("dims,cases", [(2, 6), (3, 2)])
def test_synth_is_byte_for_byte_reproducible(tmp_path: Path, dims: int, cases: int) -> None:
    for name in ("a", "b"):
        assert cli(["data", "synth", "--dims", str(dims), "--cases", str(cases), "--out", str(tmp_path / name)]) == 0
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) == 2 * cases + 1
    info = load_dataset(tmp_path / "a")
    assert info.labels == ["background", "round", "angular"] and info.spatial_dims == dims
    label = read_image(info.cases[0].label).numpy()
    assert set(np.unique(label)) <= {0, 1, 2} and (label > 0).any()


def test_synth_default_matches_committed_data_dvc(tmp_path: Path, repo_root: Path) -> None:
    """The committed data.dvc records the md5 of the default `data synth` output (DVC's dir hash)."""
    import yaml

    out = tmp_path / "data"
    assert cli(["data", "synth", "--out", str(out)]) == 0
    entries = sorted(
        (
            {"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.relative_to(out).as_posix()}
            for p in out.rglob("*")
            if p.is_file()
        ),
        key=lambda e: e["relpath"],
    )
    # DVC's .dir hash: md5 of the JSON list of {md5, relpath}, sorted by relpath
    dir_md5 = hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"
    committed = yaml.safe_load((repo_root / "data.dvc").read_text())["outs"][0]
    assert committed["nfiles"] == len(entries)
    assert committed["md5"] == dir_md5
