"""Cross-validation on Hippocampus MRI: every case scored once, by the model that did not train on it.

The learning curves (`learning_curve.py`) validate on one fixed split, the last 40 ids. This asks
two questions that split cannot answer:

- Is the last-40 split harder than the data as a whole? The preset's own split (`preprocess.folds`
  = 5 folds of all 220 cases, shuffled with the config's seed) gives each case one out-of-fold
  Dice; the report compares the cases of the fixed split's ids with the rest. The cases outside
  `../shared/` that score the export are spread over every id, like these folds.
- Does the QC score find bad masks when there are more than four bad cases to find? Pooled over
  the folds, the worst 10 % are 22 cases, not 4 (each fold's score comes from its own model and
  temperature).

Each fold is one `accuracy_hippocampus.py --fold K --epochs N` run in `<workdir>/fold_K`; its row
goes to `--results` (JSON lines) and its cases to `--cases` (CSV), so folds can run one at a time
across sessions. `--report` prints the tables from what the files hold.

    .venv/bin/python benchmarks/cross_validation.py --epochs 35 --folds 0 1 2 3 4
    .venv/bin/python benchmarks/cross_validation.py --report
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from accuracy_common import run_hippocampus
from common import emit_result, markdown_table

from pipeline.evaluation.quality import qc_metrics

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "cross_validation.jsonl"
CASES = HERE / "results" / "cross_validation_cases.csv"
CASE_FIELDS = ["fold", "case", "dice", "qc_score"]
FIXED_VAL_FROM = "hippocampus_327"  # the fixed split validates ids from here on (accuracy_hippocampus.py)
NNUNET_MEAN_DICE = 0.895  # nnU-Net, Decathlon Task04 (SOURCE.md): the headline's baseline


def run_fold(fold: int, epochs: int, workdir: Path, extra: list[str]) -> dict:
    """One fold trained and evaluated; appends its row and cases, returns the row."""
    t0 = time.perf_counter()
    result = run_hippocampus(["--fold", str(fold), "--epochs", str(epochs), "--workdir", str(workdir), *extra])
    reports = workdir / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    with open(reports / "per_case_dice.csv", newline="") as fh:
        cases = [{"fold": fold, **{k: r[k] for k in CASE_FIELDS[1:]}} for r in csv.DictReader(fh)]
    new_file = not CASES.is_file()
    CASES.parent.mkdir(parents=True, exist_ok=True)
    with CASES.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CASE_FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerows(cases)
    row = {
        "fold": fold,
        "epochs": epochs,
        "cases": len(cases),
        "val_mean_dice": result["ours"],
        "wall_min": (time.perf_counter() - t0) / 60,
        **{k: metrics.get(k) for k in ("qc_spearman", "qc_auroc", "qc_threshold", "temperature")},
        "overrides": extra[1::2],
        "when": time.strftime("%Y-%m-%d"),
    }
    with RESULTS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def report() -> None:
    if not (RESULTS.is_file() and CASES.is_file()):
        raise SystemExit(f"error: {RESULTS} or {CASES} missing: run some folds first")
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    with CASES.open(newline="") as fh:
        cases = {r["case"]: r for r in csv.DictReader(fh)}  # a fold run again replaces its cases
    keys = ["fold", "epochs", "cases", "val_mean_dice", "qc_spearman", "qc_auroc", "temperature", "when"]
    print(markdown_table(keys, [[r.get(k) for k in keys] for r in rows]))
    dice = {c: float(r["dice"]) for c, r in cases.items()}
    fixed = [d for c, d in dice.items() if c >= FIXED_VAL_FROM]
    rest = [d for c, d in dice.items() if c < FIXED_VAL_FROM]
    pooled = qc_metrics([float(cases[c]["qc_score"]) for c in dice], list(dice.values()))
    print()
    print(
        markdown_table(
            ["cases", "n", "out-of-fold mean Dice"],
            [
                ["all", len(dice), _mean(list(dice.values()))],
                [f"the fixed split's validation ids ({FIXED_VAL_FROM} on)", len(fixed), _mean(fixed)],
                ["the other ids", len(rest), _mean(rest)],
            ],
        )
    )
    print()
    print(markdown_table(["pooled over folds", *pooled], [["QC", *pooled.values()]]))
    emit_result("hippocampus_cv_mean_dice", _mean(list(dice.values())), NNUNET_MEAN_DICE, "Dice", folds=len(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="which folds to run")
    p.add_argument("--epochs", type=int, default=35, help="per fold (35: the light recipe's 15 idle minutes)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cross_validation"), help="one sub-folder per fold")
    p.add_argument("--report", action="store_true", help="only print the tables")
    p.add_argument("-S", "--set", action="append", default=[], help="config overrides for every fold")
    args = p.parse_args()
    if not args.report:
        extra = [x for s in args.set for x in ("-S", s)]
        for fold in args.folds:
            print(f"== fold {fold}: {args.epochs} epochs", flush=True)
            run_fold(fold, args.epochs, args.workdir / f"fold_{fold}", extra)
    report()


if __name__ == "__main__":
    main()
