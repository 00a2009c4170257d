"""Killed anywhere: SIGKILL a real `dvc repro` of the embedded default at 10 seeded random moments
spread over its four stages, re-run `dvc repro` until it finishes, and compare with an uninterrupted
run (issue 27, item 3).

A fresh copy of the repo (as `git clone` would hold it, the embedded default data generated, its
own `pipeline/` imported) first runs `dvc repro` uninterrupted: the reference, and the measured
length of each stage. Each kill then makes its stage due again (its dvc.lock entry and outputs
removed, `reports/` put back to the committed files, DVC's run cache emptied; the stages after it
run again when its new outputs differ), starts `dvc repro` in a new session, and at a seeded random
offset into the stage (stratified over the reference's length of that stage) SIGKILLs the whole
process group: DVC, the stage's Python process and its workers. Checked:

- after the kill, every file a stage declares (outs, metrics, plots; folders walked, temps
  included) holds its content from before the run, the reference's, or, for a file a stage
  rewrites as it goes (a checkpoint per epoch), a version its format's reader loads whole; never
  a half-written file;
- one plain `dvc repro` then finishes (a stale DVC lock would fail it here);
- `reports/metrics.json` equals the reference's byte for byte, and so does every declared file
  except the few whose bytes differ between any two runs (`VARIES`: a wall clock, an MLflow run
  id, torch's random serialization id, string-hash order): those equal the reference's in
  substance (the checkpoints' weights exactly, the exported models member by member);
- no temp is left in a declared output folder, nor beside one.

The config is the embedded default's with shorter training (`SHORTER`, what `dvc exp run -S`
would set): all four stages run, and the 10 kills with their re-runs take a few minutes. The
kill table is printed and, when `UNET_KILL_TABLE` names a file, written there
(benchmarks/README.md, "Killed anywhere", is a copy of one run's).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml
from helpers.dvc_repo import copy_repo, dvc, run, run_env, venv_bin

pytestmark = pytest.mark.slow  # real `dvc repro` runs, killed and re-run: make test-fast skips this

SEED = 27
STAGES = ("preprocess", "train@0", "evaluate", "export")
KILLS = {"preprocess": 2, "train@0": 4, "evaluate": 2, "export": 2}  # 10, most where resuming is
SHORTER = {"epochs": 3, "iterations_per_epoch": 10}
TABLE_ENV = "UNET_KILL_TABLE"

# declared outputs whose bytes differ between two uninterrupted runs, why, and what must still be
# the same (`_same_substance`)
VARIES = {
    "checkpoints/fold_*/*.pt": "the history holds each epoch's wall-clock time, and the MLflow run id: same weights",
    "checkpoints/fold_*/train_history.csv": "its epoch_time column is a wall-clock time: the other columns the same",
    "checkpoints/fold_*/mlflow_run.json": "the MLflow run id",
    "exported/mlflow.json": "the MLflow run id and registered model versions",
    "exported/model.onnx": "torch.onnx writes the exported program's range constraints (a graph metadata "
    "string) in string-hash order, which PYTHONHASHSEED varies per process: the same model otherwise",
    "exported/model.ts": "torch.jit.save writes a random serialization_id and each module's constants in "
    "string-hash order: the same members otherwise",
    "exported/models/model.ts": "a copy of exported/model.ts",
    "exported/configs/metadata.json": "it holds the SHA-256 and size of model.ts and model.onnx: the same otherwise",
}

STAGE_LINE = re.compile(r"^Running stage '([^']+)':")
PNG_END = b"IEND\xaeB`\x82"


def _varies(rel: str) -> bool:
    return any(fnmatch(rel, pattern) for pattern in VARIES)


def _declared(repo: Path) -> dict[str, list[str]]:
    """stage -> the paths it declares as outs, metrics and plots (`foreach` expanded per member)."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    members = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))["train"]["members"]
    out: dict[str, list[str]] = {}
    for name, stage in spec.items():
        expanded = (
            {f"{name}@{m}": json.loads(json.dumps(stage["do"]).replace("${item}", str(m))) for m in members}
            if "do" in stage
            else {name: stage}
        )
        for key, body in expanded.items():
            out[key] = [
                next(iter(o)) if isinstance(o, dict) else o
                for k in ("outs", "metrics", "plots")
                for o in body.get(k, [])
            ]
    assert tuple(out) == STAGES, out
    return out


def _snapshot(repo: Path, paths: list[str]) -> dict[str, str]:
    """relative path -> sha256 of every file under the declared `paths` (hidden files too)."""
    snap = {}
    for rel in paths:
        p = repo / rel
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        for f in files:
            snap[f.relative_to(repo).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return snap


def _is_temp(rel: str) -> bool:
    """A temp name: ours (`.tmp-<pid>-<hex>`, `.<name>.tmp-...`), DVC's (`.<token>.tmp`), any dot entry."""
    return any(part.startswith(".") for part in rel.split("/"))


def _whole(path: Path) -> str | None:
    """None when the file's format reader loads it whole, else what is wrong."""
    name = path.name
    try:
        data = path.read_bytes()
        if name.endswith(".json"):
            json.loads(data)
        elif name.endswith(".csv"):
            text = data.decode()
            rows = list(csv.reader(io.StringIO(text)))
            if not text.endswith("\n") or len(rows) < 2 or len({len(r) for r in rows}) != 1:
                return "ragged or unterminated CSV"
        elif name.endswith(".png"):
            if not data.endswith(PNG_END):
                return "PNG without its IEND chunk"
        elif name.endswith(".pt"):
            import torch

            torch.load(io.BytesIO(data), weights_only=True)
        elif name.endswith(".onnx"):
            import onnx

            onnx.checker.check_model(onnx.load_from_string(data))
        elif name.endswith((".ts", ".zip")):
            if zipfile.ZipFile(io.BytesIO(data)).testzip() is not None:
                return "zip member with a bad CRC"
        elif name.endswith(".gz"):
            gzip.decompress(data)
        elif name.endswith(".npy"):
            import numpy as np

            np.load(io.BytesIO(data))
        else:
            return "no reader to tell a whole file from a part"
    except Exception as exc:  # noqa: BLE001 - any failure to read it whole is the finding
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def _same_substance(rel: str, a: Path, b: Path) -> bool:
    """Whether a `VARIES` file at `a` equals the reference's `b` in what VARIES says must not vary."""
    if rel.endswith(".pt"):
        import torch

        x, y = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
        return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    if rel.endswith("train_history.csv"):
        rows = [list(csv.DictReader(io.StringIO(p.read_text(encoding="utf-8")))) for p in (a, b)]
        return _without(rows[0]) == _without(rows[1])
    if rel.endswith(".onnx"):
        import onnx

        models = [onnx.load(p) for p in (a, b)]
        for m in models:
            for prop in m.graph.metadata_props:
                if prop.key.endswith("range_constraints"):
                    prop.value = repr(sorted(re.findall(r"[^{},]+: VR\[[^\]]*\]", prop.value)))
        return models[0].SerializeToString(deterministic=True) == models[1].SerializeToString(deterministic=True)
    if rel.endswith(".ts"):
        zips = [zipfile.ZipFile(p) for p in (a, b)]
        names = [sorted(z.namelist()) for z in zips]
        if names[0] != names[1]:
            return False
        for name in names[0]:
            x, y = (z.read(name) for z in zips)
            if name.endswith(".data/serialization_id"):
                continue
            if name.endswith(".py") and "/code/" in name:
                x, y = sorted(x.splitlines()), sorted(y.splitlines())
            if x != y:
                return False
        return True
    if rel.endswith("metadata.json"):
        return _drop_digests(json.loads(a.read_bytes())) == _drop_digests(json.loads(b.read_bytes()))
    return True  # MLflow run ids and versions: nothing to compare


def _without(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "epoch_time"} for r in rows]


def _drop_digests(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_digests(v) for k, v in value.items() if k not in ("sha256", "bytes")}
    if isinstance(value, list):
        return [_drop_digests(v) for v in value]
    return value


def _group_gone(pgid: int, timeout: float = 30.0) -> None:
    """Wait until no live (non-zombie) process is left in the process group."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for p in psutil.process_iter(["status"]):
            try:
                if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes {alive} of group {pgid} outlived SIGKILL")


@dataclass
class Repro:
    rc: int
    starts: dict[str, float]  # stage -> seconds after start at its "Running stage" line
    seconds: float
    output: str
    killed_in: str | None = None  # the stage whose line came last before the kill
    killed_after: float = 0.0  # seconds after that line
    doing: str = ""  # the last thing the output said before the kill


def _repro(repo: Path, env: dict[str, str], kill: tuple[str, float] | None = None) -> Repro:
    """`dvc repro` in its own session; with `kill=(stage, s)`, SIGKILL its process group `s` seconds
    after the stage's "Running stage" line."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        dvc("repro"), cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    lines: queue.Queue[tuple[float, str] | None] = queue.Queue()

    def read() -> None:
        for raw in proc.stdout:
            lines.put((time.monotonic() - t0, raw.decode("utf-8", "replace")))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    starts: dict[str, float] = {}
    seen: list[str] = []
    deadline = None
    result_kill: tuple[str, float] | None = None
    while True:
        wait = None if deadline is None else max(0.0, deadline - (time.monotonic() - t0))
        try:
            item = lines.get(timeout=wait)
        except queue.Empty:
            now = time.monotonic() - t0
            os.killpg(proc.pid, signal.SIGKILL)
            last = max(starts, key=starts.get)
            result_kill = (last, now - starts[last])
            break
        if item is None:
            break
        t, line = item
        seen.append(line)
        m = STAGE_LINE.match(line)
        if m:
            starts[m.group(1)] = t
            if kill is not None and m.group(1) == kill[0]:
                deadline = t + kill[1]
    rc = proc.wait(timeout=900)
    if result_kill is not None:
        _group_gone(proc.pid)
    seconds = time.monotonic() - t0
    time.sleep(0.2)  # the reader's last lines
    while True:
        try:
            item = lines.get_nowait()
        except queue.Empty:
            break
        if item is not None:
            seen.append(item[1])
    text = "".join(seen)
    out = Repro(rc, starts, seconds, text)
    if result_kill is not None:
        out.killed_in, out.killed_after = result_kill
        said = [s.strip() for s in re.split(r"[\r\n]+", text) if s.strip()]
        out.doing = said[-1][:60] if said else ""
    return out


@dataclass
class Kill:
    stage: str
    offset: float
    result: Repro | None = None
    after_kill: dict[str, int] = field(default_factory=dict)  # old / new / whole / absent / temps
    half_written: list[str] = field(default_factory=list)
    reruns: int = 0
    rerun_ran: list[str] = field(default_factory=list)  # the stages the finishing re-run ran
    resumed: str = ""  # what the re-run's training said about last.pt
    rerun_errors: list[str] = field(default_factory=list)
    metrics_identical: bool = False
    mismatched: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    seconds: float = 0.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> tuple[Path, dict[str, str]]:
    dest = copy_repo(repo_root, tmp_path_factory.mktemp("kill") / "repo")
    params = yaml.safe_load((dest / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(SHORTER)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = run_env(dest, dest.parent / "mlflow.db")
    run(["git", "commit", "-qam", "shorter training"], dest, env)
    run([str(venv_bin() / "unet-pipeline"), "data", "synth"], dest, env)
    return dest, env


def _invalidate(repo: Path, env: dict[str, str], declared: dict[str, list[str]], stage: str) -> None:
    """Make `dvc repro` run `stage` again, as after a change to it: its entry leaves dvc.lock, its
    outputs the workspace (git-tracked reports go back to the committed, older files), and DVC's run
    cache is emptied (else it would restore them rather than run). The stages after it run again
    when its new outputs differ from the old (train's checkpoints record times and run ids)."""
    lock_path = repo / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8"))
    lock["stages"].pop(stage, None)
    lock_path.write_text(yaml.safe_dump(lock, sort_keys=False), encoding="utf-8")
    tracked = set(
        subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    )
    for rel in declared[stage]:
        if any(t == rel or t.startswith(rel + "/") for t in tracked):
            run(["git", "checkout", "HEAD", "--", rel], repo, env)
        elif (repo / rel).is_dir():
            shutil.rmtree(repo / rel)
        else:
            (repo / rel).unlink(missing_ok=True)
    shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)


def _plan(durations: dict[str, float]) -> list[Kill]:
    """KILLS[stage] moments per stage, stratified: one uniform draw in each equal slice of the first
    90 % of the stage's uninterrupted length, so a stage's kills spread over it."""
    rng = random.Random(SEED)
    plan = []
    for stage in STAGES:
        n, span = KILLS[stage], 0.9 * durations[stage]
        plan += [Kill(stage, round(rng.uniform(i * span / n, (i + 1) * span / n), 2)) for i in range(n)]
    return plan


def _table(kills: list[Kill], reference: Repro, durations: dict[str, float], total: float) -> str:
    rows = [
        "| # | killed in | s into it | its output's last line | declared files after the kill: "
        "old / new / other whole / absent / temps | half-written | re-runs to finish (stages run) | "
        "metrics.json identical | other outputs as uninterrupted | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, k in enumerate(kills, 1):
        r, a = k.result, k.after_kill
        doing = r.doing.replace("|", "/").replace("`", "'")
        rows.append(
            f"| {i} | {r.killed_in} | {r.killed_after:.1f} | `{doing}` | "
            f"{' / '.join(str(a.get(c, 0)) for c in ('old', 'new', 'whole', 'absent', 'temps'))} | "
            f"{len(k.half_written)} | {k.reruns} ({', '.join(k.rerun_ran) or 'none'}"
            f"{'; ' + k.resumed if k.resumed else ''}) | "
            f"{'yes' if k.metrics_identical else 'NO'} | "
            f"{'yes' if not k.mismatched and not k.strays else f'NO ({len(k.mismatched) + len(k.strays)})'} | "
            f"{k.seconds:.0f} |"
        )
    same = sum(k.metrics_identical and k.reruns == 1 for k in kills)
    whole = sum(not k.mismatched and not k.strays for k in kills)
    half = sum(len(k.half_written) for k in kills)
    lengths = ", ".join(f"{s} {durations[s]:.1f} s" for s in STAGES)
    rows += [
        "",
        f"{same} of {len(kills)} kills recovered to identical metrics with one `dvc repro`; {half} half-written "
        f"files; {whole} of {len(kills)} left every output as the uninterrupted run's and no temp. "
        f"Seed {SEED}; uninterrupted `dvc repro` {reference.seconds:.1f} s ({lengths}); the whole test "
        f"{total / 60:.1f} min.",
    ]
    return "\n".join(rows) + "\n"


def test_killed_anywhere_recovers(repo: tuple[Path, dict[str, str]]) -> None:
    t_start = time.monotonic()
    repo_dir, env = repo
    declared = _declared(repo_dir)
    all_declared = [p for s in STAGES for p in declared[s]]

    reference = _repro(repo_dir, env)
    assert reference.rc == 0, reference.output[-4000:]
    assert tuple(reference.starts) == STAGES, reference.starts
    bounds = [reference.starts[s] for s in STAGES] + [reference.seconds]
    durations = {s: bounds[i + 1] - bounds[i] for i, s in enumerate(STAGES)}
    ref = _snapshot(repo_dir, all_declared)
    ref_metrics = (repo_dir / "reports" / "metrics.json").read_bytes()
    ref_dir = repo_dir.parent / "reference"
    for rel in ref:
        if _varies(rel):
            (ref_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_dir / rel, ref_dir / rel)
    root_entries = {p.name for p in repo_dir.iterdir()}

    kills = _plan(durations)
    for k in kills:
        t0 = time.monotonic()
        for _attempt in range(3):  # a run that finished before its moment: the same kill, sooner
            _invalidate(repo_dir, env, declared, k.stage)
            before = _snapshot(repo_dir, all_declared)
            k.result = _repro(repo_dir, env, kill=(k.stage, k.offset))
            if k.result.killed_in is not None:
                break
            assert k.result.rc == 0, k.result.output[-4000:]
            k.offset = round(k.offset / 2, 2)
        assert k.result.killed_in is not None, f"every run finished before the kill at {k.stage} +{k.offset} s"

        after = _snapshot(repo_dir, all_declared)
        counts = dict.fromkeys(("old", "new", "whole", "absent", "temps"), 0)
        counts["absent"] = sum(rel not in after for rel in set(before) | set(ref))
        for rel, digest in after.items():
            if _is_temp(rel):
                counts["temps"] += 1  # a writer killed before its rename: not the output, swept on re-run
            elif digest == before.get(rel):
                counts["old"] += 1
            elif digest == ref.get(rel):
                counts["new"] += 1
            elif (problem := _whole(repo_dir / rel)) is None:
                counts["whole"] += 1  # a complete version the stage wrote on its way (an earlier epoch's)
            else:
                k.half_written.append(f"{rel}: {problem}")
        k.after_kill = counts

        for _ in range(3):
            rerun = _repro(repo_dir, env)
            k.reruns += 1
            k.rerun_ran = list(rerun.starts)
            said = re.search(r"resuming from \S+ after epoch \d+|already holds epoch \d+", rerun.output)
            k.resumed = said.group(0).replace("resuming from ", "resumed ") if said else ""
            if rerun.rc == 0:
                break
            k.rerun_errors.append(rerun.output[-2000:])
        final = _snapshot(repo_dir, all_declared)
        k.metrics_identical = (repo_dir / "reports" / "metrics.json").read_bytes() == ref_metrics
        k.mismatched = sorted(
            rel
            for rel in set(final) | set(ref)
            if (rel not in final or rel not in ref)
            or (final[rel] != ref[rel] and not _varies(rel))
            or (_varies(rel) and _whole(repo_dir / rel) is not None)
            or (_varies(rel) and not _same_substance(rel, repo_dir / rel, ref_dir / rel))
        )
        k.strays = sorted({p.name for p in repo_dir.iterdir()} - root_entries)
        k.seconds = time.monotonic() - t0

    table = _table(kills, reference, durations, time.monotonic() - t_start)
    print("\n" + table)
    if os.environ.get(TABLE_ENV):
        Path(os.environ[TABLE_ENV]).write_text(table, encoding="utf-8")
    problems = []
    for i, k in enumerate(kills, 1):
        where = f"kill {i} ({k.result.killed_in} +{k.result.killed_after:.1f} s)"
        problems += [f"{where}: half-written {h}" for h in k.half_written]
        problems += [f"{where}: re-run {j + 1} failed:\n{e}" for j, e in enumerate(k.rerun_errors)]
        if not k.metrics_identical:
            problems.append(f"{where}: reports/metrics.json differs from the uninterrupted run's")
        problems += [f"{where}: {rel} differs from the uninterrupted run's" for rel in k.mismatched]
        problems += [f"{where}: left {name} beside the outputs" for name in k.strays]
    assert not problems, "\n".join(problems)
