"""The preprocessed dataset's manifest (pipeline.data.manifest): the folds of a K-fold ensemble's members."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.training import prepare_data


def test_members_split_the_training_cases(tmp_path: Path) -> None:
    """Member k validates on fold k of the training cases and trains on the rest; the held-out
    val split is in no member's data; one member is the manifest itself."""
    from pipeline.data.manifest import ManifestError, load_manifest

    pre = prepare_data(tmp_path, tmp_path / "cache", dims=2)
    manifest = load_manifest(pre)
    train, held_out = set(manifest.split("train")), set(manifest.split("val"))
    views = [manifest.for_member(3, k, seed=0) for k in range(3)]
    vals = [set(v.split("val")) for v in views]
    assert set().union(*vals) == train and sum(map(len, vals)) == len(train)  # the folds partition train
    for v, val in zip(views, vals):
        assert set(v.split("train")) == train - val and not (set(v.split("train")) | val) & held_out
    assert manifest.for_member(1, 0, seed=0) is manifest
    with pytest.raises(ManifestError, match="cannot make 99 ensemble folds; list fewer train.members"):
        manifest.for_member(99, 0, seed=0)
