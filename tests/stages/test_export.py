"""The export stage (pipeline.stages.export) under real faults, through `unet-pipeline export`.

A best.pt truncated for real is refused with one line naming it. An export whose largest file hits
a real file-size limit (a full disk) fails with one line naming that file; the previous exported/
stays byte-identical, no temp is left, and the re-run without the limit completes. A tracking store
that hits the limit (its sqlite file is larger than the models) is one line naming it, the export
kept as it was. The layout and
parity of a good export are tests/export/test_bundle.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.faults import (
    cli,
    digests,
    make_tracking_store,
    one_error_line,
    pipeline_copy,
    run_limited,
    temps,
    truncate,
)


@pytest.fixture(autouse=True)
def _mlflow_uri_reset():
    """An in-process stage leaves MLflow's global tracking URI on this test's store; later tests
    (tests/tracking) must find theirs through MLFLOW_TRACKING_URI again."""
    yield
    import mlflow

    mlflow.set_tracking_uri(None)


def test_truncated_best_pt_is_named_at_export(tmp_path: Path, tmp_path_factory, monkeypatch, capsys) -> None:
    pipeline_copy(tmp_path_factory, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    truncate(tmp_path / "checkpoints" / "fold_0" / "best.pt", keep=0.25)
    code, err = cli(["export", "-c", "cfg.yaml"], capsys)
    line = one_error_line(err)
    assert code == 2
    assert "checkpoint checkpoints/fold_0/best.pt is truncated or corrupt" in line
    assert not (tmp_path / "exported").exists()


@pytest.mark.slow
def test_export_write_on_a_full_disk(tmp_path: Path, tmp_path_factory, monkeypatch, capsys) -> None:
    pipeline_copy(tmp_path_factory, tmp_path, export=True)
    monkeypatch.chdir(tmp_path)
    make_tracking_store(tmp_path, monkeypatch)
    exported = tmp_path / "exported"
    # this code's export first (the session workdir's may come from another test's settings): the sizes
    assert cli(["export", "-c", "cfg.yaml"], capsys)[0] == 0
    before = digests(exported)
    sizes = {p: p.stat().st_size for p in exported.rglob("*") if p.is_file()}
    # half the largest file: in a full run a limit 512 bytes below the earlier model.ts let the new one
    # pass (its size moves between exports); what is written before the two models is far smaller,
    # and the tracking store is written only after the whole bundle
    limit = max(sizes.values()) // 2
    too_big = sorted(p.relative_to(tmp_path).as_posix() for p, n in sizes.items() if n > limit)
    limited = run_limited(["export", "-c", "cfg.yaml"], limit, tmp_path)
    line = one_error_line(limited.stderr)
    assert limited.returncode == 2, limited.stderr[-3000:]
    named = [name for name in too_big if f"cannot write {name}: file too large or disk full" in line]
    assert named, (line, too_big)
    assert digests(exported) == before
    assert temps(tmp_path) == []
    code, err = cli(["export", "-c", "cfg.yaml"], capsys)
    assert code == 0, err[-3000:]
    assert (exported / "model.onnx").is_file() and temps(tmp_path) == []


@pytest.mark.slow
def test_tracking_store_on_a_full_disk(tmp_path: Path, tmp_path_factory, monkeypatch, capsys) -> None:
    """A file-size limit above every exported file but below the sqlite store's size: the bundle is
    built, the store refuses MLflow's write (sqlite: `disk I/O error`), and the stage ends with one
    line naming the store, exit 2, the previous exported/ unchanged and no temp left."""
    pipeline_copy(tmp_path_factory, tmp_path, export=True)
    monkeypatch.chdir(tmp_path)
    make_tracking_store(tmp_path, monkeypatch)
    exported, store = tmp_path / "exported", tmp_path / "mlflow.db"
    assert cli(["export", "-c", "cfg.yaml"], capsys)[0] == 0
    before = digests(exported)
    largest = max(p.stat().st_size for p in exported.rglob("*") if p.is_file())
    assert store.stat().st_size > largest + 8192, "the store must be the file that outgrows the limit"
    limited = run_limited(["export", "-c", "cfg.yaml"], largest + 4096, tmp_path)
    line = one_error_line(limited.stderr)
    assert limited.returncode == 2, limited.stderr[-3000:]
    assert f"cannot write {store}: file too large or disk full" in line, line
    assert digests(exported) == before
    assert temps(tmp_path) == []
