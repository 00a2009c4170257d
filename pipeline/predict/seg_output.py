"""DICOM SEG output from an exported model: segments and algorithm identity from its metadata.

Shared by `unet-pipeline predict ... -o result.dcm` and the bundle's inference.json writer, so the
DICOM-aware part never enters the TorchScript or ONNX file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from pipeline.io.dicom_seg import Algorithm, CodeSpec, SegmentSpec
from pipeline.predict.metadata import BundleMetadata, PipelineSection


def _code(d: dict[str, Any] | None) -> CodeSpec | None:
    return None if d is None else CodeSpec(str(d["scheme"]), str(d["value"]), str(d["meaning"]))


def segments_from_metadata(up: PipelineSection) -> tuple[list[SegmentSpec], list[str]]:
    """One segment per foreground label (value k -> segment k); returns (segments, labels without codes)."""
    codes = up.label_codes
    segments, uncoded = [], []
    for k, name in enumerate(up.labels[1:], start=1):
        c = codes.get(name)
        if c is None:
            uncoded.append(name)
            segments.append(SegmentSpec(k, name))
        else:
            segments.append(SegmentSpec(k, name, _code(c["category"]), _code(c["type"]), _code(c.get("modifier"))))
    return segments, uncoded


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unet-pipeline")
    except PackageNotFoundError:
        return "unknown"


def algorithm_from_metadata(meta: BundleMetadata, model_path: str | Path) -> Algorithm:
    """Name and version: the MLflow registered model and version when the export registered one
    (`mlflow.json` beside the model), else the bundle name and the weights' SHA-256."""
    model_dir = Path(model_path).parent
    for cand in (model_dir / "mlflow.json", model_dir.parent / "mlflow.json"):
        if cand.is_file():
            reg = json.loads(cand.read_text())
            if reg.get("registered_model_name") and reg.get("registered_model_version") is not None:
                name, version = str(reg["registered_model_name"]), str(reg["registered_model_version"])
                break
    else:
        prov = meta.pipeline.provenance
        name = meta.name
        version = str(prov.get("weights_sha256") or meta.standard.get("version", "unknown"))
    return Algorithm(name=name, version=version, software=f"unet-pipeline {_package_version()}")


def write_prediction_seg(
    output: str | Path,
    mask: Any,
    image: Any,
    series_dir: str | Path,
    meta: BundleMetadata,
    model_path: str | Path,
    series_uid: str | None = None,
    description: str | None = None,
) -> Path:
    """The SEG of `mask` (the predictor's output, in `image`'s geometry) for the series read from
    `series_dir`; `description` is its ContentDescription (the predictor puts the QC verdict there)."""
    import numpy as np

    from pipeline.io import dicom_series_files
    from pipeline.io.dicom_seg import write_seg

    segments, uncoded = segments_from_metadata(meta.pipeline)
    if uncoded:
        warnings.warn(
            f"labels {uncoded} have no codes in the model's metadata (config `labels` block): their segments "
            "are coded as the generic SCT 'Tissue' / 'Anatomical Structure'",
            stacklevel=2,
        )
    _, files = dicom_series_files(series_dir, series_uid)
    arr = np.asarray(mask)
    arr = arr[0] if arr.ndim == 4 else arr
    affine = np.asarray(image.affine, dtype=np.float64)
    algorithm = algorithm_from_metadata(meta, model_path)
    return write_seg(output, arr, affine, files, segments, algorithm, description)
