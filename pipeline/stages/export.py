"""DVC stage `export`: checkpoints/fold_<k>/best.pt -> exported/ (TorchScript, ONNX, MONAI Bundle), verified.

With several members (`train.members`) the exported model is their ensemble (`FoldEnsemble`).

Writes `exported/model.ts`, `exported/model.onnx` (dynamic batch and spatial axes) and the MONAI
Bundle layout (`pipeline.export.bundle.build_bundle`), checked before anything replaces the previous
`exported/`: `onnx.checker`; ONNX Runtime and TorchScript against PyTorch eager on a real held-out
case at two input sizes (max abs logit difference <= export.tolerance); MONAI's `verify_metadata`
and `verify_net_in_out`. Then both models and the bundle are logged to the pipeline's MLflow run
and the ONNX model is registered as a new version of `tracking.registered_model_name`; a scan-in,
mask-out pyfunc (`pipeline.predict.served`) is registered as `tracking.served_model_name`.
Run as `unet-pipeline export [-c params.yaml] [-S key=value]`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import Config


def run(cfg: Config, checkpoint: str | Path | None = None, log_mlflow: bool = True) -> None:
    """Export `checkpoint` (default: the members' best.pt, as one ensemble) to cfg.export.output_dir,
    atomically."""
    from pipeline.data.manifest import load_manifest
    from pipeline.export.bundle import build_bundle
    from pipeline.inference import InferenceSettings
    from pipeline.io import atomic_dir, write_text_atomic
    from pipeline.model.args import ModelArgs
    from pipeline.predict.served import ServedModel
    from pipeline.tracking.model_example import mlflow_example
    from pipeline.tracking.registry import log_export
    from pipeline.training.checkpoint import load_best_checkpoint

    manifest = load_manifest(cfg.preprocess.output_dir, required=("labels", "preprocessing"))
    net, ckpt, ckpt_paths = load_best_checkpoint(cfg, manifest.labels, checkpoint, "cpu")
    model_args = ModelArgs.from_dict(ckpt["model_args"])
    out_dir = Path(cfg.export.output_dir)
    with atomic_dir(out_dir) as out:
        meta = build_bundle(out, net, ckpt, manifest, cfg, ckpt_paths)
        logged = {}
        if log_mlflow:
            tile = InferenceSettings.from_config(cfg, model_args).tile_size
            image = manifest.held_out_image(model_args.spatial_dims, model_args.in_channels)[1]
            example = mlflow_example(image, model_args, tile)
            logged = log_export(cfg, out, meta.pipeline.verification, example, model_args, ServedModel())
        # where the models went in MLflow; outside the logged bundle (it names the logged version)
        write_text_atomic(out / "mlflow.json", json.dumps(logged, indent=2) + "\n")
    report = meta.pipeline.verification
    worst, version = max(c["max_abs_diff"] for c in report["checks"]), logged.get("registered_model_version")
    registered = f"; registered {cfg.tracking.registered_model_name} v{version}" if version is not None else ""
    if logged.get("served_model_version") is not None:
        registered += f" and {logged['served_model_name']} v{logged['served_model_version']}"
    print(
        f"export: {out_dir}/ (model.ts, model.onnx, MONAI bundle) verified on case {report['case']}: "
        f"{len(report['checks'])} parity checks, max |diff| {worst:.2g} <= {cfg.export.tolerance:g}{registered}"
    )
