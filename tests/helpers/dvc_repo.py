"""A fresh git repo holding what a clone of this working tree would, and the environment to run
`dvc` / `unet-pipeline` in it with this venv (the real-`dvc repro` tests share these)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
GIT_IDENTITY.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")


def venv_bin() -> Path:
    return Path(sys.executable).parent


def copy_repo(repo_root: Path, dest: Path) -> Path:
    """`dest` as a one-commit git repo holding the tracked and unignored files of `repo_root`'s
    working tree (what `git clone` of a commit of it would hold); returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo_root, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, files.split("\0")):
        src = repo_root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"], cwd=dest, check=True)
    return dest


def run_env(repo: Path, mlflow_db: Path) -> dict[str, str]:
    """This venv first on PATH, no analytics or telemetry, MLflow in `mlflow_db` (outside the repo),
    and `repo`'s own `pipeline/` imported by the stages: the venv's editable install points at the
    working tree the copy was made from, which may change while the copy runs (and DVC hashes the
    copy's files as the stages' code deps)."""
    out = dict(os.environ, PATH=f"{venv_bin()}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    out.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI=f"sqlite:///{mlflow_db}", **GIT_IDENTITY)
    return out


def dvc(*args: str) -> list[str]:
    return [str(venv_bin() / "dvc"), *args]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `cmd`; assert it exits 0 (the message holds the end of its output)."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc
