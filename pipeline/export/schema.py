"""The JSON Schema our bundle metadata is verified against, offline.

`monai.bundle verify_metadata` downloads the schema named in metadata.json unless the file it is
told to store it in already exists (then it skips the download), so the export stage writes this
schema to a temp file and passes it as `filepath`. Written for this project from MONAI's bundle
specification (the fields and types MONAI's published `meta_schema_20240725.json` requires), plus
the keys our own predictor reads, so an offline check is at least as strict as the online one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# what metadata.json names as its schema (online tools validate against it)
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"

_TENSOR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "num_channels": {"type": "integer"},
        "spatial_shape": {"type": "array", "items": {"type": ["string", "integer"]}},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object"},
    },
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"],
}

_NETWORK_IO: dict[str, Any] = {
    "type": "object",
    "properties": {
        "inputs": {"type": "object", "properties": {"image": {"$ref": "#/$defs/tensor"}}, "required": ["image"]},
        "outputs": {"type": "object", "properties": {"pred": {"$ref": "#/$defs/tensor"}}, "required": ["pred"]},
        "post_processed_outputs": {"type": "object"},
    },
    "required": ["inputs", "outputs"],
}

_STRING_FIELDS = (
    "schema",
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "task",
    "description",
    "authors",
    "copyright",
    "data_source",
    "data_type",
    "image_classes",
    "label_classes",
    "pred_classes",
    "intended_use",
)

_PIPELINE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "format_version": {"type": "integer"},
        "model_args": {"type": "object"},
        "labels": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "preprocessing": {"type": "object"},
        "inference": {"type": "object"},
        "legal_input_size": {"type": "object"},
        "models": {
            "type": "object",
            "patternProperties": {
                "^.+$": {
                    "type": "object",
                    "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                    "required": ["sha256"],
                }
            },
        },
    },
    "required": ["format_version", "model_args", "labels", "preprocessing", "inference", "legal_input_size", "models"],
}

META_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2019-09/schema",
    "$defs": {"tensor": _TENSOR, "network_io": _NETWORK_IO},
    "type": "object",
    "properties": {
        **{k: {"type": "string"} for k in _STRING_FIELDS},
        "changelog": {"type": "object"},
        "required_packages_version": {"type": "object"},
        "eval_metrics": {"type": "object"},
        "references": {"type": "array", "items": {"type": "string"}},
        "supported_apps": {"type": "object"},
        "network_data_format": {"$ref": "#/$defs/network_io"},
        "unet_pipeline": _PIPELINE,
    },
    "patternProperties": {"^[_a-zA-Z0-9]+_data_format$": {"$ref": "#/$defs/network_io"}},
    "required": [
        "schema",
        "version",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
        "unet_pipeline",
    ],
}


def write_schema(path: str | Path) -> Path:
    """Write the schema where `verify_metadata(filepath=...)` will find it (no download then)."""
    path = Path(path)
    path.write_text(json.dumps(META_SCHEMA, indent=2))
    return path
