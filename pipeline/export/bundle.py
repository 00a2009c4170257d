"""The MONAI Bundle layout of `exported/`: metadata.json, inference.json, models/model.ts.

metadata.json carries MONAI's standard fields (`network_data_format` etc.) and, under
`unet_pipeline`, everything our standalone predictor needs: the model arguments, label names, the
preprocessing spec, the inference settings, the legal input sizes and a SHA-256 per model file.
inference.json is a MONAI bundle config that loads a NIfTI, applies the same preprocessing, runs
`models/model.ts` with the right inferer and writes a NIfTI mask.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.export.schema import SCHEMA_URL
from pipeline.export.to_onnx import INPUT_NAME, OUTPUT_NAME, legal_size_expression, size_rule
from pipeline.model import legal_input_size, margin, output_size

FORMAT_VERSION = 1
METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
BUNDLE_TS = "models/model.ts"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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
    dims = int(model_args["spatial_dims"])
    depth = len(model_args["features"]) - 1
    padding = str(model_args["padding"])
    in_ch, out_ch = int(model_args["in_channels"]), int(model_args["out_channels"])
    if len(labels) != out_ch:
        raise ValueError(f"{len(labels)} label names {list(labels)} for a network with {out_ch} output channels")
    channel_names = list(channel_names or [modality.upper()] * in_ch)
    step, offset, smallest = size_rule(depth, padding)
    tile = [int(t) for t in inference["tile_size"]]
    input_tile = list(legal_input_size(tile, depth, padding))
    output_tile = list(output_size(input_tile, depth, padding))
    in_shape, out_shape = _io_shapes(dims, depth, padding)
    v = _versions()
    labels_text = ", ".join(f"{i}: {n}" for i, n in enumerate(labels))
    norm = preprocessing.get("normalization")
    return {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": {version: "exported by unet-pipeline"},
        "monai_version": v["monai"],
        "pytorch_version": v["torch"],
        "numpy_version": v["numpy"],
        "required_packages_version": _package_versions(
            ["unet-pipeline", "nibabel", "SimpleITK", "onnx", "onnxruntime"]
        ),
        "name": name,
        "task": f"{dims}D semantic segmentation ({len(labels) - 1} foreground classes) with a U-Net",
        "description": (
            f"U-Net (Ronneberger et al. 2015; features {list(model_args['features'])}, {padding} padding) trained by "
            f"unet-pipeline. Input: {in_ch}-channel {dims}D image, preprocessed as recorded under "
            f"unet_pipeline.preprocessing; output: {out_ch}-channel logits ({labels_text}). "
            + (
                f"Valid padding: the output is {margin(depth)} voxels smaller per side than the input; legal input "
                f"sizes are {step}*k + {offset} (>= {smallest}); whole images use overlap-tile inference."
                if padding == "valid"
                else f"Same padding: legal input sizes are multiples of {step}; whole images use sliding windows."
            )
        ),
        "authors": "unet-pipeline",
        "copyright": "Copyright (c) the unet-pipeline authors",
        "data_source": str((provenance or {}).get("data_source", "see the training run")),
        "data_type": "nibabel",
        "image_classes": f"{in_ch}-channel image ({', '.join(channel_names)}), {_intensity_text(norm)}",
        "label_classes": labels_text,
        "pred_classes": labels_text,
        "eval_metrics": dict(eval_metrics or {}),
        "intended_use": "Research only; not for clinical diagnosis.",
        "references": [
            "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI 2015.",
            "Cicek O et al. 3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation. MICCAI 2016.",
        ],
        "network_data_format": {
            "inputs": {
                INPUT_NAME: {
                    "type": "image",
                    "format": "hounsfield" if modality == "ct" else "magnitude",
                    "modality": modality.upper(),
                    "num_channels": in_ch,
                    "spatial_shape": in_shape,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): n for i, n in enumerate(channel_names)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": out_ch,
                    "spatial_shape": out_shape,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): n for i, n in enumerate(labels)},
                }
            },
        },
        "unet_pipeline": {
            "format_version": FORMAT_VERSION,
            "model_args": dict(model_args),
            "labels": list(labels),
            "channel_names": channel_names,
            "modality": modality,
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
            "output_tile": output_tile,
            "onnx": {"input": INPUT_NAME, "output": OUTPUT_NAME, "opset": opset},
            "models": {
                rel: {"sha256": sha256_file(p), "bytes": Path(p).stat().st_size} for rel, p in model_files.items()
            },
            "verification": dict(verification or {}),
            "provenance": dict(provenance or {}),
        },
    }


def inference_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A MONAI bundle config (inference.json) equivalent to the standalone predictor.

    Run it with `python -m monai.bundle run --config_file configs/inference.json --meta_file
    configs/metadata.json --bundle_root <bundle> --input_image <image.nii.gz> [--output_dir DIR]`.
    """
    up = meta["unet_pipeline"]
    s = up["inference"]
    depth, padding = int(up["depth"]), up["padding"]
    labels = up["labels"]
    keep_largest = bool(s.get("keep_largest"))
    tta = bool(s.get("tta"))
    if padding == "same" and not tta:
        # MONAI's own sliding window, with the window pipeline.inference uses on an image at least as
        # large as the tile (a smaller image: pipeline.inference shrinks the window, MONAI pads)
        from pipeline.inference.sliding_window import window_size

        roi = list(window_size(s["tile_size"], s["tile_size"], depth))
        inferer: dict[str, Any] = {
            "_target_": "SlidingWindowInferer",
            "roi_size": roi,
            "sw_batch_size": int(s["batch_size"]),
            "overlap": float(s["overlap"]),
            "mode": s["blend"],
            "padding_mode": "constant",
            "cval": 0.0,
        }
        returns_probabilities = False
    elif padding == "valid":
        inferer = {
            "_target_": "pipeline.export.inferer.OverlapTileInferer",
            "depth": depth,
            "tile_size": list(s["tile_size"]),
            "batch_size": int(s["batch_size"]),
            "tta": tta,
            "tta_axes": s.get("tta_axes"),
        }
        returns_probabilities = tta
    else:
        inferer = {
            "_target_": "pipeline.export.inferer.UNetInferer",
            "padding": padding,
            "depth": depth,
            "tile_size": list(s["tile_size"]),
            "overlap": float(s["overlap"]),
            "blend": s["blend"],
            "batch_size": int(s["batch_size"]),
            "tta": tta,
            "tta_axes": s.get("tta_axes"),
        }
        returns_probabilities = True
    # as pipeline.inference.predict.predict_case: probabilities are taken back to the source grid
    # (linear interpolation), then argmax, then the optional largest-component clean-up
    post: list[Any] = []
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
    if keep_largest and len(labels) > 1:
        post.append(
            {
                "_target_": "KeepLargestConnectedComponentd",
                "keys": "pred",
                "applied_labels": list(range(1, len(labels))),
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
    return {
        # MONAI binds `import a.b` under the name "a.b", which an expression cannot use: import the names
        "imports": [
            "$import numpy",
            "$import torch",
            "$from pipeline.inference.predict import preprocessing_chain",
            "$from pipeline.export.bundle_run import infer_all",
        ],
        "bundle_root": ".",
        "input_image": "",
        "output_dir": "$@bundle_root + '/eval'",
        "output_postfix": "seg",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(@bundle_root + '/" + BUNDLE_TS + "', map_location='cpu')",
        "network": "$@network_def.to(@device)",
        "preprocessing_spec": up["preprocessing"],
        "preprocessing": "$preprocessing_chain(@preprocessing_spec)",
        "dataset": {"_target_": "Dataset", "data": "$[{'image': @input_image}]", "transform": "@preprocessing"},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "run": ["$infer_all(@dataset, @network, @inferer, @postprocessing, @device)"],
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
    from pipeline.export.torchscript import quiet_jit

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
