"""The MONAI Bundle layout of `exported/`: metadata.json, inference.json, models/model.ts.

metadata.json carries MONAI's standard fields (`network_data_format` etc.) and, under
`unet_pipeline`, everything our standalone predictor needs: the model arguments, label names, the
preprocessing spec, the inference settings, the legal input sizes and a SHA-256 per model file.
inference.json is a MONAI bundle config that loads a NIfTI, applies the same preprocessing, runs
`models/model.ts` with the right inferer and writes a NIfTI mask.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.export.schema import SCHEMA_URL
from pipeline.export.to_onnx import INPUT_NAME, OUTPUT_NAME, legal_size_expression, size_rule
from pipeline.export.verify import fit_to_size, held_out_image, verification_sizes, verify_exports
from pipeline.io.digests import sha256_file
from pipeline.model import legal_input_size, margin, output_size

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

FORMAT_VERSION = 1
FIXED_FIELDS = {  # metadata.json fields that are the same for every export
    "authors": "unet-pipeline",
    "copyright": "Copyright (c) the unet-pipeline authors",
    "data_type": "nibabel",
    "intended_use": "Research only; not for clinical diagnosis.",
    "references": [
        "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI "
        "2015.",
        "Cicek O et al. 3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation. MICCAI 2016.",
    ],
}
METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
BUNDLE_TS = "models/model.ts"


def _versions() -> dict[str, str]:
    import monai
    import numpy
    import torch

    return {"monai": monai.__version__, "torch": torch.__version__.split("+")[0], "numpy": numpy.__version__}


def _package_versions(names: Sequence[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _io_shapes(spatial_dims: int, depth: int, padding: str) -> tuple[list[str], list[str]]:
    """Input and output spatial shapes as bundle expressions in `n` (n=1: the smallest legal size)."""
    step, _, smallest = size_rule(depth, padding)
    inp = legal_size_expression(depth, padding)
    if padding == "same":
        return [inp] * spatial_dims, [inp] * spatial_dims
    out_base = output_size((smallest,), depth, padding)[0] - step
    out = f"{step}*n" if out_base == 0 else f"{step}*n{out_base:+d}"
    return [inp] * spatial_dims, [out] * spatial_dims


def _intensity_text(norm: Mapping[str, Any] | None) -> str:
    if not norm or norm.get("scheme") in (None, "none"):
        return "none (raw intensities)"
    scheme = norm["scheme"]
    parts = [f"{scheme}"]
    if norm.get("clip") is not None:
        parts.append(f"clipped to {list(norm['clip'])}")
    if norm.get("mean") is not None and norm.get("std") is not None:
        parts.append(f"z-score with fixed mean {norm['mean']:.6g}, std {norm['std']:.6g}")
    else:
        parts.append("z-score per image" + (" over nonzero voxels" if norm.get("nonzero") else ""))
    return ", ".join(parts)


def _description(model_args: Mapping[str, Any], labels_text: str) -> str:
    dims, depth, padding = int(model_args["spatial_dims"]), len(model_args["features"]) - 1, str(model_args["padding"])
    in_ch, out_ch = int(model_args["in_channels"]), int(model_args["out_channels"])
    step, offset, smallest = size_rule(depth, padding)
    if padding == "valid":
        sizes = (
            f"Valid padding: the output is {margin(depth)} voxels smaller per side than the input; legal input "
            f"sizes are {step}*k + {offset} (>= {smallest}); whole images use overlap-tile inference."
        )
    else:
        sizes = f"Same padding: legal input sizes are multiples of {step}; whole images use sliding windows."
    return (
        f"U-Net (Ronneberger et al. 2015; features {list(model_args['features'])}, {padding} padding) trained by "
        f"unet-pipeline. Input: {in_ch}-channel {dims}D image, preprocessed as recorded under "
        f"unet_pipeline.preprocessing; output: {out_ch}-channel logits ({labels_text}). {sizes}"
    )


def _network_data_format(
    model_args: Mapping[str, Any], labels: Sequence[str], channel_names: Sequence[str], modality: str
) -> dict[str, Any]:
    """MONAI's `network_data_format`: the model's input and output, channel by channel."""
    dims, depth, padding = int(model_args["spatial_dims"]), len(model_args["features"]) - 1, str(model_args["padding"])
    in_shape, out_shape = _io_shapes(dims, depth, padding)
    common = {"type": "image", "dtype": "float32", "value_range": [], "is_patch_data": True}
    image = {"format": "hounsfield" if modality == "ct" else "magnitude", "modality": modality.upper()}
    return {
        "inputs": {
            INPUT_NAME: {
                **common,
                **image,
                "num_channels": int(model_args["in_channels"]),
                "spatial_shape": in_shape,
                "channel_def": {str(i): n for i, n in enumerate(channel_names)},
            },
        },
        "outputs": {
            "pred": {
                **common,
                "format": "segmentation",
                "num_channels": int(model_args["out_channels"]),
                "spatial_shape": out_shape,
                "channel_def": {str(i): n for i, n in enumerate(labels)},
            },
        },
    }


def _pipeline_section(model_args: Mapping[str, Any], inference: Mapping[str, Any], **recorded: Any) -> dict[str, Any]:
    """What this package's predictor reads back: sizes, tiles, settings, hashes and the `recorded` rest."""
    depth, padding = len(model_args["features"]) - 1, str(model_args["padding"])
    step, offset, smallest = size_rule(depth, padding)
    input_tile = list(legal_input_size([int(t) for t in inference["tile_size"]], depth, padding))
    preprocessing, files = recorded.pop("preprocessing"), recorded.pop("model_files")
    norm = preprocessing.get("normalization")
    return {
        "format_version": FORMAT_VERSION,
        "model_args": dict(model_args),
        "preprocessing": dict(preprocessing),
        "orientation": preprocessing.get("orientation"),
        "spacing": preprocessing.get("spacing"),
        "intensity_normalization": dict(norm) if norm else None,
        "inference": dict(inference),
        "padding": padding,
        "depth": depth,
        "margin": margin(depth, padding),
        "legal_input_size": {
            "rule": f"{step}*k + {offset}" if offset else f"{step}*k",
            "step": step,
            "offset": offset,
            "smallest": smallest,
            "bundle_expression": legal_size_expression(depth, padding),
        },
        "input_tile": input_tile,
        "output_tile": list(output_size(input_tile, depth, padding)),
        "onnx": {"input": INPUT_NAME, "output": OUTPUT_NAME, "opset": recorded.pop("opset")},
        "models": {rel: {"sha256": sha256_file(p), "bytes": Path(p).stat().st_size} for rel, p in files.items()},
        **recorded,
    }


def build_metadata(
    *,
    name: str,
    version: str,
    model_args: Mapping[str, Any],
    labels: Sequence[str],
    preprocessing: Mapping[str, Any],
    inference: Mapping[str, Any],
    model_files: Mapping[str, str | Path],
    channel_names: Sequence[str] | None = None,
    modality: str = "other",
    opset: int | None = None,
    verification: Mapping[str, Any] | None = None,
    eval_metrics: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """metadata.json for a bundle; `model_files` maps bundle-relative names to files to hash."""
    dims, in_ch, out_ch = (
        int(model_args["spatial_dims"]),
        int(model_args["in_channels"]),
        int(model_args["out_channels"]),
    )
    if len(labels) != out_ch:
        raise InputError(f"{len(labels)} label names {list(labels)} for a network with {out_ch} output channels")
    channel_names = list(channel_names or [modality.upper()] * in_ch)
    v = _versions()
    labels_text = ", ".join(f"{i}: {n}" for i, n in enumerate(labels))
    packages = _package_versions(["unet-pipeline", "nibabel", "SimpleITK", "onnx", "onnxruntime"])
    return {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": {version: "exported by unet-pipeline"},
        **{f"{k}_version": v[m] for k, m in (("monai", "monai"), ("pytorch", "torch"), ("numpy", "numpy"))},
        "required_packages_version": packages,
        "name": name,
        "task": f"{dims}D semantic segmentation ({len(labels) - 1} foreground classes) with a U-Net",
        "description": _description(model_args, labels_text),
        **FIXED_FIELDS,
        "data_source": str((provenance or {}).get("data_source", "see the training run")),
        "image_classes": f"{in_ch}-channel image ({', '.join(channel_names)}), "
        f"{_intensity_text(preprocessing.get('normalization'))}",
        "label_classes": labels_text,
        "pred_classes": labels_text,
        "eval_metrics": dict(eval_metrics or {}),
        "network_data_format": _network_data_format(model_args, labels, channel_names, modality),
        "unet_pipeline": _pipeline_section(
            model_args,
            inference,
            labels=list(labels),
            channel_names=channel_names,
            modality=modality,
            preprocessing=preprocessing,
            model_files=model_files,
            opset=opset,
            verification=dict(verification or {}),
            provenance=dict(provenance or {}),
        ),
    }


def _inferer(settings: Mapping[str, Any], depth: int, padding: str) -> dict[str, Any]:
    """MONAI's own sliding window for a 'same' net without TTA; else the pipeline's inferer."""
    if padding == "same" and not settings.get("tta"):
        # the window pipeline.inference uses on an image at least as large as the tile (a smaller
        # image: pipeline.inference shrinks the window, MONAI pads)
        from pipeline.inference.windows import window_size

        return {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(window_size(settings["tile_size"], settings["tile_size"], depth)),
            "sw_batch_size": int(settings["batch_size"]),
            "overlap": float(settings["overlap"]),
            "mode": settings["blend"],
            "padding_mode": "constant",
            "cval": 0.0,
        }
    # overlap-tile, or TTA: the pipeline's own inference, which returns probabilities
    return {"_target_": "pipeline.predict.inferer.UNetInferer", "settings": dict(settings)}


def _postprocessing(returns_probabilities: bool, keep_largest: bool, num_classes: int) -> list[dict[str, Any]]:
    """As pipeline.inference.case.predict_case: probabilities back to the source grid (linear
    interpolation), then argmax, then the optional largest-component clean-up, then the file."""
    post: list[dict[str, Any]] = []
    if not returns_probabilities:
        post.append({"_target_": "Activationsd", "keys": "pred", "softmax": True})
    post += [
        {
            "_target_": "Invertd",
            "keys": "pred",
            "transform": "@preprocessing",
            "orig_keys": "image",
            "nearest_interp": False,
            "to_tensor": True,
        },
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True, "dtype": "$torch.uint8"},
    ]
    if keep_largest and num_classes > 1:
        post.append(
            {
                "_target_": "KeepLargestConnectedComponentd",
                "keys": "pred",
                "applied_labels": list(range(1, num_classes)),
                "is_onehot": False,
                "independent": True,
            }
        )
    post.append(
        {
            "_target_": "SaveImaged",
            "keys": "pred",
            "output_dir": "@output_dir",
            "output_postfix": "@output_postfix",
            "output_ext": ".nii.gz",
            "output_dtype": "$numpy.uint8",
            "resample": False,
            "separate_folder": False,
            "print_log": False,
        }
    )
    return post


def inference_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A MONAI bundle config (inference.json) equivalent to the standalone predictor.

    Run it with `python -m monai.bundle run --config_file configs/inference.json --meta_file
    configs/metadata.json --bundle_root <bundle> --input_image <image.nii.gz> [--output_dir DIR]`;
    `--input_image <DICOM series folder> --output_format dicom-seg` also writes a DICOM SEG.
    """
    up = meta["unet_pipeline"]
    s = up["inference"]
    inferer = _inferer(s, int(up["depth"]), up["padding"])
    post = _postprocessing(
        inferer["_target_"] != "SlidingWindowInferer", bool(s.get("keep_largest")), len(up["labels"])
    )
    return {
        # MONAI binds `import a.b` under the name "a.b", which an expression cannot use: import the names
        "imports": [
            "$import numpy",
            "$import torch",
            "$from pipeline.inference.case import preprocessing_chain",
            "$from pipeline.predict.bundle_run import infer_all",
        ],
        "bundle_root": ".",
        "input_image": "",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "seg",
        # "dicom-seg": input_image is a DICOM series folder; a SEG referencing it is written beside the NIfTI
        "output_format": "nifti",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(@bundle_root + '/" + BUNDLE_TS + "', map_location='cpu')",
        "network": "$@network_def.to(@device)",
        "preprocessing_spec": up["preprocessing"],
        "preprocessing": "$preprocessing_chain(@preprocessing_spec)",
        "dataset": {"_target_": "Dataset", "data": "$[{'image': @input_image}]", "transform": "@preprocessing"},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": post},
        # a seeded watershed's instance image beside each mask (null: none), as the predictor writes it
        "instances": up.get("instances"),
        "run": [
            "$infer_all(@dataset, @network, @inferer, @postprocessing, @device, "
            "seg_to=(@output_dir if @output_format == 'dicom-seg' else None), bundle_root=@bundle_root, "
            "instances=@instances, instances_to=@output_dir)"
        ],
    }


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def verify_bundle(bundle_dir: str | Path) -> None:
    """`monai.bundle` verify_metadata (against our offline schema) and verify_net_in_out; raise if either fails."""
    import tempfile
    import warnings

    from monai.bundle import verify_metadata, verify_net_in_out

    from pipeline.export.schema import write_schema
    from pipeline.model.jit import quiet_jit

    bundle_dir = Path(bundle_dir)
    meta, config = bundle_dir / METADATA, bundle_dir / INFERENCE
    with tempfile.TemporaryDirectory() as tmp:
        schema = write_schema(Path(tmp) / "meta_schema.json")
        with warnings.catch_warnings():  # the schema is our own file, written just now: nothing to hash-check
            warnings.filterwarnings("ignore", message="No hash value provided for", category=UserWarning)
            verify_metadata(meta_file=str(meta), filepath=str(schema))
    with quiet_jit():  # inference.json loads the network with torch.jit.load
        # n=2: at n=1 (the smallest legal size) the bottleneck is 1 voxel, which instance norm rejects
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(meta),
            config_file=str(config),
            device="cpu",
            bundle_root=str(bundle_dir),
            n=2,
        )


def _channel_names(cfg: Any, in_channels: int) -> list[str]:
    ds = Path(cfg.data.root) / "dataset.json"
    try:
        names = json.loads(ds.read_text()).get("channel_names") or {}
        out = [str(names[str(i)]) for i in range(in_channels)]
        return out
    except (OSError, ValueError, KeyError, AttributeError):
        return [cfg.data.modality.upper()] * in_channels


def _eval_metrics(cfg: Any) -> dict[str, Any]:
    path = Path(cfg.evaluate.reports_dir) / "metrics.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def _write_models(out: Path, net: Any, model_args: dict[str, Any], opset: int) -> dict[str, Path]:
    """model.ts, its bundle copy and model.onnx (with its weights file, when dynamo wrote one)."""
    from pipeline.export.to_onnx import export_onnx
    from pipeline.export.torchscript import export_torchscript

    dims, in_ch = int(model_args["spatial_dims"]), int(model_args["in_channels"])
    depth, padding = len(model_args["features"]) - 1, str(model_args["padding"])
    ts_path = export_torchscript(net, out / "model.ts")
    (out / BUNDLE_TS).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ts_path, out / BUNDLE_TS)
    onnx_path = export_onnx(net, out / "model.onnx", dims, in_ch, depth, padding, opset=opset)
    files = {"model.onnx": onnx_path, "model.ts": ts_path, BUNDLE_TS: out / BUNDLE_TS}
    if (out / "model.onnx.data").is_file():
        files["model.onnx.data"] = out / "model.onnx.data"
    return files


def label_codes(cfg: Any, labels: Sequence[str]) -> dict[str, Any]:
    """The config's `labels` codes for the bundle (DICOM SEG segments); a name the dataset lacks is an error."""
    unknown = sorted(set(cfg.labels) - set(labels[1:]))
    if unknown:
        raise InputError(f"config labels {unknown} are not foreground labels of the dataset ({list(labels[1:])})")
    return {name: codes.model_dump(mode="json") for name, codes in cfg.labels.items()}


def build_bundle(
    out: Path, net: Any, ckpt: dict[str, Any], manifest: Any, cfg: Any, checkpoints: Sequence[Path]
) -> dict[str, Any]:
    """Export, verify and lay out the bundle in `out` (an empty dir); returns the metadata."""
    from pipeline.inference import InferenceSettings
    from pipeline.inference.instances import WatershedSettings
    from pipeline.io.digests import weights_digest

    model_args = dict(ckpt["model_args"])
    depth, padding = len(model_args["features"]) - 1, str(model_args["padding"])
    settings = InferenceSettings.from_config(cfg, model_args)
    case_id, image = held_out_image(manifest, model_args)
    files = _write_models(out, net, model_args, cfg.export.opset)
    sizes = verification_sizes(legal_input_size(settings.tile_size, depth, padding), depth, padding)
    report = verify_exports(net, image, sizes, cfg.export.tolerance, files["model.onnx"], files["model.ts"])
    report["case"] = case_id
    provenance = {
        "checkpoints": [str(p) for p in checkpoints],  # several: a K-fold ensemble, averaged probabilities
        "ensemble_members": len(checkpoints),
        "weights_sha256": weights_digest(net.named_parameters()),  # the SEG's algorithm version without a registry
        "epoch": ckpt.get("epoch"),
        "best_metric": ckpt.get("best_metric"),
        "data_source": str(cfg.data.root),
        "verified_on_case": case_id,
    }
    meta = build_metadata(
        name=cfg.name,
        version=cfg.export.version,
        model_args=model_args,
        labels=manifest.labels,
        preprocessing=manifest["preprocessing"],
        inference=settings.to_dict(),
        model_files=files,
        channel_names=_channel_names(cfg, int(model_args["in_channels"])),
        modality=cfg.data.modality,
        opset=cfg.export.opset,
        verification=report,
        eval_metrics=_eval_metrics(cfg),
        provenance=provenance,
    )
    meta["unet_pipeline"]["label_codes"] = label_codes(cfg, manifest.labels)
    watershed = WatershedSettings.from_config(cfg, manifest.labels)  # the predictor and bundle cut instances too
    meta["unet_pipeline"]["instances"] = watershed.to_dict() if watershed else None
    fingerprint = Path(cfg.preprocess.output_dir) / "fingerprint.json"
    if fingerprint.is_file():  # the predictor's out-of-distribution check compares each input with it
        from pipeline.predict.ood import training_fingerprint

        meta["unet_pipeline"]["training_fingerprint"] = training_fingerprint(json.loads(fingerprint.read_text()))
    write_json(out / METADATA, meta)
    write_json(out / INFERENCE, inference_config(meta))
    note = "; the overlap-tile inferer" if padding == "valid" else ""
    readme = BUNDLE_README.format(
        name=cfg.name,
        version=cfg.export.version,
        description=meta["description"],
        opset=cfg.export.opset,
        inferer_note=note,
    )
    (out / "docs").mkdir(exist_ok=True)
    (out / "docs" / "README.md").write_text(readme)
    verify_bundle(out)
    return meta


def mlflow_example(manifest: Any, model_args: dict[str, Any], settings: Any) -> Any:
    """A small legal crop of the held-out image (1, C, *spatial): the input example MLflow stores."""
    depth, padding = len(model_args["features"]) - 1, str(model_args["padding"])
    size = legal_input_size([min(t, 2**depth * 4) for t in settings.tile_size], depth, padding)
    return fit_to_size(held_out_image(manifest, model_args)[1], size)[None]
