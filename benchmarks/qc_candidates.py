"""Which case-level score finds the bad masks? Candidate QC scores on trained hippocampus work dirs.

The evaluate stage scores each validation case with one QC score (`pipeline.inference.uncertainty.
quality_score`). This recomputes it and the alternatives next to it, on the validation cases of
one or more work dirs of `accuracy_hippocampus.py` / `cross_validation.py` (each holds its
preprocessed data, checkpoints and reports), and ranks them by how well they find the worst 10 % by
Dice, pooled over the work dirs:

- `1-soft_dice`: the pipeline's score (after the evaluate stage's kept temperature);
- `worst_class_1-soft_dice`: the same for the worse of the foreground classes;
- `boundary_entropy`: mean normalised entropy within one voxel of the predicted boundaries;
- `flip_disagreement`: 1 - Dice between the plain pass's mask and the left-right mirrored pass's
  (training mirrors that axis, so the model should be indifferent to it);
- `volume_z`: |z| of the predicted foreground volume against the training split's labels;
- `ratio_z`: |z| of the predicted first-class share of the foreground against the training labels.

Everything a score needs is in the work dir (the network is built from its checkpoint's own
arguments; the inference settings are the preset's, as every accuracy run uses them); the per-case
table goes to `--out` (CSV).

    .venv/bin/python benchmarks/qc_candidates.py /tmp/cross_validation/fold_*
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import accuracy_common as acc
import common  # puts the repo on sys.path: keep before the pipeline imports
import numpy as np

from pipeline.evaluation.quality import qc_metrics
from pipeline.inference.uncertainty import apply_temperature, normalized_entropy, quality_score, soft_dice

PRESET = common.REPO / "configs" / "hippocampus-3d.yaml"


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels within one voxel of a change of predicted class."""
    from scipy import ndimage

    edge = np.zeros(mask.shape, bool)
    for k in np.unique(mask):
        region = mask == k
        edge |= ndimage.binary_dilation(region) & ~region
    return ndimage.binary_dilation(edge)


def _label_stats(manifest: Any) -> tuple[np.ndarray, np.ndarray]:
    """Foreground volume and first-class share of every training label (raw files)."""
    from pipeline.inference.case import load_source_image

    vols, shares = [], []
    for cid in manifest.split("train"):
        y = np.asarray(load_source_image([manifest.sources(cid)[1]]))[0]
        fg = (y > 0).sum()
        vols.append(fg)
        shares.append((y == 1).sum() / max(fg, 1))
    return np.asarray(vols, float), np.asarray(shares, float)


def score_workdir(wd: Path) -> list[dict[str, Any]]:
    """One row per validation case: its true Dice and every candidate score."""
    import torch

    from pipeline.data.manifest import load_manifest
    from pipeline.evaluation.metrics import case_metrics, dice_iou, foreground_mean
    from pipeline.inference import InferenceSettings
    from pipeline.inference.case import load_source_image, predict_case
    from pipeline.io import spacing_from_affine
    from pipeline.model.args import ModelArgs
    from pipeline.training.checkpoint import load_best_checkpoint

    cfg = acc.load_cfg(PRESET, acc.redirected_paths(wd))
    manifest = load_manifest(cfg.preprocess.output_dir)
    metrics = json.loads((wd / "reports" / "metrics.json").read_text())
    temperature = metrics.get("temperature") if metrics.get("temperature_kept") else None
    net, ckpt, _ = load_best_checkpoint(cfg, manifest.labels, None, "cpu")
    settings = InferenceSettings.from_config(cfg, ModelArgs.from_dict(ckpt["model_args"]))
    plain = dataclasses.replace(settings, tta=False)
    mirrored = dataclasses.replace(settings, tta=True, tta_axes=(0,))
    vols, shares = _label_stats(manifest)
    rows = []
    with torch.inference_mode():
        for cid in manifest.split("val"):
            images, label_path = manifest.sources(cid)
            source = load_source_image(images)
            mask, prob = predict_case(source, net, manifest["preprocessing"], plain)
            _, mean_prob = predict_case(source, net, manifest["preprocessing"], mirrored)
            label = load_source_image([label_path])
            m, p = np.asarray(mask)[0], apply_temperature(prob, temperature)
            flipped = np.argmax(2 * np.asarray(mean_prob) - np.asarray(prob), axis=0)  # the mirrored pass alone
            per_class = case_metrics(mask, label, len(manifest.labels), spacing_from_affine(np.asarray(source.affine)))
            fg = (m > 0).sum()
            classes = range(1, p.shape[0])
            rows.append(
                {
                    "workdir": str(wd),
                    "case": cid,
                    "dice": foreground_mean(per_class, "dice"),
                    "1-soft_dice": quality_score(p, m),
                    "worst_class_1-soft_dice": max(1 - soft_dice(p[k], m == k) for k in classes),
                    "boundary_entropy": float(normalized_entropy(p)[_boundary(m)].mean()),
                    "flip_disagreement": 1 - float(np.mean(dice_iou(flipped, m, p.shape[0])[0][1:])),
                    "volume_z": abs(fg - vols.mean()) / vols.std(),
                    "ratio_z": abs((m == 1).sum() / max(fg, 1) - shares.mean()) / shares.std(),
                }
            )
            print(f"{cid}: Dice {rows[-1]['dice']:.3f}", flush=True)
    return rows


CANDIDATES = ["1-soft_dice", "worst_class_1-soft_dice", "boundary_entropy", "flip_disagreement", "volume_z", "ratio_z"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdirs", type=Path, nargs="+", help="trained accuracy_hippocampus.py work dirs")
    p.add_argument("--out", type=Path, default=Path("/tmp/qc_candidates.csv"), help="per-case table (CSV)")
    args = p.parse_args()
    acc.setup_environment(None)
    from pipeline.cli import quiet_harmless_warnings

    quiet_harmless_warnings()  # MONAI's reader warns once per case read, as in the evaluate stage
    rows = [r for wd in args.workdirs for r in score_workdir(wd)]
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dice = [r["dice"] for r in rows]
    table = []
    for name in CANDIDATES:
        pooled = qc_metrics([r[name] for r in rows], dice)
        table.append([name, pooled["qc_spearman"], pooled["qc_auroc"], pooled["qc_flagged"]])
    print(f"\n{len(rows)} cases from {len(args.workdirs)} work dir(s); per-case table: {args.out}\n")
    print(common.markdown_table(["score", "Spearman vs Dice", "AUROC (worst 10 %)", "share flagged"], table))
    best = max(table, key=lambda t: t[2])
    current = table[0][2]
    common.emit_result("hippocampus_qc_best_candidate_auroc", best[2], current, "AUROC", best=best[0])


if __name__ == "__main__":
    main()
