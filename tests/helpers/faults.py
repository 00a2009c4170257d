"""Real faults for the CLI: a full disk (the process's file-size limit) and damaged files.

`run_limited` runs `pipeline.cli.main(argv)` in a child Python whose `RLIMIT_FSIZE` is `limit`
bytes, with SIGXFSZ ignored, so a write past the limit fails with OSError(EFBIG) the way a write to
a full disk fails with ENOSPC, instead of the signal killing the process. Python's imports write
nothing, so the child starts; files it must grow (an MLflow sqlite store) are to be created before,
and the limit chosen just below the size of the file under test.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

LIMITED_CLI = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from pipeline.cli import main
sys.exit(main(sys.argv[2:]))
"""

# the temps of pipeline.io.atomic (`.tmp-<pid>-<hex>`, `.<name>.tmp-<pid>-<hex>`, `.<name>.old-<pid>-<hex>`)
TEMP = re.compile(r"^\.(?:tmp-\d+-[0-9a-f]{8}|.+\.(?:tmp|old)-\d+-[0-9a-f]{8})$")


def run_limited(argv: list[str], limit: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`unet-pipeline <argv>` in a child process that may write files of at most `limit` bytes."""
    return subprocess.run(
        [sys.executable, "-c", LIMITED_CLI, str(limit), *argv],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )


def make_tracking_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new sqlite MLflow store under `root`, its tables created now (before any limit), as the
    process's MLFLOW_TRACKING_URI; returns the URI."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`unet-pipeline <argv>` in this process: (exit status, what it printed to stderr)."""
    from pipeline.cli import main

    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def one_error_line(stderr: str) -> str:
    """The single `error: ...` line of a failed command; no traceback around it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temps(folder: Path) -> list[Path]:
    """Atomic-write temps anywhere under `folder` (there must be none after any run)."""
    return [p for p in folder.rglob(".*") if TEMP.match(p.name)]


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut `path` to `keep` of its length, in place (what a copy that stopped half-way leaves)."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))


def pipeline_copy(tmp_path_factory: pytest.TempPathFactory, dest: Path, export: bool = False) -> Path:
    """The session's trained pipeline workdir (`helpers.evaluation.pipeline_workdir`) copied into
    `dest` for a test to damage: data/, preprocessed/, checkpoints/, reports/ (and exported/), and
    its config as `cfg.yaml`; returns the original root (read-only)."""
    import shutil

    from helpers.evaluation import pipeline_workdir
    from pipeline.config import complete_yaml

    cfg, root = pipeline_workdir(tmp_path_factory, export=export)
    names = [cfg.data.root, cfg.preprocess.output_dir, cfg.train.output_dir, cfg.evaluate.reports_dir]
    names += [cfg.export.output_dir] if export else []
    for name in names:
        shutil.copytree(root / name, dest / name)
    (dest / "cfg.yaml").write_text(complete_yaml(cfg))
    return root
