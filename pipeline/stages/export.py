"""DVC stage `export`: checkpoints/best.pt -> exported/ (TorchScript, ONNX, MONAI Bundle), verified.

Writes `exported/model.ts`, `exported/model.onnx` (dynamic batch and spatial axes), and the MONAI
Bundle layout (`configs/metadata.json`, `configs/inference.json`, `models/model.ts`,
`docs/README.md`). Before anything replaces the previous `exported/`, it checks: `onnx.checker`;
ONNX Runtime and TorchScript vs PyTorch eager on a real held-out case at two input sizes (max abs
logit difference <= export.tolerance); MONAI's `verify_metadata` and `verify_net_in_out`. Then
both models and the bundle are logged to the pipeline's MLflow run and the ONNX model is
registered as a new version of `tracking.registered_model_name`.
Run as `python -m pipeline.stages.export [--config params.yaml] [-S key=value]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.data.manifest import load_manifest

BUNDLE_README = """# {name} (unet-pipeline export, version {version})

{description}

Files: `model.onnx` (ONNX opset {opset}, input `image`, output `logits`, dynamic batch and spatial
axes), `model.ts` (TorchScript, same I/O), `models/model.ts` (the bundle's copy),
`configs/metadata.json` (shapes, preprocessing, labels, legal sizes, SHA-256 of each model file),
`configs/inference.json` (MONAI bundle config).

Segment an image (NIfTI, NRRD, MHA, DICOM folder, PNG, TIFF) with only this folder:

    unet-pipeline predict --model model.onnx IMAGE -o mask.nii.gz

Or through MONAI (NIfTI in, NIfTI mask out, written to OUT/<name>_seg.nii.gz):

    python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\
        --bundle_root . --input_image IMAGE --output_dir OUT

Both need the `unet-pipeline` package installed (preprocessing{inferer_note}).
"""


def _held_out_case(manifest: dict[str, Any], pre_dir: Path) -> tuple[str, Any]:
    """(id, preprocessed image (C, *spatial)) of the first validation case (a training case if none)."""
    import numpy as np

    cases = {c["id"]: c for c in manifest.get("cases", [])}
    splits = manifest.get("splits", {})
    ids = list(splits.get("val") or []) or list(splits.get("train") or []) or list(cases)
    if not ids:
        raise ValueError(f"{pre_dir / 'manifest.json'} lists no cases; nothing to verify the export on")
    cid = ids[0]
    rel = Path(cases[cid]["image"])
    path = rel if rel.is_absolute() else pre_dir / rel
    if not path.is_file():
        raise FileNotFoundError(f"case {cid}: preprocessed image {path} not found; re-run the preprocess stage")
    return cid, np.load(path)


def _channel_names(cfg: Config, in_channels: int) -> list[str]:
    ds = Path(cfg.data.root) / "dataset.json"
    try:
        names = json.loads(ds.read_text()).get("channel_names") or {}
        out = [str(names[str(i)]) for i in range(in_channels)]
        return out
    except (OSError, ValueError, KeyError, AttributeError):
        return [cfg.data.modality.upper()] * in_channels


def _eval_metrics(cfg: Config) -> dict[str, Any]:
    path = Path(cfg.evaluate.reports_dir) / "metrics.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def build_bundle(
    out: Path,
    net: Any,
    model_args: dict[str, Any],
    *,
    labels: list[str],
    spec: dict[str, Any],
    settings: Any,
    image: Any,
    case_id: str,
    cfg: Config,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export, verify and lay out the bundle in `out` (an empty dir); returns the metadata."""
    from pipeline.export import export_onnx, export_torchscript, verification_sizes, verify_exports
    from pipeline.export.bundle import (
        BUNDLE_TS,
        INFERENCE,
        METADATA,
        build_metadata,
        inference_config,
        verify_bundle,
        write_json,
    )
    from pipeline.model import legal_input_size

    dims, in_ch = int(model_args["spatial_dims"]), int(model_args["in_channels"])
    depth, padding = len(model_args["features"]) - 1, str(model_args["padding"])
    if image.shape[0] != in_ch or image.ndim - 1 != dims:
        raise ValueError(
            f"held-out case {case_id}: image shape {tuple(image.shape)} does not fit a {dims}D {in_ch}-channel model"
        )

    ts_path = export_torchscript(net, out / "model.ts")
    (out / BUNDLE_TS).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ts_path, out / BUNDLE_TS)
    onnx_path = export_onnx(net, out / "model.onnx", dims, in_ch, depth, padding, opset=cfg.export.opset)

    sizes = verification_sizes(legal_input_size(settings.tile_size, depth, padding), depth, padding)
    report = verify_exports(net, image, sizes, cfg.export.tolerance, onnx_path, ts_path)
    report["case"] = case_id

    files = {"model.onnx": onnx_path, "model.ts": ts_path, BUNDLE_TS: out / BUNDLE_TS}
    if (out / "model.onnx.data").is_file():
        files["model.onnx.data"] = out / "model.onnx.data"
    meta = build_metadata(
        name=cfg.name,
        version=cfg.export.version,
        model_args=model_args,
        labels=labels,
        preprocessing=spec,
        inference=settings.to_dict(),
        model_files=files,
        channel_names=_channel_names(cfg, in_ch),
        modality=cfg.data.modality,
        opset=cfg.export.opset,
        verification=report,
        eval_metrics=_eval_metrics(cfg),
        provenance=provenance,
    )
    write_json(out / METADATA, meta)
    write_json(out / INFERENCE, inference_config(meta))
    (out / "docs").mkdir(exist_ok=True)
    (out / "docs" / "README.md").write_text(
        BUNDLE_README.format(
            name=cfg.name,
            version=cfg.export.version,
            description=meta["description"],
            opset=cfg.export.opset,
            inferer_note="; the overlap-tile inferer" if padding == "valid" else "",
        )
    )
    verify_bundle(out)
    return meta


def run(cfg: Config, checkpoint: str | Path | None = None, log_mlflow: bool = True) -> None:
    """Export `checkpoint` (default: <train.output_dir>/best.pt) to cfg.export.output_dir, atomically."""
    import mlflow

    from pipeline.export.tracking import log_exported_models
    from pipeline.export.verify import fit_to_size
    from pipeline.inference.predict import load_trained_net
    from pipeline.inference.settings import InferenceSettings
    from pipeline.io import atomic_dir, write_text_atomic
    from pipeline.model import legal_input_size
    from pipeline.tracking import active_pipeline_run

    pre_dir = Path(cfg.preprocess.output_dir)
    manifest = load_manifest(pre_dir, required=("labels", "preprocessing"))
    ckpt_path = Path(checkpoint) if checkpoint is not None else Path(cfg.train.output_dir) / "best.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path} not found: run the train stage first")
    net, ckpt = load_trained_net(ckpt_path, "cpu")
    model_args = dict(ckpt["model_args"])
    labels = [str(n) for n in manifest["labels"]]
    if int(model_args["out_channels"]) != len(labels):
        raise ValueError(f"{ckpt_path} predicts {model_args['out_channels']} classes but the manifest lists {labels}")
    settings = InferenceSettings.from_config(cfg, model_args)
    case_id, image = _held_out_case(manifest, pre_dir)
    provenance = {
        "checkpoint": str(ckpt_path),
        "epoch": ckpt.get("epoch"),
        "best_metric": ckpt.get("best_metric"),
        "data_source": str(cfg.data.root),
        "verified_on_case": case_id,
    }

    out_dir = Path(cfg.export.output_dir)
    with atomic_dir(out_dir) as out:
        meta = build_bundle(
            out,
            net,
            model_args,
            labels=labels,
            spec=manifest["preprocessing"],
            settings=settings,
            image=image,
            case_id=case_id,
            cfg=cfg,
            provenance=provenance,
        )
        logged: dict[str, Any] = {}
        if log_mlflow:
            depth, padding = len(model_args["features"]) - 1, str(model_args["padding"])
            example_size = legal_input_size([min(t, 2**depth * 4) for t in settings.tile_size], depth, padding)
            example = fit_to_size(image, example_size)[None]
            with active_pipeline_run(cfg, Path(cfg.evaluate.reports_dir)):
                logged = log_exported_models(
                    onnx_path=out / "model.onnx",
                    ts_path=out / "model.ts",
                    bundle_dir=out,
                    example=example,
                    model_args=model_args,
                    registered_model_name=cfg.tracking.registered_model_name,
                    extra_requirements=("monai",),
                )
                report = meta["unet_pipeline"]["verification"]
                mlflow.log_dict(report, "export/verification.json")
                per_runtime: dict[str, float] = {}
                for c in report["checks"]:
                    per_runtime[c["runtime"]] = max(per_runtime.get(c["runtime"], 0.0), c["max_abs_diff"])
                mlflow.log_metrics({f"export_max_abs_diff_{k}": v for k, v in per_runtime.items()})
        # where the models went in MLflow; outside the logged bundle (it names the logged version)
        write_text_atomic(out / "mlflow.json", json.dumps(logged, indent=2) + "\n")
    checks = meta["unet_pipeline"]["verification"]["checks"]
    worst = max(c["max_abs_diff"] for c in checks)
    version = logged.get("registered_model_version")
    print(
        f"export: {out_dir}/ (model.ts, model.onnx, MONAI bundle) verified on case {case_id}: "
        f"{len(checks)} parity checks, max |diff| {worst:.2g} <= {cfg.export.tolerance:g}"
        + (f"; registered {cfg.tracking.registered_model_name} v{version}" if version is not None else "")
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="checkpoint to export (default: <train.output_dir>/best.pt)")


def run_from_args(cfg: Config, args: argparse.Namespace) -> None:
    run(cfg, checkpoint=args.checkpoint)


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.stages.common import stage_main

    return stage_main("export", __doc__, run_from_args, argv, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
