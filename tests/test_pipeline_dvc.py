"""The README's main command on a fresh copy of the repo: synth data, then a real `dvc repro` of all four stages.

CI-sized (one short epoch); asserts what a user sees afterwards: the committed data.dvc still matches the
generated data, `dvc metrics show` prints the evaluate metrics, and exported/ holds the bundle.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def fresh_repo(tmp_path_factory, repo_root) -> Path:
    """A fresh git repo holding exactly what a clone of this working tree would (tracked + unignored files)."""
    dest = tmp_path_factory.mktemp("clone") / "repo"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo_root, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = repo_root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"], cwd=dest, check=True
    )
    return dest


def test_make_repro_on_fresh_clone(fresh_repo: Path):
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{fresh_repo / 'mlflow.db'}"
    # CI-sized: one short epoch (the same edit `dvc exp run -S train.epochs=1` makes)
    params = yaml.safe_load((fresh_repo / "params.yaml").read_text())
    params["train"].update(epochs=1, iterations_per_epoch=4)
    (fresh_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    committed_data_dvc = (fresh_repo / "data.dvc").read_text()

    # the README's main command, using this venv instead of creating one (VENV override, install step skipped)
    _run(["make", "repro", f"VENV={venv_bin.parent}", "-o", f"{venv_bin.parent}/.installed"], fresh_repo, env)

    assert (fresh_repo / "data.dvc").read_text() == committed_data_dvc, "synth output differs from committed data.dvc"
    for path in ["preprocessed/manifest.json", "checkpoints/best.pt", "reports/metrics.json", "exported/model.onnx",
                 "exported/model.ts", "exported/configs/metadata.json", "exported/configs/inference.json",
                 "exported/models/model.ts"]:
        assert (fresh_repo / path).is_file(), f"{path} missing after dvc repro"
    metrics = _run([str(venv_bin / "dvc"), "metrics", "show", "--json"], fresh_repo, env).stdout
    shown = json.dumps(json.loads(metrics))
    assert "dice" in shown.lower() and "reports/metrics.json" in shown
    status = _run([str(venv_bin / "dvc"), "status"], fresh_repo, env).stdout
    assert "up to date" in status.lower(), status
