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

`--members` reads the work dirs instead as the members of one deep ensemble: runs on the same split
that differ only in their seed. Each validation case is scored by the ensemble's mask (the argmax
of the members' mean softmax, as `train.members` exports it) and by the first member's alone,
against the scores only an ensemble has:

- `members_1-soft_dice`: the pipeline's score on the mean softmax (each member after its own kept
  temperature);
- `member_disagreement`: 1 - the mean foreground Dice between every two members' masks;
- `mutual_information`: the mean over the ensemble mask's boundary band of H(mean p) - mean H(p_k),
  over log K: the part of the predictive entropy the members disagree on (epistemic);
- `mutual_information_fg`: the same over the dilated predicted foreground.

    .venv/bin/python benchmarks/qc_candidates.py --members /tmp/ens/s0 /tmp/ens/s1 /tmp/ens/s2
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


@dataclasses.dataclass
class Trained:
    """A work dir's trained network, its validation split and the evaluate stage's kept temperature."""

    manifest: Any
    net: Any
    settings: Any
    temperature: float | None


def load_trained(wd: Path) -> Trained:
    from pipeline.data.manifest import load_manifest
    from pipeline.inference import InferenceSettings
    from pipeline.model.args import ModelArgs
    from pipeline.training.checkpoint import load_best_checkpoint

    cfg = acc.load_cfg(PRESET, acc.redirected_paths(wd))
    manifest = load_manifest(cfg.preprocess.output_dir)
    metrics = json.loads((wd / "reports" / "metrics.json").read_text())
    temperature = metrics.get("temperature") if metrics.get("temperature_kept") else None
    net, ckpt, _ = load_best_checkpoint(cfg, manifest.labels, None, "cpu")
    settings = InferenceSettings.from_config(cfg, ModelArgs.from_dict(ckpt["model_args"]))
    return Trained(manifest, net, settings, temperature)


def _dice(mask: Any, label: Any, source: Any, classes: int) -> float:
    from pipeline.evaluation.metrics import case_metrics, foreground_mean
    from pipeline.io import spacing_from_affine

    return foreground_mean(case_metrics(mask, label, classes, spacing_from_affine(np.asarray(source.affine))), "dice")


def score_workdir(wd: Path) -> list[dict[str, Any]]:
    """One row per validation case: its true Dice and every candidate score."""
    import torch

    from pipeline.evaluation.metrics import dice_iou
    from pipeline.inference.case import load_source_image, predict_case

    trained = load_trained(wd)
    manifest, net, settings, temperature = trained.manifest, trained.net, trained.settings, trained.temperature
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
            fg = (m > 0).sum()
            classes = range(1, p.shape[0])
            rows.append(
                {
                    "workdir": str(wd),
                    "case": cid,
                    "dice": _dice(mask, label, source, len(manifest.labels)),
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


def score_members(wds: list[Path]) -> list[dict[str, Any]]:
    """One row per validation case of a seed ensemble: the ensemble's and the first member's Dice,
    and the scores only an ensemble has."""
    import itertools

    import torch
    from scipy import ndimage

    from pipeline.evaluation.metrics import dice_iou
    from pipeline.inference.case import load_source_image, predict_case

    members = [load_trained(wd) for wd in wds]
    cases = members[0].manifest.split("val")
    for wd, m in zip(wds, members):
        if m.manifest.split("val") != cases:
            raise SystemExit(f"--members: {wd} validates on other cases than {wds[0]} (members must share one split)")
    first = members[0]
    rows = []
    with torch.inference_mode():
        for cid in cases:
            images, label_path = first.manifest.sources(cid)
            source = load_source_image(images)
            probs = []
            for m in members:
                _, prob = predict_case(
                    source, m.net, m.manifest["preprocessing"], dataclasses.replace(m.settings, tta=False)
                )
                probs.append(apply_temperature(prob, m.temperature))
            mean = np.mean(probs, axis=0)
            masks = [np.argmax(p, axis=0) for p in probs]
            ens = np.argmax(mean, axis=0)
            label = load_source_image([label_path])
            k = mean.shape[0]
            pairs = [float(np.mean(dice_iou(a, b, k)[0][1:])) for a, b in itertools.combinations(masks, 2)]
            mi = normalized_entropy(mean) - np.mean([normalized_entropy(p) for p in probs], axis=0)
            rows.append(
                {
                    "case": cid,
                    "dice": _dice(ens[None], label, source, k),
                    "first_member_dice": _dice(masks[0][None], label, source, k),
                    "members_1-soft_dice": quality_score(mean, ens),
                    "member_disagreement": 1 - float(np.mean(pairs)),
                    "mutual_information": float(mi[_boundary(ens)].mean()),
                    "mutual_information_fg": float(mi[ndimage.binary_dilation(ens > 0, iterations=2)].mean()),
                }
            )
            print(f"{cid}: ensemble Dice {rows[-1]['dice']:.3f}, first member {rows[-1]['first_member_dice']:.3f}")
    return rows


CANDIDATES = ["1-soft_dice", "worst_class_1-soft_dice", "boundary_entropy", "flip_disagreement", "volume_z", "ratio_z"]
MEMBER_CANDIDATES = ["members_1-soft_dice", "member_disagreement", "mutual_information", "mutual_information_fg"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdirs", type=Path, nargs="+", help="trained accuracy_hippocampus.py work dirs")
    p.add_argument("--out", type=Path, default=Path("/tmp/qc_candidates.csv"), help="per-case table (CSV)")
    p.add_argument("--members", action="store_true", help="the work dirs are one seed ensemble's members")
    args = p.parse_args()
    acc.setup_environment(None)
    from pipeline.cli import quiet_harmless_warnings

    quiet_harmless_warnings()  # MONAI's reader warns once per case read, as in the evaluate stage
    if args.members:
        rows, names = score_members(args.workdirs), MEMBER_CANDIDATES
    else:
        rows, names = [r for wd in args.workdirs for r in score_workdir(wd)], CANDIDATES
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{len(rows)} cases from {len(args.workdirs)} work dir(s); per-case table: {args.out}")
    if args.members:
        print(
            f"mean Dice: ensemble {np.mean([r['dice'] for r in rows]):.4f}, first member "
            f"{np.mean([r['first_member_dice'] for r in rows]):.4f}"
        )
    targets = ["dice", "first_member_dice"] if args.members else ["dice"]
    for target in targets:
        dice = [r[target] for r in rows]
        table = []
        for name in names:
            pooled = qc_metrics([r[name] for r in rows], dice)
            table.append([name, pooled["qc_spearman"], pooled["qc_auroc"], pooled["qc_flagged"]])
        print(f"\nagainst {target}:\n")
        print(common.markdown_table(["score", "Spearman vs Dice", "AUROC (worst 10 %)", "share flagged"], table))
        if target == "dice":
            best = max(table, key=lambda t: t[2])
            name = (
                "hippocampus_qc_best_member_candidate_auroc" if args.members else "hippocampus_qc_best_candidate_auroc"
            )
            common.emit_result(name, best[2], table[0][2], "AUROC", best=best[0])


if __name__ == "__main__":
    main()
