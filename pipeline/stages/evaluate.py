"""DVC stage `evaluate`: checkpoints/fold_<k>/best.pt + the held-out cases -> predictions/, reports/.

With several members (`train.members`, a K-fold ensemble) the members' probabilities are averaged.

Predicts every case of the manifest's `val` split from its raw source image, in the source
geometry, and scores it against the raw label (`pipeline.evaluation.held_out`). Writes
`predictions/<id>.nii.gz`, `reports/metrics.csv` (per case, per class), `reports/metrics.json` (what
`dvc metrics show` prints), `reports/per_case_dice.csv` (DVC plot, with each case's QC score) and
`reports/figures/` (overlays, uncertainty overlays, QC score against Dice), and logs them to the
pipeline's MLflow run. metrics.json also says how well the QC score finds the bad masks and how
calibrated the probabilities are (`pipeline.evaluation.quality`); the export carries the review
threshold and the temperature. Run as `unet-pipeline evaluate [-c params.yaml] [-S key=value]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config

if TYPE_CHECKING:
    from pipeline.data.manifest import Manifest
    from pipeline.inference.settings import InferenceSettings
    from pipeline.model.args import ModelArgs


def run(cfg: Config, checkpoint: str | Path | None = None, device: str | None = None) -> None:
    """Evaluate `checkpoint` (default: every member's <train.output_dir>/fold_<k>/best.pt, averaged)
    on the held-out split."""
    import tempfile

    import torch

    from pipeline.data.manifest import load_manifest
    from pipeline.evaluation.case_quality import CaseQuality
    from pipeline.evaluation.held_out import score_held_out, write_figures, write_reports
    from pipeline.inference import InferenceSettings
    from pipeline.inference.instances import WatershedSettings, boundary_index
    from pipeline.io import atomic_dir
    from pipeline.model.args import ModelArgs
    from pipeline.tracking.results import log_evaluation
    from pipeline.training.checkpoint import load_best_checkpoint

    manifest = load_manifest(cfg.preprocess.output_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net, ckpt, _ = load_best_checkpoint(cfg, manifest.labels, checkpoint, device)
    model_args = ModelArgs.from_dict(ckpt["model_args"])
    settings = InferenceSettings.from_config(cfg, model_args)
    reports = Path(cfg.evaluate.reports_dir)
    boundary = boundary_index(cfg, manifest.labels) if cfg.evaluate.instance_metrics else None
    instances = WatershedSettings.from_config(cfg, manifest.labels)
    with (
        tempfile.TemporaryDirectory(prefix="evaluate-onnx-") as tmp,
        atomic_dir(cfg.evaluate.predictions_dir) as pred_dir,
    ):
        if cfg.evaluate.runtime == "onnxruntime":
            net = _onnx_twin(cfg, net, model_args, manifest, settings, Path(tmp) / "model.onnx")
        quality = CaseQuality(Path(tmp) / "quality")
        scores = score_held_out(manifest, net, settings, pred_dir, boundary, instances, quality)
        scores.quality = quality.finish(scores.per_case)
        summary = write_reports(reports, scores, manifest.labels)
        figures = write_figures(reports / "figures", manifest, pred_dir, scores, quality)
    log_evaluation(cfg, reports, summary, figures, settings.to_dict())
    dice, iou = summary.get("dice_mean_foreground", float("nan")), summary.get("iou_mean_foreground", float("nan"))
    n = len(scores.per_case)
    print(f"evaluate: {n} cases, mean foreground Dice {dice:.4f}, IoU {iou:.4f} -> {reports / 'metrics.json'}")
    _print_quality(summary)
    if scores.instance:
        print(
            f"evaluate: V_Rand {summary['v_rand_thinned']:.4f}, V_Info {summary['v_info_thinned']:.4f} (after thinning)"
        )
    if "v_rand_watershed" in summary:
        print(
            f"evaluate: V_Rand {summary['v_rand_watershed']:.4f}, V_Info {summary['v_info_watershed']:.4f} "
            f"(watershed instances in {cfg.evaluate.predictions_dir}/instances/)"
        )


def _print_quality(summary: dict[str, float]) -> None:
    """The QC score's power to find the worst cases (and a note when it is weak), and the calibration."""
    from pipeline.inference.uncertainty import WEAK_AUROC, weak_flag

    q = summary
    flagged = f"{q['qc_flagged']:.0%}"
    print(
        f"evaluate: QC score vs Dice: Spearman {q['qc_spearman']:+.3f}, AUROC {q['qc_auroc']:.3f} for the worst "
        f"10 %; REVIEW at score >= {q['qc_threshold']:.4f} flags {flagged} of the cases"
    )
    if weak_flag(q["qc_auroc"]):
        print(
            f"evaluate: the QC score barely finds the worst cases here (AUROC {q['qc_auroc']:.3f} < {WEAK_AUROC}): "
            "use it to rank cases for review; predict calls its REVIEW a weak flag"
        )
    kept = "kept" if q["temperature_kept"] else "not kept: it does not lower the ECE"
    print(
        f"evaluate: calibration near the structures: ECE {q['calibration_ece_before']:.4f} -> "
        f"{q['calibration_ece_after']:.4f} at temperature {q['temperature']:.3f} ({kept})"
    )


def _onnx_twin(
    cfg: Config, net: Any, model_args: ModelArgs, manifest: Manifest, settings: InferenceSettings, path: Path
) -> Any:
    """`net` (a member or the ensemble) as a verified ONNX Runtime session (`evaluate.runtime: onnxruntime`)."""
    import time

    from pipeline.export.verify import verified_onnx

    t0 = time.perf_counter()
    case_id, image = manifest.held_out_image(model_args.spatial_dims, model_args.in_channels)
    twin = verified_onnx(net.cpu(), model_args, image, settings.tile_size, cfg.export.tolerance, path)
    took = time.perf_counter() - t0
    print(f"evaluate: ONNX Runtime (exported, checked against eager on case {case_id}: {took:.1f} s)")
    return twin
