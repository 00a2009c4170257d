"""Do the hard hippocampus cases differ in anything their files show?

`cross_validation.py` gives every one of the 220 cases an out-of-fold Dice
(`results/cross_validation_cases.csv`). The worst cases sit in a run of ids (280-360), which
suggests another scanner, site or annotator. If their files said so, a QC flag (issue 29) could
read it where the model's probabilities cannot. This reads each case's image and label as they
lie in `../shared/` (nibabel: the header as stored) and ranks every trait by how well it finds
the worst 10 % by Dice (AUROC, taking whichever direction is better, so 0.5 is chance) and by its
Spearman correlation with the Dice, beside the pipeline's own QC score from the same file (its
AUROC is the JSON line's baseline). Traits of the label (volume, anterior share) are not known at
prediction time; they say whether the hard cases' annotations look different. Needs no model
and no training (seconds).

    .venv/bin/python benchmarks/case_traits.py
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import common  # puts the repo on sys.path
import nibabel as nib
import numpy as np

from pipeline.evaluation.quality import qc_metrics, worst_cases

CASES = Path(__file__).resolve().parent / "results" / "cross_validation_cases.csv"


def case_traits(image_path: Path, label_path: Path) -> dict[str, float]:
    """What one case's files hold, as numbers: the header, the intensities, the label's shape."""
    image, label = nib.load(image_path), nib.load(label_path)
    x = np.asarray(image.dataobj, dtype=np.float32)
    y = np.asarray(label.dataobj)
    fg = float((y > 0).sum())
    return {
        "image voxels": float(x.size),
        "image extent, first axis": float(x.shape[0]),
        "image extent, second axis": float(x.shape[1]),
        "image extent, third axis": float(x.shape[2]),
        "origin, first axis (mm)": float(image.affine[0, 3]),
        "stored as uint8 (else float32)": float(image.get_data_dtype() == np.uint8),
        "intensity mean": float(x.mean()),
        "intensity std": float(x.std()),
        "intensity 99th percentile": float(np.percentile(x, 99)),
        "share of zero voxels": float((x == 0).mean()),
        "label: foreground voxels": fg,
        "label: anterior share of the foreground": float((y == 1).sum()) / max(fg, 1.0),
    }


def rank_traits(traits: list[dict[str, float]], dice: np.ndarray) -> list[tuple[str, float, float]]:
    """(trait, Spearman against Dice, AUROC for the worst 10 %), best AUROC first; constants left out."""
    rows = []
    for name in traits[0]:
        values = np.array([t[name] for t in traits])
        if values.std() == 0:
            continue
        m = qc_metrics(values, dice)  # the evaluate stage's own figures; a trait may point either way
        rows.append((name, m["qc_spearman"], max(m["qc_auroc"], 1 - m["qc_auroc"])))
    return sorted(rows, key=lambda r: -r[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=CASES, help="per-case out-of-fold Dice (cross_validation.py)")
    parser.add_argument("--shared-data", type=Path, default=None, help="default: $UNET_SHARED_DATA or ../shared/data")
    args = parser.parse_args()
    root = (args.shared_data or common.shared_data_dir()) / "hippocampus-mri"
    if not (root / "imagesTr").is_dir():  # the accuracy benchmarks' message for the same miss
        raise SystemExit(f"error: hippocampus-mri not found at {root} (set UNET_SHARED_DATA or --shared-data)")
    if not args.cases.is_file():
        raise SystemExit(f"error: {args.cases} not found: run cross_validation.py first")
    with open(args.cases, newline="") as fh:
        cases = list(csv.DictReader(fh))
    traits = [
        case_traits(root / "imagesTr" / f"{c['case']}.nii.gz", root / "labelsTr" / f"{c['case']}.nii.gz") for c in cases
    ]
    dice = np.array([float(c["dice"]) for c in cases])
    qc = np.array([float(c["qc_score"]) for c in cases])
    ranked = rank_traits(traits, dice)
    pipeline_qc = qc_metrics(qc, dice)
    baseline = ("the pipeline's QC score (1 - soft Dice)", pipeline_qc["qc_spearman"], pipeline_qc["qc_auroc"])
    print(f"{len(cases)} cases, worst 10 %: {int(worst_cases(dice).sum())}")
    print(
        common.markdown_table(
            ["trait", "Spearman vs Dice", "AUROC, worst 10 %"],
            [(n, f"{r:+.2f}", f"{a:.2f}") for n, r, a in [*ranked, baseline]],
        )
    )
    common.emit_result("hippocampus_case_trait_best_auroc", ranked[0][2], baseline[2], "AUROC", best=ranked[0][0])


if __name__ == "__main__":
    main()
