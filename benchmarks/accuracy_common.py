"""What the two accuracy benchmarks share: a work dir, the real import, the four stages, a time budget.

Each accuracy benchmark runs the pipeline as a user would -- `unet-pipeline data import` on the
shared real data, then `pipeline.stages.{preprocess,train,evaluate,export}.run(cfg)` with a preset
config -- with every output path (data, preprocessed, checkpoints, predictions, reports, exported,
the MLflow sqlite store and its artifacts) redirected into one work dir, so nothing in the
repository changes and a run can be inspected afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import common

MARKER = ".unet_benchmark_workdir"  # a work dir we created, so wiping it on the next run is safe


def accuracy_parser(description: str, name: str, preset: str, peers: Sequence[str] = ()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick", action="store_true", help="reduced run (few cases, 1 short epoch; < 60 s), same code path"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(f"/tmp/bench_{name}"),
        help=f"where everything goes (default: /tmp/bench_{name}); wiped first",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=common.REPO / "configs" / preset,
        help=f"preset config (default: configs/{preset})",
    )
    p.add_argument(
        "--set",
        "-S",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. -S train.lr=3e-4 (repeatable)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=None, help="train.epochs (default: the preset's)")
    budget.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training wall-time budget: a timed 1-epoch probe run, then train.epochs = what fits in the rest",
    )
    p.add_argument(
        "--shared-data",
        type=Path,
        default=None,
        help="the shared datasets folder (default: $UNET_SHARED_DATA or ../shared/data)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="keep the work dir and the checkpoints a run of this script trained there; re-run only evaluate and "
        "export with the preset and -S (e.g. -S inference.tta=true), so inference settings are compared on one model",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="after preprocess, replace depth, patch, batch and features by `unet-pipeline plan`'s (-S still wins)",
    )
    if peers:
        p.add_argument(
            "--peer",
            choices=peers,
            default=None,
            help="also train and score a peer tool on the same split and machine (its own venv; see benchmarks/peers/)",
        )
        p.add_argument(
            "--peer-minutes",
            type=float,
            default=None,
            help="the peer's training budget (default: our measured training wall time, budget probe included)",
        )
        p.add_argument(
            "--ablation",
            action="store_true",
            help="train the preset and each lever of the benchmark's ABLATIONS table at the same budget",
        )
    return p


def run_hippocampus(args: Sequence[str]) -> dict[str, Any]:
    """`accuracy_hippocampus.py` with `args` in a child process (the scripts that run it many times:
    learning curves, cross-validation); returns its JSON result line. A failed run stops the caller
    with the command and the tails of its output."""
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "accuracy_hippocampus.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=common.REPO)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare_workdir(workdir: Path) -> Path:
    """An empty work dir: created, or wiped when a previous benchmark made it (never a foreign dir)."""
    workdir = workdir.expanduser().resolve()
    if workdir.exists():
        if not (workdir / MARKER).is_file() and any(workdir.iterdir()):
            raise SystemExit(
                f"error: --workdir {workdir} exists, is not empty and was not made by a benchmark; pick another"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("made by benchmarks/accuracy_*.py; wiped on the next run\n")
    return workdir


def trained_workdir(workdir: Path) -> Path:
    """A work dir an accuracy benchmark made and trained in (`--rescore`, `isbi_watershed.py`), kept as it is."""
    workdir = workdir.expanduser().resolve()
    if not (workdir / MARKER).is_file():
        raise SystemExit(f"error: {workdir} was not made by an accuracy benchmark run")
    if not any((workdir / "checkpoints").glob("fold_*/best.pt")):
        raise SystemExit(f"error: no checkpoints/fold_*/best.pt in {workdir}; train there first")
    return workdir


def setup_environment(threads: int | None) -> None:
    """No telemetry or analytics from MLflow / DVC; a fixed torch thread count."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import torch

    torch.set_num_threads(threads or common.cpu_cores())


def link_subset(files: Sequence[Path], dest: Path) -> None:
    """Symlink `files` into `dest` (a --quick import source holding only some cases)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dest / f.name).symlink_to(f.resolve())


def import_data(src: Path, out: Path, labels: str | None = None) -> float:
    """`unet-pipeline data import SRC --out OUT [--labels ...]` in a subprocess; returns its wall seconds."""
    cmd = [sys.executable, "-m", "pipeline", "data", "import", str(src), "--out", str(out)]
    if labels:
        cmd += ["--labels", labels]
    print("$ unet-pipeline " + " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out.parent, text=True, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: data import failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    print(proc.stdout.strip(), flush=True)
    return time.perf_counter() - t0


def imported_ids(data_dir: Path) -> list[str]:
    """Case ids of an imported dataset, sorted."""
    return sorted(e["id"] for e in json.loads((data_dir / "dataset.json").read_text())["training"])


def redirected_paths(workdir: Path) -> dict[str, Any]:
    """Config overrides that put every stage output (and MLflow) inside the work dir."""
    return {
        "data.root": str(workdir / "data"),
        "preprocess.output_dir": str(workdir / "preprocessed"),
        "train.output_dir": str(workdir / "checkpoints"),
        "evaluate.predictions_dir": str(workdir / "predictions"),
        "evaluate.reports_dir": str(workdir / "reports"),
        "export.output_dir": str(workdir / "exported"),
        "tracking.tracking_uri": f"sqlite:///{workdir / 'mlflow.db'}",
    }


def load_cfg(config: Path, *layers: dict[str, Any]) -> Any:
    """The preset with override layers applied in order (later wins)."""
    from pipeline.config import load_config

    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return load_config(config, merged)


def user_overrides(items: Sequence[str]) -> dict[str, Any]:
    from pipeline.config import parse_overrides

    return parse_overrides(items)


def _timed(label: str, fn: Any, *args: Any, **kwargs: Any) -> float:
    print(f"\n=== {label} ===", flush=True)
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    secs = time.perf_counter() - t0
    print(f"=== {label}: {secs:.1f} s ===", flush=True)
    return secs


def epochs_for_budget(cfg: Any, workdir: Path, minutes: float) -> tuple[int, float, float]:
    """Train 1 epoch in a throw-away probe dir; return (epochs that fit, probe seconds, seconds/epoch).

    The probe's epoch includes a validation pass and the start-up costs, so the estimate errs on
    the short side. The probe counts against the budget, and an ensemble's members share what is
    left equally. The real run then trains from scratch with `train.epochs` set, so its LR schedule
    spans exactly the epochs it gets.
    """
    from pipeline.stages import train
    from pipeline.training.checkpoint import load_checkpoint

    probe = workdir / "probe"
    pcfg = cfg.model_copy(deep=True)
    pcfg.train.epochs = 1
    pcfg.train.output_dir = probe / "checkpoints"
    pcfg.evaluate.reports_dir = probe / "reports"
    pcfg.tracking.tracking_uri = f"sqlite:///{probe / 'mlflow.db'}"
    probe_s = _timed("train (budget probe: 1 epoch)", train.run, pcfg)
    history = load_checkpoint(probe / "checkpoints" / "fold_0" / "last.pt").get("history") or []
    epoch_s = float(history[-1]["epoch_time"]) if history else probe_s
    overhead = max(probe_s - epoch_s, 0.0)
    members = len(cfg.train.members)
    left = (minutes * 60.0 - probe_s) / members - overhead
    epochs = max(1, math.floor(left / max(epoch_s, 1e-6)))
    print(
        f"budget {minutes:g} min: probe {probe_s:.1f} s ({epoch_s:.1f} s/epoch incl. validation, {overhead:.1f} s "
        "start-up) "
        f"-> train.epochs = {epochs}" + (f" for each of {members} members" if members > 1 else ""),
        flush=True,
    )
    return epochs, probe_s, epoch_s


def run_stages(
    cfg: Any, workdir: Path, minutes: float | None, plan_then: dict[str, Any] | None = None, *, train_too: bool = True
) -> tuple[Any, dict[str, float]]:
    """preprocess -> [plan] -> [budget probe] -> train -> evaluate -> export; returns (final cfg,
    seconds per stage). With `plan_then` (the -S overrides, applied again after the plan), the
    planner's depth, patch, batch and features replace the preset's once preprocess has run.
    Without `train_too` (`--rescore`), only evaluate -> export on the checkpoints already in the
    work dir; their training time is not known here and is reported as 0."""
    from pipeline.stages import evaluate, export, preprocess, train

    times: dict[str, float] = {}
    old_cwd = Path.cwd()
    os.chdir(workdir)  # MLflow puts a sqlite store's artifacts under ./mlruns: keep them in the work dir
    try:
        if not train_too:
            times["train"] = 0.0
            times["evaluate"] = _timed("evaluate (rescore)", evaluate.run, cfg)
            times["export"] = _timed("export (rescore)", export.run, cfg)
            return cfg, times
        times["preprocess"] = _timed("preprocess", preprocess.run, cfg)
        if plan_then is not None:
            from pipeline.planning import planned_config, read_fingerprint

            cfg, plan = planned_config(cfg, read_fingerprint(cfg), then=plan_then)
            print("plan:\n" + "\n".join(f"- {why}" for why in plan.reasons), flush=True)
        if minutes is not None:
            epochs, times["train_probe"], _ = epochs_for_budget(cfg, workdir, minutes)
            cfg.train.epochs = epochs
        times["train"] = 0.0
        for k in cfg.train.members:  # what dvc.yaml's foreach runs, one member after the other
            member = cfg.model_copy(deep=True)
            member.train.member = k
            what = f"{cfg.train.epochs} epochs x {cfg.train.iterations_per_epoch} iterations"
            times["train"] += _timed(f"train member {k} ({what})", train.run, member)
        times["evaluate"] = _timed("evaluate", evaluate.run, cfg)
        times["export"] = _timed("export", export.run, cfg)
    finally:
        os.chdir(old_cwd)
    return cfg, times


# ----------------------------------------------------------------------------- metrics


def best_checkpoint_probabilities(
    cfg: Any, splits: Sequence[str], tta: bool | None = None
) -> Iterator[tuple[str, str, Any, Any]]:
    """(split, case id, class probabilities (K, *spatial), label (*spatial)) of every case of
    `splits`, on the preprocessed grid, from member 0's best.pt with the evaluate stage's inference
    settings (`tta`, when given, replaces theirs). For diagnostics that need the training cases too,
    which the evaluate stage does not predict."""
    from dataclasses import replace

    import numpy as np
    import torch

    from pipeline.data.manifest import load_manifest
    from pipeline.inference import InferenceSettings, predict_probabilities
    from pipeline.model.args import ModelArgs
    from pipeline.training.checkpoint import load_trained_net

    manifest = load_manifest(cfg.preprocess.output_dir)
    net, ckpt = load_trained_net(cfg.train.member_dir(0) / "best.pt", "cpu")
    settings = InferenceSettings.from_config(cfg, ModelArgs.from_dict(ckpt["model_args"]))
    if tta is not None:
        settings = replace(settings, tta=tta)
    for split in splits:
        for cid in manifest.split(split):
            image = torch.from_numpy(np.load(manifest.path(cid, "image")).astype(np.float32))
            label = np.load(manifest.path(cid, "label"))[0]
            yield split, cid, predict_probabilities(image, net, settings).numpy(), label


def read_mask(path: Path) -> Any:
    """A label map (spatial only, int) through the pipeline's reader."""
    import numpy as np

    from pipeline.io import read_image

    if not path.is_file():
        raise SystemExit(f"error: {path} not found")
    return np.asarray(read_image(path))[0].astype(np.int64)


def read_image_array(path: Path) -> Any:
    """A single-channel image's voxels (spatial only, source dtype) through the pipeline's reader."""
    import numpy as np

    from pipeline.io import read_image

    if not path.is_file():
        raise SystemExit(f"error: {path} not found")
    return np.asarray(read_image(path))[0]


def eval_scores(cfg: Any) -> dict[tuple[str, str], dict[str, float]]:
    """Dice / IoU per (case, class) as the evaluate stage computed them (`reports/metrics.csv`,
    `pipeline.evaluation.metrics`), so a benchmark reports the pipeline's own numbers."""
    import csv

    path = Path(cfg.evaluate.reports_dir) / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: the evaluate stage did not run")
    with open(path, newline="") as fh:
        return {(r["case"], r["class"]): {"dice": float(r["dice"]), "iou": float(r["iou"])} for r in csv.DictReader(fh)}


def quality_tables(cfg: Any) -> str:
    """The evaluate stage's QC figures (issue 29) as it wrote them: qc_spearman, qc_auroc, the review
    threshold and the calibration error before / after the temperature (`reports/metrics.json`), then
    one row per validation case: Dice, QC score, flagged (`reports/per_case_dice.csv`)."""
    import csv

    from pipeline.inference.uncertainty import needs_review

    reports = Path(cfg.evaluate.reports_dir)
    metrics = json.loads((reports / "metrics.json").read_text())
    keys = ["qc_spearman", "qc_auroc", "qc_threshold", "qc_flagged", "calibration_ece_before", "calibration_ece_after"]
    keys += ["temperature", "temperature_kept"]
    summary = common.markdown_table(keys, [[metrics.get(k, float("nan")) for k in keys]])
    with open(reports / "per_case_dice.csv", newline="") as fh:
        cases = list(csv.DictReader(fh))
    threshold = metrics.get("qc_threshold")
    rows = [
        [c["case"], float(c["dice"]), score, "REVIEW" if needs_review(score, threshold) else "ok"]
        for c in sorted(cases, key=lambda c: float(c["dice"]))
        for score in [float(c["qc_score"])]
    ]
    return summary + "\n\n" + common.markdown_table(["case (worst Dice first)", "Dice", "QC score", "flag"], rows)


def stage_table(times: dict[str, float]) -> str:
    rows = [[k, v, v / 60] for k, v in times.items()]
    rows.append(["total", sum(times.values()), sum(times.values()) / 60])
    return common.markdown_table(["stage", "wall s", "wall min"], rows)


def run_pipeline(
    args: Any, import_src: Path, wd: Path, *, labels: str | None = None, layers: Any = None, quick: dict | None = None
) -> tuple[Any, dict[str, float]]:
    """CLI import of `import_src`, then the four stages with the preset plus, in order: the work-dir
    paths, `layers(data_dir)` (overrides that depend on the imported cases), the --quick overrides,
    --epochs and -S; returns (the config the stages ran with, wall seconds per step)."""
    times = {} if args.rescore else {"data import": import_data(import_src, wd / "data", labels)}
    stack = [redirected_paths(wd), *(layers(wd / "data") if layers else [])]
    if args.quick and quick:
        stack.append(quick)
    if args.epochs is not None:
        stack.append({"train.epochs": args.epochs})
    stack.append(user_overrides(args.set))
    cfg, stage_times = run_stages(
        load_cfg(args.config, *stack),
        wd,
        args.minutes,
        user_overrides(args.set) if args.plan else None,
        train_too=not args.rescore,
    )
    return cfg, {**times, **stage_times}


def print_header(title: str, args: Any, cfg: Any, times: dict[str, float], wd: Path, data_line: str) -> None:
    """The lines every accuracy report starts with: machine, config, data, work dir, training time."""
    train_s = times["train"] + times.get("train_probe", 0.0)
    probe = ", incl. the budget probe" if "train_probe" in times else ""
    print()
    print(f"## {title} ({'quick' if args.quick else 'full'} run)")
    print(f"machine: {common.machine_info('cpu')}")
    print(
        f"- config {args.config.name} + overrides; {cfg.train.epochs} epochs x {cfg.train.iterations_per_epoch} "
        f"iterations, batch {cfg.train.batch_size}, patch {cfg.train.patch_size}, features {cfg.model.features}, "
        f"{cfg.model.padding} padding; {data_line}"
    )
    print(f"- work dir {wd} (exported model: {wd / 'exported'})")
    if args.rescore:
        print("- rescored: evaluate and export re-run on the checkpoints trained earlier in the work dir")
    else:
        print(f"- training wall time {train_s / 60:.1f} min ({train_s:.0f} s{probe})")
    print()


def start(
    description: str,
    name: str,
    preset: str,
    dataset: str,
    must_exist: str,
    peers: Sequence[str] = (),
    extend: Callable[[argparse.ArgumentParser], None] | None = None,
) -> tuple[Any, Path, Path]:
    """Parse the common options (plus what `extend` adds to the parser), set threads, find
    `<shared>/<dataset>` (it must hold `must_exist`) and wipe the work dir; returns (args, source
    dataset folder, work dir)."""
    parser = accuracy_parser(description, name, preset, peers)
    if extend is not None:
        extend(parser)
    args = parser.parse_args()
    if args.rescore and (args.epochs is not None or args.minutes is not None or args.plan):
        parser.error("--rescore keeps the trained model: --epochs, --minutes and --plan do not apply")
    setup_environment(args.threads)
    src = (args.shared_data or common.shared_data_dir()) / dataset
    if not (src / must_exist).exists():
        raise SystemExit(f"error: {dataset} not found at {src} (set UNET_SHARED_DATA or --shared-data)")
    if args.rescore:
        return args, src, trained_workdir(args.workdir)
    return args, src, prepare_workdir(args.workdir)
