"""What the export writes into metadata.json: MONAI's standard fields and the `unet_pipeline` block.

The content is computed here; its typed form and the one reader/writer of the file are
`pipeline.predict.metadata`, which the predictor reads through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.export.schema import SCHEMA_URL
from pipeline.export.to_onnx import INPUT_NAME, OUTPUT_NAME, legal_size_expression, size_rule
from pipeline.io.digests import sha256_file
from pipeline.model import legal_input_size, margin, output_size
from pipeline.model.args import ModelArgs
from pipeline.predict.metadata import FORMAT_VERSION, BundleMetadata, PipelineSection

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


def _description(m: ModelArgs, labels_text: str) -> str:
    step, offset, smallest = size_rule(m.depth, m.padding)
    if m.padding == "valid":
        sizes = (
            f"Valid padding: the output is {margin(m.depth)} voxels smaller per side than the input; legal input "
            f"sizes are {step}*k + {offset} (>= {smallest}); whole images use overlap-tile inference."
        )
    else:
        sizes = f"Same padding: legal input sizes are multiples of {step}; whole images use sliding windows."
    return (
        f"U-Net (Ronneberger et al. 2015; features {list(m.features)}, {m.padding} padding) trained by "
        f"unet-pipeline. Input: {m.in_channels}-channel {m.spatial_dims}D image, preprocessed as recorded under "
        f"unet_pipeline.preprocessing; output: {m.out_channels}-channel logits ({labels_text}). {sizes}"
    )


def _network_data_format(
    m: ModelArgs, labels: Sequence[str], channel_names: Sequence[str], modality: str
) -> dict[str, Any]:
    """MONAI's `network_data_format`: the model's input and output, channel by channel."""
    in_shape, out_shape = _io_shapes(m.spatial_dims, m.depth, m.padding)
    common = {"type": "image", "dtype": "float32", "value_range": [], "is_patch_data": True}
    image = {"format": "hounsfield" if modality == "ct" else "magnitude", "modality": modality.upper()}
    return {
        "inputs": {
            INPUT_NAME: {
                **common,
                **image,
                "num_channels": m.in_channels,
                "spatial_shape": in_shape,
                "channel_def": {str(i): n for i, n in enumerate(channel_names)},
            },
        },
        "outputs": {
            "pred": {
                **common,
                "format": "segmentation",
                "num_channels": m.out_channels,
                "spatial_shape": out_shape,
                "channel_def": {str(i): n for i, n in enumerate(labels)},
            },
        },
    }


def _recorded(m: ModelArgs, preprocessing: Mapping[str, Any], inference: Mapping[str, Any], opset: int | None):
    """The block's derived fields: sizes, tiles and ONNX names, for tools that do not compute them."""
    step, offset, smallest = size_rule(m.depth, m.padding)
    input_tile = list(legal_input_size([int(t) for t in inference["tile_size"]], m.depth, m.padding))
    norm = preprocessing.get("normalization")
    return {
        "orientation": preprocessing.get("orientation"),
        "spacing": preprocessing.get("spacing"),
        "intensity_normalization": dict(norm) if norm else None,
        "padding": m.padding,
        "depth": m.depth,
        "margin": margin(m.depth, m.padding),
        "legal_input_size": {
            "rule": f"{step}*k + {offset}" if offset else f"{step}*k",
            "step": step,
            "offset": offset,
            "smallest": smallest,
            "bundle_expression": legal_size_expression(m.depth, m.padding),
        },
        "input_tile": input_tile,
        "output_tile": list(output_size(input_tile, m.depth, m.padding)),
        "onnx": {"input": INPUT_NAME, "output": OUTPUT_NAME, "opset": opset},
    }


def build_metadata(
    *,
    name: str,
    version: str,
    model_args: ModelArgs,
    labels: Sequence[str],
    preprocessing: Mapping[str, Any],
    inference: Mapping[str, Any],
    model_files: Mapping[str, str | Path],
    channel_names: Sequence[str] | None = None,
    modality: str = "other",
    opset: int | None = None,
    extra: Mapping[str, Any] | None = None,
    eval_metrics: Mapping[str, Any] | None = None,
) -> BundleMetadata:
    """metadata.json for a bundle.

    Args:
        name, version: the bundle's (config `name`, `export.version`).
        model_args: the network's arguments.
        labels: class names in index order, background first.
        preprocessing: the preprocessing spec (docs/ARCHITECTURE.md).
        inference: `InferenceSettings.to_dict()`.
        model_files: bundle-relative name -> file, each hashed (SHA-256) so the predictor can check it.
        channel_names, modality: what the input channels are.
        opset: the ONNX opset.
        extra: the block's optional fields (`verification`, `provenance`, `label_codes`, `instances`,
            `training_fingerprint`, `quality`).
        eval_metrics: the evaluate stage's metrics, for MONAI's `eval_metrics`.

    Raises:
        InputError: the label names do not match the network's output channels.
    """
    m = model_args
    if len(labels) != m.out_channels:
        raise InputError(
            f"{len(labels)} label names {list(labels)} for a network with {m.out_channels} output channels"
        )
    channel_names = list(channel_names or [modality.upper()] * m.in_channels)
    extra = dict(extra or {})
    section = PipelineSection(
        format_version=FORMAT_VERSION,
        model_args=m,
        preprocessing=dict(preprocessing),
        inference=dict(inference),
        models={rel: {"sha256": sha256_file(p), "bytes": Path(p).stat().st_size} for rel, p in model_files.items()},
        labels=tuple(labels),
        channel_names=tuple(channel_names),
        modality=modality,
        verification=dict(extra.pop("verification", None) or {}),
        provenance=dict(extra.pop("provenance", None) or {}),
        label_codes=dict(extra.pop("label_codes", None) or {}),
        instances=extra.pop("instances", None),
        training_fingerprint=extra.pop("training_fingerprint", None),
        quality=extra.pop("quality", None),
        recorded={**_recorded(m, preprocessing, inference, opset), **extra},
    )
    return BundleMetadata(_standard_fields(name, version, section, eval_metrics), section)


def _standard_fields(
    name: str, version: str, section: PipelineSection, eval_metrics: Mapping[str, Any] | None
) -> dict[str, Any]:
    """MONAI's own metadata.json fields (what `monai.bundle verify_metadata` checks)."""
    m, labels, channel_names = section.model_args, section.labels, section.channel_names
    v = _versions()
    labels_text = ", ".join(f"{i}: {n}" for i, n in enumerate(labels))
    packages = _package_versions(["unet-pipeline", "nibabel", "SimpleITK", "onnx", "onnxruntime"])
    return {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": {version: "exported by unet-pipeline"},
        **{f"{k}_version": v[mod] for k, mod in (("monai", "monai"), ("pytorch", "torch"), ("numpy", "numpy"))},
        "required_packages_version": packages,
        "name": name,
        "task": f"{m.spatial_dims}D semantic segmentation ({len(labels) - 1} foreground classes) with a U-Net",
        "description": _description(m, labels_text),
        **FIXED_FIELDS,
        "data_source": str(section.provenance.get("data_source", "see the training run")),
        "image_classes": f"{m.in_channels}-channel image ({', '.join(channel_names)}), "
        f"{_intensity_text(section.preprocessing.get('normalization'))}",
        "label_classes": labels_text,
        "pred_classes": labels_text,
        "eval_metrics": dict(eval_metrics or {}),
        "network_data_format": _network_data_format(m, labels, channel_names, section.modality),
    }
