"""A DVC remote round trip (issue 27, item 5): how a second machine picks up a team's data and models.

One real `dvc repro` (embedded default data, CI-sized training) in a fresh copy of the repo, its
results committed, a local-folder remote added as the default and `dvc push`ed. Then:

- a fresh `git clone` of that repo runs `dvc pull`: `dvc status` says everything is up to date,
  `dvc repro` runs no stage, and every declared output is the pushing repo's, byte for byte;
- a push to a remote that cannot be reached fails with DVC's error and leaves the local cache whole.
  The unreachable remote is a folder under a regular *file* (`.../blocker.txt/remote`): creating it
  fails with ENOTDIR, a path error no privilege overrides, so it fails as root too (root ignores
  permission bits, so a `chmod 000` folder stops only other users: that case runs when the tests are
  not root).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers.dvc_repo import copy_repo, dvc, run, run_env, venv_bin

pytestmark = pytest.mark.slow  # a real `dvc repro`, push and pull: make test-fast skips this

STAGES = ("preprocess", "train@0", "evaluate", "export")


def _tree_digests(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `root`."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _declared_outputs(repo: Path) -> list[str]:
    spec = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    members = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))["train"]["members"]
    out = []
    for stage in spec.values():
        bodies = (
            [json.loads(json.dumps(stage["do"]).replace("${item}", str(m))) for m in members]
            if "do" in stage
            else [stage]
        )
        for body in bodies:
            out += [
                next(iter(o)) if isinstance(o, dict) else o
                for k in ("outs", "metrics", "plots")
                for o in body.get(k, [])
            ]
    return out


def _outputs_digests(repo: Path) -> dict[str, str]:
    digests = {}
    for rel in ["data", *_declared_outputs(repo)]:
        p = repo / rel
        if p.is_file():
            digests[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            digests.update({f"{rel}/{k}": v for k, v in _tree_digests(p).items()})
    return digests


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> tuple[Path, dict[str, str], Path]:
    """(repo after `dvc repro`, committed and pushed; its env; the remote folder)."""
    base = tmp_path_factory.mktemp("remote")
    repo = copy_repo(repo_root, base / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(epochs=1, iterations_per_epoch=4)  # CI-sized, as tests/test_pipeline_dvc.py
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = run_env(repo, base / "mlflow.db")
    run([str(venv_bin() / "unet-pipeline"), "data", "synth"], repo, env)
    run(dvc("repro"), repo, env)
    remote = base / "storage"
    run(dvc("remote", "add", "-d", "team", str(remote)), repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results of dvc repro, and the team's remote"], repo, env)
    push = run(dvc("push"), repo, env)
    assert "pushed" in push.stdout.lower(), push.stdout
    return repo, env, remote


def test_clone_pulls_and_reproduces_nothing(pushed: tuple[Path, dict[str, str], Path]) -> None:
    repo, env, _ = pushed
    clone = repo.parent / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], repo.parent, env)
    assert not (clone / "data").exists() and not (clone / "checkpoints").exists()
    run(dvc("pull"), clone, env)

    status = run(dvc("status"), clone, env).stdout
    assert "Data and pipelines are up to date." in status, status
    repro = run(dvc("repro"), clone, env).stdout
    assert "Running stage" not in repro, repro
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in repro, repro
    assert "Data and pipelines are up to date." in repro, repro
    assert _outputs_digests(clone) == _outputs_digests(repo)
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout == ""


def _unreachable(kind: str, base: Path) -> Path:
    if kind == "under_a_file":
        blocker = base / "blocker.txt"
        blocker.write_text("a regular file: nothing can be created under it\n")
        return blocker / "remote"
    if os.geteuid() == 0:
        pytest.skip("root ignores permission bits (CAP_DAC_OVERRIDE): a chmod 000 folder does not stop it")
    locked = base / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0)
    return locked / "remote"


@pytest.mark.parametrize("kind", ["under_a_file", "no_permission"])
def test_push_to_unreachable_remote_fails_and_keeps_cache(pushed: tuple[Path, dict[str, str], Path], kind: str):
    repo, env, remote = pushed
    target = _unreachable(kind, repo.parent)
    run(dvc("remote", "add", "--local", "-f", "unreachable", str(target)), repo, env)  # .dvc/config.local
    cache = repo / ".dvc" / "cache"
    before = _tree_digests(cache)
    assert any(k.startswith("files/") for k in before), sorted(before)[:5]
    try:
        push = subprocess.run(dvc("push", "-r", "unreachable"), cwd=repo, env=env, capture_output=True, text=True)
    finally:
        if kind == "no_permission":
            target.parent.chmod(0o700)
    said = push.stdout + push.stderr
    assert push.returncode != 0, said
    assert said.startswith("ERROR: ") and str(target.parent) in said, said  # DVC's one line, naming the path
    assert not target.exists()

    assert _tree_digests(cache) == before, "the failed push changed the local cache"
    assert "Data and pipelines are up to date." in run(dvc("status"), repo, env).stdout
    # the cache still holds everything: the team remote has all of it and nothing needs pushing
    assert "Cache and remote 'team' are in sync." in run(dvc("status", "-c", "-r", "team"), repo, env).stdout
    assert "Everything is up to date." in run(dvc("push", "-r", "team"), repo, env).stdout
    assert _tree_digests(remote)
