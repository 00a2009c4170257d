"""The evaluate stage's work: predict the held-out cases in source geometry, score, report, draw.

Each raw source image goes through `pipeline.inference.case.predict_case` (the exported
predictor's own path: preprocessing chain, whole-image inference, inverse preprocessing), so each
mask lands on exactly the source grid and is scored against the raw source label (Dice, IoU,
HD95 in mm). One case is in memory at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.manifest import Manifest
from pipeline.errors import InputError
from pipeline.evaluation.case_quality import CaseQuality
from pipeline.inference import InferenceSettings, Net
from pipeline.inference.instances import WatershedSettings

METRICS_COLUMNS = ["case", "class", "class_index", "dice", "iou", "hd95", "pred_voxels", "label_voxels"]


@dataclass
class Scores:
    """Per case and class (`records`, the metrics.csv rows) and per case (`per_case`, ranked by Dice)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    per_case: list[dict[str, Any]] = field(default_factory=list)
    instance: dict[str, float] = field(default_factory=dict)  # V_Rand / V_Info after thinning (EM)
    quality: dict[str, float] = field(default_factory=dict)  # qc_* and calibration (`CaseQuality.finish`)

    def ranked(self) -> list[dict[str, Any]]:
        return sorted(self.per_case, key=lambda e: (e["dice"], e["case"]))


def score_held_out(
    manifest: Manifest,
    net: Net,
    settings: InferenceSettings,
    pred_dir: Path,
    boundary: int | None = None,
    instances: WatershedSettings | None = None,
    quality: CaseQuality | None = None,
) -> Scores:
    """Predict every val case into `pred_dir/<id>.nii.gz` and score it against its raw label; with
    `boundary` (a class index), also the challenge's V_Rand / V_Info of the cells it separates;
    with `instances`, the watershed's instance image in `pred_dir/instances/<id>.nii.gz`, scored
    the same way when `boundary` is given; with `quality`, each case's probabilities go to it (the
    caller's `quality.finish` then gives the QC and calibration metrics)."""
    from pipeline.evaluation.metrics import case_metrics, foreground_mean, metric_records
    from pipeline.inference.case import load_source_image, predict_case
    from pipeline.io import spacing_from_affine, write_image
    from pipeline.progress import progress

    names = manifest.labels
    scores = Scores()
    truths, cell_probs, cuts = [], [], []  # 2D slices, kept only for the instance metrics (small)
    for cid in progress(manifest.split("val"), desc="evaluate", unit="case"):
        images, label_path = manifest.sources(cid)
        source = load_source_image(images)
        mask, prob = predict_case(source, net, manifest["preprocessing"], settings)
        write_image(mask, source, pred_dir / f"{cid}.nii.gz")
        label = load_source_image([label_path])
        if tuple(label.shape[1:]) != tuple(source.shape[1:]):
            raise InputError(
                f"case {cid}: label {label_path} has shape {tuple(label.shape[1:])}, image {tuple(source.shape[1:])}"
            )
        if instances is not None:
            from pipeline.inference.instances import watershed_instances

            cut = watershed_instances(prob, instances)
            write_image(cut[None], source, pred_dir / "instances" / f"{cid}.nii.gz")
            cuts.append(cut)
        if boundary is not None:
            truths.append((np.asarray(label)[0] != boundary).astype(np.float32))
            cell_probs.append(1.0 - np.asarray(prob, dtype=np.float32)[boundary])
        if quality is not None:
            quality.add(cid, prob, mask, label)
        rows = case_metrics(mask, label, len(names), spacing_from_affine(np.asarray(source.affine)))
        scores.records += metric_records(cid, rows, names)
        entry = {"case": cid, "dice": foreground_mean(rows, "dice"), "iou": foreground_mean(rows, "iou")}
        entry.update({f"dice_{names[k]}": rows[k]["dice"] for k in range(1, len(names))})
        scores.per_case.append(entry)
    if boundary is not None:
        from pipeline.evaluation.em_metrics import scores_after_thinning

        em = scores_after_thinning(truths, cell_probs)
        scores.instance = {f"{k}_thinned" if not k.endswith("threshold") else k: v for k, v in em.items()}
        if cuts:
            scores.instance.update(instance_scores(truths, cuts))
    return scores


def instance_scores(truths: list[np.ndarray], cuts: list[np.ndarray]) -> dict[str, float]:
    """The challenge's split / merge scores of instance images as they are (no threshold to sweep)."""
    from pipeline.evaluation.em_metrics import split_merge_scores, truth_cells

    per_slice = [split_merge_scores(truth_cells(t), c) for t, c in zip(truths, cuts)]
    return {
        "v_rand_watershed": float(np.mean([s.v_rand for s in per_slice])),
        "v_info_watershed": float(np.mean([s.v_info for s in per_slice])),
    }


def write_reports(reports: Path, scores: Scores, class_names: list[str]) -> dict[str, float]:
    """metrics.csv, metrics.json (the summary, returned) and per_case_dice.csv."""
    from pipeline.evaluation.metrics import summarize
    from pipeline.io import write_csv, write_text_atomic

    summary = {**summarize(scores.records, class_names), **scores.instance, **scores.quality}
    write_csv(reports / "metrics.csv", scores.records, METRICS_COLUMNS)
    write_text_atomic(reports / "metrics.json", json.dumps(summary, indent=2) + "\n")
    ranked = scores.ranked()
    write_csv(reports / "per_case_dice.csv", ranked, list(ranked[0]))
    return summary


def write_figures(
    figures: Path, manifest: Manifest, pred_dir: Path, scores: Scores, quality: CaseQuality | None = None
) -> list[Path]:
    """Overlays of the worst, median and best case, and the per-case Dice bar chart; with `quality`
    (after its `finish`), each pick's uncertainty overlay and the QC score against Dice."""
    from pipeline.evaluation.figures import save_overlay, save_per_case_dice, save_score_scatter, save_uncertainty
    from pipeline.inference.case import load_source_image

    ranked = scores.ranked()
    picks = {"worst": ranked[0], "median": ranked[len(ranked) // 2], "best": ranked[-1]}
    spatial_dims, num_classes = int(manifest["spatial_dims"]), len(manifest.labels)
    paths = []
    for kind, entry in picks.items():
        cid = entry["case"]
        images, label_path = manifest.sources(cid)
        arrays = [np.asarray(load_source_image(p)) for p in (images, [label_path], [pred_dir / f"{cid}.nii.gz"])]
        title = f"{kind}: {cid}, Dice {entry['dice']:.3f}"
        paths.append(
            save_overlay(
                figures / f"{kind}.png", *arrays, spatial_dims=spatial_dims, num_classes=num_classes, title=title
            )
        )
        if quality is not None:
            title += f", QC score {entry['qc_score']:.3f}"
            out = figures / f"uncertainty_{kind}.png"
            entropy = quality.uncertainty(cid)
            paths.append(save_uncertainty(out, *arrays, entropy, spatial_dims=spatial_dims, title=title))
    paths.append(
        save_per_case_dice(figures / "per_case_dice.png", [e["case"] for e in ranked], [e["dice"] for e in ranked])
    )
    if quality is not None:
        qc = [(e["qc_score"], e["dice"]) for e in ranked]
        threshold = scores.quality["qc_threshold"]
        paths.append(save_score_scatter(figures / "qc_score_vs_dice.png", *zip(*qc), threshold=threshold))
    return paths
