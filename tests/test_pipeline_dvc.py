"""The README's main command on a fresh copy of the repo, and the DVC bookkeeping users rely on.

One real `make repro` (synth data, then `dvc repro` of all four stages, CI-sized) feeds every test
here: the outputs a user sees, `dvc.yaml` declaring exactly what each stage uses (code, params and
files, the files seen by an audit hook in each stage process), `dvc status` after touching a
module, and experiments that `dvc exp show` / `dvc metrics diff` can compare.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import stage_deps
import yaml
from helpers.dvc_repo import copy_repo

pytestmark = pytest.mark.slow  # real subprocess runs: make test-fast skips this module

AUDIT_DIR = Path(__file__).resolve().parent / "file_audit"


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def fresh_repo(tmp_path_factory, repo_root) -> Path:
    """A fresh git repo holding exactly what a clone of this working tree would (tracked + unignored files)."""
    return copy_repo(repo_root, tmp_path_factory.mktemp("clone") / "repo")


@pytest.fixture(scope="module")
def env(fresh_repo: Path) -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    out = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    out["MLFLOW_TRACKING_URI"] = f"sqlite:///{fresh_repo.parent / 'mlflow.db'}"
    out.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return out


@pytest.fixture(scope="module")
def repro(fresh_repo: Path, env: dict[str, str]) -> Path:
    """`make repro` on the fresh repo, each stage process logging the files it opens; returns the log."""
    venv_bin = Path(sys.executable).parent
    # CI-sized: one short epoch (the same edit `dvc exp run -S train.epochs=1` makes)
    params = yaml.safe_load((fresh_repo / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(epochs=1, iterations_per_epoch=4)
    (fresh_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = fresh_repo.parent / "opened.tsv"
    audited = dict(env, UNET_FILE_AUDIT_LOG=str(log))
    audited["PYTHONPATH"] = os.pathsep.join(filter(None, [str(AUDIT_DIR), env.get("PYTHONPATH")]))
    # the README's main command, using this venv instead of creating one (VENV override, install step skipped)
    proc = _run(
        ["make", "repro", f"VENV={venv_bin.parent}", "-o", f"{venv_bin.parent}/.installed"], fresh_repo, audited
    )
    (fresh_repo.parent / "repro_output.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return log


def _dvc(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dvc"), *args]


def test_make_repro_on_fresh_clone(fresh_repo: Path, env: dict[str, str], repro: Path, repo_root: Path):
    committed_data_dvc = (repo_root / "data.dvc").read_text(encoding="utf-8")
    assert (fresh_repo / "data.dvc").read_text(encoding="utf-8") == committed_data_dvc, (
        "synth output differs from committed data.dvc"
    )
    for path in [
        "preprocessed/manifest.json",
        "checkpoints/fold_0/best.pt",
        "checkpoints/fold_0/train_history.csv",
        "reports/metrics.json",
        "exported/model.onnx",
        "exported/model.ts",
        "exported/configs/metadata.json",
        "exported/configs/inference.json",
        "exported/models/model.ts",
    ]:
        assert (fresh_repo / path).is_file(), f"{path} missing after dvc repro"
    metrics = _run(_dvc("metrics", "show", "--json"), fresh_repo, env).stdout
    shown = json.dumps(json.loads(metrics))
    assert "dice" in shown.lower() and "reports/metrics.json" in shown
    status = _run(_dvc("status"), fresh_repo, env).stdout
    assert "up to date" in status.lower(), status


def _member_0(stage: dict) -> dict:
    """A stage as written, or a `foreach` stage (train) as its first member, train@0, runs it."""
    if "do" not in stage:
        return stage
    return json.loads(json.dumps(stage["do"]).replace("${item}", "0"))


def _declared(stage: dict) -> tuple[list[str], list[str], list[str], list[str]]:
    """(code deps, other deps, params, outputs) of one dvc.yaml stage."""
    deps = [str(d) for d in stage.get("deps", [])]
    params = [
        p
        for entry in stage.get("params", [])
        for p in ([entry] if isinstance(entry, str) else next(iter(entry.values())))
    ]
    outs = [
        next(iter(o)) if isinstance(o, dict) else o for key in ("outs", "metrics", "plots") for o in stage.get(key, [])
    ]
    code = [d for d in deps if d.split("/")[0] == stage_deps.PACKAGE]
    return code, [d for d in deps if d not in code], params, outs


def _opened(log: Path, repo: Path) -> dict[str, set[str]]:
    """Repo-relative files each stage opened; an atomic write's temp name maps to its final name."""
    import re

    out: dict[str, set[str]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        command, _, path = line.partition("\t")
        p = Path(path)
        if not p.is_relative_to(repo):
            continue
        parts = [
            re.sub(r"^\.(.+)\.(?:tmp|old)-\d+-[0-9a-f]{8}$", r"\1", re.sub(r"^\.tmp-\d+-[0-9a-f]{8}-(.+)$", r"\1", x))
            for x in p.relative_to(repo).parts
        ]
        rel = "/".join(parts)
        # a file: not a failed probe (an import hook's path entry, a missing name), nor a folder, which
        # shutil.rmtree opens by its bare name relative to a dir_fd the hook does not see (MLflow's
        # temporary model folders hold a configs/, which would read as the repo's configs/)
        if (repo / rel).is_file():
            out.setdefault(command, set()).add(rel)
    return out


# read by every stage but not inputs of its outputs: the params file (DVC tracks its keys one by
# one), the MLflow store, and the provenance that goes into MLflow tags (git, data.dvc, dvc.lock)
NOT_INPUTS = ("params.yaml", "mlflow.db", "mlruns/", ".git/", ".dvc/", "data.dvc", "dvc.lock")


def test_dvc_yaml_declares_what_each_stage_uses(fresh_repo: Path, repro: Path, repo_root: Path):
    """Code: deps == the import closure. Params: every key the code reads is declared, and every
    declared key is read. Files: every file a stage opened is a dep or its own output, and every
    non-code dep was opened."""
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert list(stages) == list(stage_deps.STAGES)
    opened = _opened(repro, fresh_repo)
    package_files = {p.relative_to(repo_root).as_posix() for p in (repo_root / stage_deps.PACKAGE).rglob("*.py")}
    problems = []
    for name in stage_deps.STAGES:
        code, other, params, outs = _declared(_member_0(stages[name]))
        closure = stage_deps.code_closure(name)
        covered = {f for f in package_files if any(stage_deps.covers(d, f) for d in code)}
        problems += [f"{name}: imports {f}, not in deps" for f in sorted(closure - covered)]
        problems += [f"{name}: deps list {f}, which it never imports" for f in sorted(covered - closure)]
        read = stage_deps.params_read(name)
        problems += [
            f"{name}: reads param {p}, not declared"
            for p in sorted(read)
            if not any(stage_deps.covers(d, p) for d in params)
        ]
        problems += [
            f"{name}: declares param {d}, never read"
            for d in params
            if not any(stage_deps.covers(d, p) or stage_deps.covers(p, d) for p in read)
        ]
        files = {f for f in opened.get(name, set()) if not f.startswith(NOT_INPUTS)}
        files = {f for f in files if not (f.split("/")[0] == stage_deps.PACKAGE and f.endswith((".py", ".pyc")))}
        assert files, f"{name}: the audit hook saw no file opened (is {AUDIT_DIR}/sitecustomize.py loaded?)"
        problems += [
            f"{name}: reads {f}, neither a dep nor its own output"
            for f in sorted(files)
            if not any(stage_deps.covers(d, f) for d in [*code, *other, *outs])
        ]
        problems += [
            f"{name}: deps list {d}, which it never opens"
            for d in other
            if not any(stage_deps.covers(d, f) for f in files)
        ]
    assert not problems, "dvc.yaml does not match what the stages use:\n  " + "\n  ".join(problems)


def test_touching_a_module_reruns_exactly_its_stages(fresh_repo: Path, env: dict[str, str], repro: Path):
    """After a repro, touching a module makes `dvc status` report exactly the stages that import it:
    one only evaluate uses, one only export uses, and one every stage after preprocess uses."""
    closures = {s: stage_deps.code_closure(s) for s in stage_deps.STAGES}
    users = {f: {s for s in closures if f in closures[s]} for f in set().union(*closures.values())}
    for wanted in ({"evaluate"}, {"export"}, {"train", "evaluate", "export"}):
        module = min(f for f, stages in users.items() if stages == wanted)
        target = fresh_repo / module
        original = target.read_bytes()
        try:
            target.write_bytes(original + b"\n# touched\n")
            status = json.loads(_run(_dvc("status", "--json"), fresh_repo, env).stdout)
            assert {s.split("@")[0] for s in status} == wanted, (module, status)  # train@0: the foreach
            for stage, changes in status.items():  # [{"changed deps": {"pipeline/evaluation": "modified"}}]
                changed = [dep for c in changes for dep in (c.get("changed deps") or {})]
                assert changed and all(stage_deps.covers(dep, module) for dep in changed), (stage, changes)
        finally:
            target.write_bytes(original)
        assert json.loads(_run(_dvc("status", "--json"), fresh_repo, env).stdout) == {}


def _dice(node: dict) -> float | None:
    """The mean Dice of one `dvc exp show --json` row (None when the row has no metrics)."""
    data = ((node.get("data") or {}).get("metrics") or {}).get("reports/metrics.json") or {}
    values = data.get("data") or {}
    return values.get("dice_mean_foreground")


def test_experiments_show_and_diff_real_metrics(fresh_repo: Path, env: dict[str, str], repro: Path):
    """Two `dvc exp run -S ...`; `dvc exp show` has Dice for the workspace, main and both
    experiments, and `dvc metrics diff` compares main with the workspace in numbers."""
    for override in ("train.epochs=2", "train.lr=0.001"):
        _run(_dvc("exp", "run", "-S", override), fresh_repo, env)
    rows = json.loads(_run(_dvc("exp", "show", "--json"), fresh_repo, env).stdout)
    workspace = next(r for r in rows if r["rev"] == "workspace")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=fresh_repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    main = next(r for r in rows if r["rev"] == head)
    exps = [rev for group in (main.get("experiments") or []) for rev in group["revs"]]
    assert isinstance(_dice(workspace), float), workspace
    assert isinstance(_dice(main), float), main
    assert len(exps) == 2 and all(isinstance(_dice(e), float) for e in exps), exps
    assert all(0.0 <= _dice(r) <= 1.0 for r in [workspace, main, *exps])
    diff = json.loads(_run(_dvc("metrics", "diff", "--json"), fresh_repo, env).stdout)
    entry = diff["reports/metrics.json"]["dice_mean_foreground"]
    assert isinstance(entry["old"], float) and isinstance(entry["new"], float), diff


def test_repro_output_is_a_log_not_a_stream_of_redraws(fresh_repo: Path, repro: Path):
    """What `make repro` prints off a terminal: no progress-bar redraws, no warning a user can do
    nothing about (MONAI's nvImageCodec one came once per evaluated case), a few KB in all."""
    text = (fresh_repo.parent / "repro_output.txt").read_text(encoding="utf-8")
    assert "nvImageCodec" not in text
    assert "\r" not in text, "tqdm redrew a bar into a non-terminal stream"
    assert "it/s]" not in text and "case/s]" not in text
    assert len(text.encode()) <= 12_000, f"{len(text.encode())} bytes:\n{text[-3000:]}"
