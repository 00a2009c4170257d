"""Learning curves on Hippocampus MRI: validation mean Dice against CPU-minutes of training, per
augmentation recipe (`train.augment.recipe`: light, nnunet), on the fixed split of
`accuracy_hippocampus.py` (first 180 cases train, last 40 validate).

A budget is idle-machine minutes. `--probe` times one epoch of each recipe (run it on an idle
machine) into `--probe-file`; each budget's run then trains `budget * 60 / seconds-per-epoch`
epochs, so a run that shares the cores later trains the same amount, and each has the LR schedule
over its own epochs. Every (recipe, budget) is its own `accuracy_hippocampus.py --epochs N` run in
its own work dir; its result line is appended to `--results` (JSON lines), so the runs can be made
one at a time, in the background, across sessions. The table and the plot (PNG, Dice against
minutes, log scale) are drawn from whatever `--results` holds.

    .venv/bin/python benchmarks/learning_curve.py --probe
    .venv/bin/python benchmarks/learning_curve.py --budgets 15 30 60 120 --recipes light nnunet
    .venv/bin/python benchmarks/learning_curve.py --report      # the table and the plot only

`--fold K` trains and validates on fold K of the preset's own split instead (all 220 cases in 5
folds; 44 validation cases spread over every id: `accuracy_hippocampus.py --fold`); its rows say
`"split": "fold K"` and get their own line in the table and the plot:

    .venv/bin/python benchmarks/learning_curve.py --budgets 30 --recipes light --fold 0

A lever on top of a recipe is `-S key=value` (any config override); its rows keep the overrides
and get their own line too, so give it its own `--workdir`:

    .venv/bin/python benchmarks/learning_curve.py --budgets 30 --recipes light \
        -S train.ema_decay=0.999 --workdir /tmp/lc_ema

`--peer nnunet` adds nnU-Net v2 (3d_fullres, fold 0 = the same split; `benchmarks/peers/`, its own
venv from `setup_nnunet.sh`) at each budget, trained for that many wall minutes (its trainer stops
on the clock, so run it on an idle machine); `--recipes` with no value runs the peer alone:

    .venv/bin/python benchmarks/learning_curve.py --budgets 15 30 60 --recipes --peer nnunet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from accuracy_common import run_hippocampus
from common import cpu_cores, emit_result, machine_info, markdown_table, shared_data_dir

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "learning_curve.jsonl"
PROBE = HERE / "results" / "learning_curve_probe.json"
PLOT = HERE / "results" / "learning_curve.png"
PEER_ROW = "nnU-Net v2"  # the `recipe` column of the peer's rows
FIXED_SPLIT = "last 40"  # the `split` of a row without one: accuracy_hippocampus.py's fixed split


def _run(recipe: str, epochs: int, workdir: Path, extra: list[str]) -> dict:
    """One accuracy_hippocampus.py run; returns its JSON result line plus the history's epoch times."""
    t0 = time.perf_counter()
    result = run_hippocampus(
        ["--epochs", str(epochs), "--workdir", str(workdir), "-S", f"train.augment.recipe={recipe}", *extra]
    )
    history = (workdir / "checkpoints" / "fold_0" / "train_history.csv").read_text().splitlines()
    header = history[0].split(",")
    times = [float(r.split(",")[header.index("epoch_time")]) for r in history[1:]]
    return {**result, "wall_s": time.perf_counter() - t0, "epoch_s": times}


def probe(recipes: list[str], workdir: Path, extra: list[str]) -> dict[str, float]:
    """Seconds per training epoch of each recipe: the median of a 3-epoch run's epochs."""
    out = {}
    for recipe in recipes:
        r = _run(recipe, 3, workdir / f"probe_{recipe}", extra)
        out[recipe] = sorted(r["epoch_s"])[len(r["epoch_s"]) // 2]
        print(f"probe {recipe}: {out[recipe]:.1f} s/epoch", flush=True)
    PROBE.parent.mkdir(parents=True, exist_ok=True)
    PROBE.write_text(json.dumps({"seconds_per_epoch": out, "machine": machine_info()}, indent=2) + "\n")
    return out


def _run_peer(budget: float, workdir: Path) -> dict:
    """nnU-Net v2 trained for `budget` wall minutes on the same import and split; its result row."""
    from accuracy_common import import_data, imported_ids, prepare_workdir
    from accuracy_hippocampus import N_VAL  # its fixed split: the last N_VAL sorted cases validate
    from peers.nnunet import run_peer

    wd = prepare_workdir(workdir)
    import_data(shared_data_dir() / "hippocampus-mri", wd / "data")
    ids = imported_ids(wd / "data")
    split = {"train": ids[:-N_VAL], "val": ids[-N_VAL:]}
    labels = json.loads((wd / "data" / "dataset.json").read_text())["labels"]
    class_names = sorted(labels, key=labels.get)
    peer = run_peer(wd / "data", split, class_names, wd, budget * 60, threads=cpu_cores())
    startup_s = float(peer.extra.get("startup_s") or 0.0)
    step_s = (peer.train_s - startup_s) / peer.iterations if peer.iterations else None
    return {
        "epochs": peer.epochs,
        "iterations": peer.iterations,
        "startup_s": startup_s,
        "s_per_iteration": step_s,  # all after start-up (steps, validation passes, checkpoints) per step
        "train_min": peer.train_s / 60,
        "val_mean_dice": peer.mean_dice,
    }


def _append(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _setting(row: dict) -> str:
    """What a row trained: its recipe plus its -S overrides (a lever is its own setting)."""
    return " ".join([row["recipe"], *row.get("overrides", [])])


def _curve(row: dict) -> str:
    """The plot line a row belongs to: its setting, plus its split when it is not the fixed one."""
    split = row.get("split", FIXED_SPLIT)
    return _setting(row) if split == FIXED_SPLIT else f"{_setting(row)} ({split})"


def report() -> None:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()] if RESULTS.is_file() else []
    if not rows:
        raise SystemExit(f"error: no results in {RESULTS}; run some budgets first")
    table = [
        [
            _setting(r),
            r.get("split", FIXED_SPLIT),
            f"{r['budget_min']:g}",
            r["epochs"],
            f"{r['train_min']:.1f}",
            f"{r['val_mean_dice']:.4f}",
            r["when"],
        ]
        for r in sorted(rows, key=lambda r: (_curve(r), r["budget_min"]))
    ]
    header = ["recipe", "split", "budget (idle CPU-min)", "epochs", "train wall min", "val mean Dice", "run"]
    print(markdown_table(header, table))
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for curve in sorted({_curve(r) for r in rows}):
        # a run that predicted nothing (nnU-Net before its first epoch ends: Dice 0) is in the table only
        runs = [r for r in rows if _curve(r) == curve and r["val_mean_dice"]]
        pts = sorted((r["budget_min"], r["val_mean_dice"]) for r in runs)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=curve)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xticks(sorted({r["budget_min"] for r in rows}))  # the budgets as plain minutes, not 3x10^1
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training budget (idle CPU-minutes, log)")
    ax.set_ylabel("validation mean Dice")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    print(f"plot: {PLOT}")
    ours = [r for r in rows if r["recipe"] != PEER_ROW and r.get("split", FIXED_SPLIT) == FIXED_SPLIT]
    if ours:
        best = max(ours, key=lambda r: r["val_mean_dice"])
        emit_result("hippocampus_learning_curve_best_val_mean_dice", best["val_mean_dice"], best["baseline"], "Dice")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--probe", action="store_true", help="time one epoch of each recipe (idle machine) and stop")
    p.add_argument("--report", action="store_true", help="only print the table and draw the plot")
    p.add_argument("--budgets", type=float, nargs="+", default=[15, 30, 60, 120], help="idle CPU-minutes")
    p.add_argument("--recipes", nargs="*", default=["light", "nnunet"], choices=["light", "nnunet"])
    p.add_argument("--peer", choices=["nnunet"], default=None, help="also nnU-Net v2 at each budget (idle machine)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/learning_curve"), help="one sub-folder per run")
    p.add_argument("-S", "--set", action="append", default=[], help="further config overrides for every run")
    p.add_argument("--fold", type=int, default=None, help="validate on this fold of the preset's own split")
    args = p.parse_args()
    if args.fold is not None and args.peer:
        raise SystemExit("error: --fold is for our recipes; the peer runs on the fixed split")
    extra = [x for s in args.set for x in ("-S", s)]
    fold = [] if args.fold is None else ["--fold", str(args.fold)]
    split = {} if args.fold is None else {"split": f"fold {args.fold}"}
    if args.probe:
        probe(args.recipes, args.workdir, extra)
        return
    if args.report:
        report()
        return
    if not PROBE.is_file():
        raise SystemExit(f"error: {PROBE} missing: run with --probe on an idle machine first")
    if args.peer:
        from peers.nnunet import venv_python

        venv_python()  # no nnU-Net venv: say so now, not after hours of our runs
    per_epoch = json.loads(PROBE.read_text())["seconds_per_epoch"]
    for budget in args.budgets:
        for recipe in args.recipes:
            epochs = max(1, round(budget * 60 / per_epoch[recipe]))
            print(f"== {recipe} at {budget:g} min: {epochs} epochs", flush=True)
            name = f"{recipe}_{budget:g}" + (f"_fold{args.fold}" if fold else "")
            r = _run(recipe, epochs, args.workdir / name, [*fold, *extra])
            row = {"recipe": recipe, **split, "budget_min": budget, "epochs": epochs}
            row["train_min"] = sum(r["epoch_s"]) / 60
            row.update(val_mean_dice=r["ours"], baseline=r["baseline"], when=time.strftime("%Y-%m-%d"))
            _append({**row, "overrides": args.set})
        if args.peer:
            print(f"== nnU-Net v2 at {budget:g} min", flush=True)
            row = _run_peer(budget, args.workdir / f"nnunetv2_{budget:g}")
            _append({"recipe": PEER_ROW, "budget_min": budget, **row, "when": time.strftime("%Y-%m-%d")})
    report()


if __name__ == "__main__":
    main()
