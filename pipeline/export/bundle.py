"""The MONAI Bundle layout of `exported/`: metadata.json, inference.json, models/model.ts, docs/.

`build_bundle` exports the net (TorchScript, ONNX), checks both against eager
(`pipeline.export.verify`), writes metadata.json (`pipeline.export.metadata`, through
`pipeline.predict.metadata`) and inference.json (`pipeline.export.inference_config`), and runs
MONAI's own checks (`pipeline.export.bundle_verify`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import InputError
from pipeline.export.bundle_scripts import write_bundle_scripts
from pipeline.export.bundle_verify import INFERENCE, METADATA, verify_bundle
from pipeline.export.inference_config import BUNDLE_TS, inference_config
from pipeline.export.metadata import build_metadata
from pipeline.export.verify import ExportVerificationError, verification_sizes, verify_exports
from pipeline.model import legal_input_size
from pipeline.model.args import ModelArgs
from pipeline.predict.metadata import BundleMetadata, write_metadata

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.data.manifest import Manifest

__all__ = ["BUNDLE_TS", "INFERENCE", "METADATA", "build_bundle", "inference_config", "label_codes", "write_json"]

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


def _write_models(out: Path, net: Any, m: ModelArgs, opset: int) -> dict[str, Path]:
    """model.ts, its bundle copy and model.onnx (with its weights file, when dynamo wrote one)."""
    from pipeline.export.to_onnx import export_onnx
    from pipeline.export.torchscript import export_torchscript

    ts_path = export_torchscript(net, out / "model.ts")
    (out / BUNDLE_TS).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ts_path, out / BUNDLE_TS)
    onnx_path = export_onnx(net, out / "model.onnx", m.spatial_dims, m.in_channels, m.depth, m.padding, opset=opset)
    files = {"model.onnx": onnx_path, "model.ts": ts_path, BUNDLE_TS: out / BUNDLE_TS}
    if (out / "model.onnx.data").is_file():
        files["model.onnx.data"] = out / "model.onnx.data"
    return files


def label_codes(cfg: Config, labels: Sequence[str]) -> dict[str, Any]:
    """The config's `labels` codes for the bundle (DICOM SEG segments); a name the dataset lacks is an error."""
    unknown = sorted(set(cfg.labels) - set(labels[1:]))
    if unknown:
        raise InputError(f"config labels {unknown} are not foreground labels of the dataset ({list(labels[1:])})")
    return {name: codes.model_dump(mode="json") for name, codes in cfg.labels.items()}


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _optional_fields(
    cfg: Config, manifest: Manifest, net: Any, ckpt: dict[str, Any], report: dict[str, Any], checkpoints: Sequence[Path]
) -> dict[str, Any]:
    """The metadata block's optional fields: parity report, provenance, label codes, watershed, fingerprint,
    the QC review threshold and temperature (from the evaluate stage's metrics.json)."""
    from pipeline.evaluation.quality import export_fields
    from pipeline.inference.instances import WatershedSettings
    from pipeline.io.digests import weights_digest

    provenance = {
        "checkpoints": [str(p) for p in checkpoints],  # several: an ensemble, averaged probabilities
        "ensemble_members": len(checkpoints),
        "ensemble": cfg.train.ensemble if len(checkpoints) > 1 else None,  # folds or seeds
        "weights_sha256": weights_digest(net.named_parameters()),  # the SEG's algorithm version without a registry
        "epoch": ckpt.get("epoch"),
        "best_metric": ckpt.get("best_metric"),
        "data_source": str(cfg.data.root),
        "verified_on_case": report["case"],
    }
    watershed = WatershedSettings.from_config(cfg, manifest.labels)  # the predictor and bundle cut instances too
    extra = {
        "verification": report,
        "provenance": provenance,
        "label_codes": label_codes(cfg, manifest.labels),
        "instances": watershed.to_dict() if watershed else None,
        "quality": export_fields(_eval_metrics(cfg)),
    }
    fingerprint = Path(cfg.preprocess.output_dir) / "fingerprint.json"
    if fingerprint.is_file():  # the predictor's out-of-distribution check compares each input with it
        from pipeline.predict.ood import training_fingerprint

        extra["training_fingerprint"] = training_fingerprint(json.loads(fingerprint.read_text()))
    return extra


def _write_readme(out: Path, cfg: Config, meta: BundleMetadata) -> None:
    note = "; the overlap-tile inferer" if meta.pipeline.model_args.padding == "valid" else ""
    readme = BUNDLE_README.format(
        name=cfg.name,
        version=cfg.export.version,
        description=meta.standard["description"],
        opset=cfg.export.opset,
        inferer_note=note,
    )
    (out / "docs").mkdir(exist_ok=True)
    (out / "docs" / "README.md").write_text(readme)


def build_bundle(
    out: Path, net: Any, ckpt: dict[str, Any], manifest: Manifest, cfg: Config, checkpoints: Sequence[Path]
) -> BundleMetadata:
    """Export, verify and lay out the bundle.

    Args:
        out: an empty folder (the export stage's atomic staging dir).
        net: the trained network (or ensemble), eval mode, CPU.
        ckpt: member 0's checkpoint dict (model arguments, epoch, best metric).
        manifest: the preprocessed dataset's manifest (labels, spec, the held-out case).
        cfg: the pipeline config.
        checkpoints: the checkpoint files `net` came from.

    Returns:
        The metadata written to `configs/metadata.json`.

    Raises:
        ExportVerificationError: an exported model disagrees with eager beyond `export.tolerance`.
        InputError: the config's label codes name labels the dataset lacks.
    """
    from pipeline.inference import InferenceSettings

    m = ModelArgs.from_dict(ckpt["model_args"])
    settings = InferenceSettings.from_config(cfg, m)
    case_id, image = manifest.held_out_image(m.spatial_dims, m.in_channels)
    files = _write_models(out, net, m, cfg.export.opset)
    sizes = verification_sizes(legal_input_size(settings.tile_size, m.depth, m.padding), m.depth, m.padding)
    report = verify_exports(net, image, sizes, cfg.export.tolerance, files["model.onnx"], files["model.ts"])
    report["case"] = case_id
    meta = build_metadata(
        name=cfg.name,
        version=cfg.export.version,
        model_args=m,
        labels=manifest.labels,
        preprocessing=manifest["preprocessing"],
        inference=settings.to_dict(),
        model_files=files,
        channel_names=_channel_names(cfg, m.in_channels),
        modality=cfg.data.modality,
        opset=cfg.export.opset,
        extra=_optional_fields(cfg, manifest, net, ckpt, report, checkpoints),
        eval_metrics=_eval_metrics(cfg),
    )
    write_bundle_scripts(out)
    meta = _write_configs(out, meta)
    _write_readme(out, cfg, meta)
    verify_bundle(out)
    return meta


def _write_configs(out: Path, meta: BundleMetadata) -> BundleMetadata:
    """configs/metadata.json and configs/inference.json, and the same two inside model.ts (as MONAI's
    `save_net_with_metadata` embeds them, for MONAI Deploy's `-m model.ts`), checked by reading them
    back the way MONAI does. Returns the metadata with the re-saved TorchScript files' hashes."""
    from dataclasses import replace

    from pipeline.export.torchscript import embed_configs, read_embedded_configs
    from pipeline.io.digests import sha256_file

    config = inference_config(meta.pipeline)
    embedded = json.loads(json.dumps(meta.to_dict()))  # as JSON gives it back (lists, not tuples)
    embedded["unet_pipeline"].pop("models")  # a file cannot carry its own hash
    embed_configs(out / "model.ts", embedded, config)
    shutil.copy2(out / "model.ts", out / BUNDLE_TS)
    models = dict(meta.pipeline.models)
    for rel in ("model.ts", BUNDLE_TS):
        models[rel] = {"sha256": sha256_file(out / rel), "bytes": (out / rel).stat().st_size}
    meta = replace(meta, pipeline=replace(meta.pipeline, models=models))
    back = read_embedded_configs(out / "model.ts")
    if back != {"metadata.json": embedded, "inference.json": json.loads(json.dumps(config))}:
        raise ExportVerificationError(f"{out / 'model.ts'}: the configs embedded in it do not read back as written")
    write_metadata(out / METADATA, meta)
    write_json(out / INFERENCE, config)
    return meta
