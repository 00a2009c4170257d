"""Where a run came from: git commit, DVC data version and config name, as MLflow tags."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from pipeline.config import Config


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit(cwd: Path | None = None) -> tuple[str | None, bool]:
    """(HEAD commit, whether the work tree has uncommitted changes); (None, False) outside git."""
    cwd = Path(cwd or Path.cwd())
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if not commit:
        return None, False
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return commit, bool(status)


def dvc_data_hash(data_root: Path) -> str | None:
    """The md5 that `<data_root>.dvc` records for the raw dataset (the DVC data version), if any."""
    dvc_file = Path(f"{Path(data_root)}.dvc")
    if not dvc_file.is_file():
        return None
    try:
        doc = yaml.safe_load(dvc_file.read_text()) or {}
        return str(doc["outs"][0]["md5"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


def config_tags(cfg: Config, cwd: Path | None = None) -> dict[str, str]:
    """Tags every pipeline run carries."""
    tags = {"config_name": cfg.name, "spatial_dims": str(cfg.data.spatial_dims), "padding": cfg.model.padding}
    commit, dirty = git_commit(cwd)
    if commit:
        tags["git_commit"] = commit
        tags["git_dirty"] = str(dirty).lower()
    data_hash = dvc_data_hash(Path(cwd or ".") / cfg.data.root)
    if data_hash:
        tags["dvc_data_md5"] = data_hash
    return tags
