"""Atomic outputs (pipeline.io.atomic): the same bytes as a direct write, and no temp left behind by
a killed writer once the folder is written again. A write that runs out of room -- a real
file-size limit in a child process, for a Python writer, torch.save (which loses the errno) and
SimpleITK (which returns after a short write) -- is one DiskFullError naming the output file, the
old file is kept and no temp is left."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.faults import temps

from pipeline.errors import DiskFullError
from pipeline.io.atomic import atomic_dir, atomic_write, sweep_stale, write_text_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_replaces_and_leaves_nothing_beside(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.json", "{}\n")
    write_text_atomic(tmp_path / "a.json", "[]\n")
    assert (tmp_path / "a.json").read_text() == "[]\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_torch_save_bytes_do_not_depend_on_the_temp_name(tmp_path: Path) -> None:
    """torch.save names its zip's folder after the file: the temp has the final name, so two saves
    of one state are the same bytes (and the archive folder is `last`, as for a direct save)."""
    import torch

    state = {"w": torch.arange(6.0)}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        with atomic_write(tmp_path / name / "last.pt") as tmp:
            torch.save(state, tmp)
    torch.save(state, tmp_path / "last.pt")
    assert (tmp_path / "a" / "last.pt").read_bytes() == (tmp_path / "b" / "last.pt").read_bytes()
    assert (tmp_path / "a" / "last.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()
    assert {n.split("/")[0] for n in zipfile.ZipFile(tmp_path / "a" / "last.pt").namelist()} == {"last"}


def test_temps_of_killed_writers_are_swept(tmp_path: Path) -> None:
    import os

    dead, alive = _dead_pid(), os.getpid()
    stale = [
        tmp_path / f".tmp-{dead}-0123abcd",  # atomic_write's folder, a half-written file inside
        tmp_path / f".preprocessed.tmp-{dead}-89abcdef",  # atomic_dir's folder
        tmp_path / f".preprocessed.old-{dead}-00ff00ff",  # atomic_dir killed between its two renames
    ]
    for path in stale:
        path.mkdir()
        (path / "last.pt").write_bytes(b"PK\x03\x04 half")
    (tmp_path / f".tmp-{dead}-11111111").mkdir()
    live = tmp_path / f".tmp-{alive}-22222222"  # a writer still running: never touched
    live.mkdir()
    keep = tmp_path / ".tmp-notes"  # not one of ours
    keep.write_text("x")
    removed = sweep_stale(tmp_path)
    assert sorted(removed) == sorted([*stale, tmp_path / f".tmp-{dead}-11111111"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, keep.name])


def test_first_write_into_a_folder_sweeps_it(tmp_path: Path) -> None:
    out = tmp_path / "checkpoints"
    out.mkdir()
    stray = out / f".tmp-{_dead_pid()}-0123abcd"
    stray.mkdir()
    (stray / "last.pt").write_bytes(b"half")
    write_text_atomic(out / "history.csv", "epoch\n1\n")
    assert sorted(p.name for p in out.iterdir()) == ["history.csv"]
    beside = tmp_path / f".exported.tmp-{_dead_pid()}-0123abcd"
    beside.mkdir()
    with atomic_dir(tmp_path / "exported") as tmp:
        (tmp / "model.onnx").write_bytes(b"onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "exported"]


# each writer, past a 50 kB file-size limit, into an output that already holds "old" content
WRITERS_PAST_THE_LIMIT = """
import json, resource, signal, sys
from pathlib import Path
import numpy as np, torch
from pipeline.io import write_image
from pipeline.io.atomic import atomic_dir, atomic_write

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
out = Path(sys.argv[1])
big = np.random.default_rng(0).integers(0, 3, (1, 200, 200, 20)).astype(np.uint8)


def python_write():
    with atomic_write(out / "a.txt") as tmp:
        tmp.write_bytes(b"x" * 100_000)


def torch_save():
    with atomic_write(out / "last.pt") as tmp:
        torch.save({"w": torch.zeros(100_000)}, tmp)


def simpleitk():
    write_image(big, np.eye(4), out / "mask.nii.gz")


def nested_in_a_folder():
    with atomic_dir(out / "exported") as tmp:
        (tmp / "small.json").write_text("{}")
        (tmp / "models").mkdir()
        with atomic_write(tmp / "models" / "model.ts") as inner:
            inner.write_bytes(b"x" * 100_000)


def numpy_in_a_folder():
    with atomic_dir(out / "exported") as tmp:
        np.save(tmp / "big.npy", np.zeros(100_000))


said = {}
for write in (python_write, torch_save, simpleitk, nested_in_a_folder, numpy_in_a_folder):
    try:
        write()
        said[write.__name__] = "no error"
    except Exception as exc:
        said[write.__name__] = f"{type(exc).__name__}: {exc}"
print(json.dumps(said))
"""


def test_writes_past_a_real_file_size_limit_name_the_output_and_keep_the_old(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in ("a.txt", "last.pt", "mask.nii.gz", "exported/model.ts"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("old")
    proc = subprocess.run(
        [sys.executable, "-c", WRITERS_PAST_THE_LIMIT, str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout.strip().splitlines()[-1])
    named = {
        "python_write": "a.txt",
        "torch_save": "last.pt",
        "simpleitk": "mask.nii.gz",
        "nested_in_a_folder": "exported/models/model.ts",
        "numpy_in_a_folder": "exported/big.npy",
    }
    for writer, name in named.items():
        assert said[writer].startswith(f"DiskFullError: cannot write {out / name}: file too large or disk full ("), said
        assert "file-size limit of 50000 bytes" in said[writer]
    assert temps(tmp_path) == []
    assert {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()} == {
        "a.txt": "old",
        "last.pt": "old",
        "mask.nii.gz": "old",
        "exported/model.ts": "old",
    }


@pytest.mark.parametrize(
    "code,why", [(errno.ENOSPC, "no space left on the device"), (errno.EDQUOT, "the disk quota is used up")]
)
def test_no_space_and_no_quota_are_a_disk_full_error(tmp_path: Path, code: int, why: str) -> None:
    """What a full disk or quota makes a Python writer raise (a real one needs a full filesystem)."""
    import os

    write_text_atomic(tmp_path / "a.json", "old")
    with pytest.raises(DiskFullError, match=rf"cannot write .*a\.json: file too large or disk full \({why}\)"):
        with atomic_write(tmp_path / "a.json") as tmp:
            tmp.write_text("half")
            raise OSError(code, os.strerror(code))
    with pytest.raises(DiskFullError, match=rf"exported/b\.onnx: file too large or disk full \({why}\)"):
        with atomic_dir(tmp_path / "exported") as tmp:
            (tmp / "b.onnx").write_text("half")
            raise OSError(code, os.strerror(code))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and (tmp_path / "a.json").read_text() == "old"
