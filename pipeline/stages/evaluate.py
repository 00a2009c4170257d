"""DVC stage `evaluate`: checkpoints/best.pt + the held-out cases -> predictions/, reports/.

For every case of the manifest's `val` split the RAW source image goes through the same path the
exported predictor uses (`pipeline.inference.predict.predict_case`: preprocessing chain, whole-image
inference, inverse preprocessing), so each mask lands in `predictions/<id>.nii.gz` on exactly the
source image's grid, and is scored against the RAW source label (Dice, IoU, HD95 in mm).

Writes `reports/metrics.csv` (per case, per class), `reports/metrics.json` (flat summary, what
`dvc metrics show` prints), `reports/per_case_dice.csv` (DVC plot), `reports/figures/{best,median,
worst}.png` and `reports/figures/per_case_dice.png`, and logs metrics and figures to the pipeline's
MLflow run. Run as `python -m pipeline.stages.evaluate [--config params.yaml] [-S key=value]`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.data.manifest import load_manifest

FIGURES = "figures"


def _resolve(path: str, pre_dir: Path, what: str, case_id: str) -> Path:
    """A manifest path: absolute, relative to the working directory, or relative to preprocessed/."""
    p = Path(path)
    for candidate in [p] if p.is_absolute() else [p, pre_dir / p]:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"case {case_id}: {what} {path} not found (looked in . and {pre_dir})")


def _spacing(image: Any, spatial_dims: int) -> list[float]:
    import numpy as np

    aff = np.asarray(image.affine, dtype=float)
    return [float(s) for s in np.linalg.norm(aff[:spatial_dims, :spatial_dims], axis=0)]


def _csv_text(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) and not math.isnan(v) else v) for k, v in row.items()})
    return buf.getvalue()


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(cfg: Config, checkpoint: str | Path | None = None, device: str | None = None) -> None:
    """Evaluate `checkpoint` (default: <train.output_dir>/best.pt) on the held-out split."""
    import numpy as np
    from tqdm import tqdm

    from pipeline.evaluation.figures import save_overlay, save_per_case_dice
    from pipeline.evaluation.metrics import case_metrics, foreground_mean, metric_records, summarize
    from pipeline.inference.predict import load_source_image, load_trained_net, predict_case
    from pipeline.inference.settings import InferenceSettings
    from pipeline.io import atomic_dir, write_image, write_text_atomic

    pre_dir = Path(cfg.preprocess.output_dir)
    manifest = load_manifest(pre_dir)
    class_names = list(manifest["labels"])
    num_classes = len(class_names)
    spatial_dims = int(manifest.get("spatial_dims", cfg.data.spatial_dims))
    val_ids = list(manifest["splits"].get("val") or [])
    cases = {c["id"]: c for c in manifest["cases"]}
    if not val_ids:
        raise ValueError(f"{pre_dir / 'manifest.json'}: the val split is empty; nothing to evaluate")
    missing = [cid for cid in val_ids if cid not in cases]
    if missing:
        raise ValueError(f"{pre_dir / 'manifest.json'}: val cases {missing} have no entry under 'cases'")

    ckpt_path = Path(checkpoint) if checkpoint is not None else Path(cfg.train.output_dir) / "best.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path} not found: run the train stage first")
    net, ckpt = load_trained_net(ckpt_path, device or _default_device())
    out_channels = int(ckpt["model_args"]["out_channels"])
    if out_channels != num_classes:
        raise ValueError(
            f"{ckpt_path} predicts {out_channels} classes but the manifest lists {num_classes}: {class_names}"
        )
    settings = InferenceSettings.from_config(cfg, ckpt["model_args"])
    spec = manifest["preprocessing"]

    reports = Path(cfg.evaluate.reports_dir)
    records: list[dict[str, Any]] = []
    per_case: list[dict[str, Any]] = []
    with atomic_dir(cfg.evaluate.predictions_dir) as pred_dir:
        for cid in tqdm(val_ids, desc="evaluate", unit="case"):
            case = cases[cid]
            images = [_resolve(p, pre_dir, "source image", cid) for p in case["source_images"]]
            label_path = _resolve(case["source_label"], pre_dir, "source label", cid)
            source = load_source_image(images)
            mask, _ = predict_case(source, net, spec, settings)  # the predictor's path: a read image in
            write_image(mask, source, pred_dir / f"{cid}.nii.gz")
            label = load_source_image([label_path])
            if tuple(label.shape[1:]) != tuple(source.shape[1:]):
                raise ValueError(
                    f"case {cid}: label {label_path} has shape {tuple(label.shape[1:])}, image {tuple(source.shape[1:])}"
                )
            rows = case_metrics(mask, label, num_classes, _spacing(source, spatial_dims))
            records += metric_records(cid, rows, class_names)
            entry = {"case": cid, "dice": foreground_mean(rows, "dice"), "iou": foreground_mean(rows, "iou")}
            entry.update({f"dice_{class_names[k]}": rows[k]["dice"] for k in range(1, num_classes)})
            per_case.append(entry)

        summary = summarize(records, class_names)
        reports.mkdir(parents=True, exist_ok=True)
        columns = ["case", "class", "class_index", "dice", "iou", "hd95", "pred_voxels", "label_voxels"]
        write_text_atomic(reports / "metrics.csv", _csv_text(records, columns))
        write_text_atomic(reports / "metrics.json", json.dumps(summary, indent=2) + "\n")
        ranked = sorted(per_case, key=lambda e: (e["dice"], e["case"]))
        write_text_atomic(reports / "per_case_dice.csv", _csv_text(ranked, list(ranked[0])))

        figures = reports / FIGURES
        picks = {"worst": ranked[0], "median": ranked[len(ranked) // 2], "best": ranked[-1]}
        figure_paths = []
        for kind, entry in picks.items():
            cid = entry["case"]
            case = cases[cid]
            image = load_source_image([_resolve(p, pre_dir, "source image", cid) for p in case["source_images"]])
            label = load_source_image([_resolve(case["source_label"], pre_dir, "source label", cid)])
            pred = load_source_image([pred_dir / f"{cid}.nii.gz"])
            figure_paths.append(
                save_overlay(
                    figures / f"{kind}.png",
                    np.asarray(image),
                    np.asarray(label),
                    np.asarray(pred),
                    spatial_dims=spatial_dims,
                    num_classes=num_classes,
                    title=f"{kind}: {cid}, Dice {entry['dice']:.3f}",
                )
            )
        figure_paths.append(
            save_per_case_dice(figures / "per_case_dice.png", [e["case"] for e in ranked], [e["dice"] for e in ranked])
        )

    _log_to_mlflow(cfg, reports, summary, figure_paths, settings)
    print(
        f"evaluate: {len(val_ids)} cases, mean foreground Dice {summary.get('dice_mean_foreground', float('nan')):.4f}, "
        f"IoU {summary.get('iou_mean_foreground', float('nan')):.4f} -> {reports / 'metrics.json'}"
    )


def _log_to_mlflow(cfg: Config, reports: Path, summary: dict[str, float], figures: list[Path], settings: Any) -> None:
    """Metrics (prefixed `eval_`), the reports and figures into the pipeline's MLflow run."""
    import mlflow

    from pipeline.tracking import active_pipeline_run

    with active_pipeline_run(cfg, reports):
        mlflow.log_metrics({f"eval_{k}": v for k, v in summary.items() if math.isfinite(v)})
        mlflow.log_dict(settings.to_dict(), "evaluation/inference_settings.json")
        for name in ("metrics.csv", "metrics.json", "per_case_dice.csv"):
            mlflow.log_artifact(str(reports / name), "evaluation")
        for path in figures:
            mlflow.log_artifact(str(path), "evaluation/figures")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint to evaluate (default: <train.output_dir>/best.pt)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def run_from_args(cfg: Config, args: argparse.Namespace) -> None:
    run(cfg, checkpoint=args.checkpoint, device=args.device)


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.stages.common import stage_main

    return stage_main("evaluate", __doc__, run_from_args, argv, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
