"""Where a run came from: git commit, DVC data version, config name and machine, as MLflow tags."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
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


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, with its family and model numbers where Linux gives them.

    The same seed trains to different weights on two CPU generations (oneDNN picks its kernels by
    the instruction set: hippocampus 0.8759 on one EPYC, 0.8753 on another), and "AMD EPYC" alone
    hides which one ran.

    Args:
        cpuinfo: the file to read (Linux's); elsewhere, or where it lacks a model name,
            `platform.processor()` or the architecture.

    Returns:
        e.g. "AMD EPYC (family 26 model 2)".
    """
    name = platform.processor() or platform.machine() or "unknown"
    try:
        text = cpuinfo.read_text()
    except OSError:
        return name
    model_name = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    if model_name:
        name = model_name.group(1).strip()
        family, model = (
            re.search(r"^cpu family\s*:\s*(\d+)$", text, re.M),
            re.search(r"^model\s*:\s*(\d+)$", text, re.M),
        )
        if family and model:
            name += f" (family {family.group(1)} model {model.group(1)})"
    return name


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_tags() -> dict[str, str]:
    """The machine and the numeric libraries a run's figures depend on (see `cpu_name`)."""
    tags = {"host_cpu": cpu_name(), "host_cores": str(cpu_cores())}
    for package in ("torch", "monai"):
        try:
            tags[f"{package}_version"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return tags


def config_tags(cfg: Config, cwd: Path | None = None) -> dict[str, str]:
    """Tags every pipeline run carries: the config, the code and data versions, the machine."""
    tags = {"config_name": cfg.name, "spatial_dims": str(cfg.data.spatial_dims), "padding": cfg.model.padding}
    commit, dirty = git_commit(cwd)
    if commit:
        tags["git_commit"] = commit
        tags["git_dirty"] = str(dirty).lower()
    data_hash = dvc_data_hash(Path(cwd or ".") / cfg.data.root)
    if data_hash:
        tags["dvc_data_md5"] = data_hash
    return {**tags, **host_tags()}
