"""The exported `configs/metadata.json`: its typed form, read and written in one place.

The export stage builds the content (`pipeline.export.metadata`) and writes it through
`write_metadata`; the predictor, the light ONNX path and the bundle's SEG writer read it through
`read_metadata` / `load_metadata_file`. Torch- and pydantic-free, so the light path may import it.
MONAI's own fields (`schema`, `network_data_format`, ...) are kept as written; the `unet_pipeline`
block, what this package's predictor needs, is `PipelineSection`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.model.args import ModelArgs
from pipeline.predict.errors import PredictError

METADATA_CANDIDATES = ("configs/metadata.json", "metadata.json", "../configs/metadata.json")
FORMAT_VERSION = 1
SECTION = "unet_pipeline"
# the order the export writes the block's keys in (keys a newer export adds go after these)
KEY_ORDER = (
    "format_version",
    "model_args",
    "preprocessing",
    "orientation",
    "spacing",
    "intensity_normalization",
    "inference",
    "padding",
    "depth",
    "margin",
    "legal_input_size",
    "input_tile",
    "output_tile",
    "onnx",
    "models",
    "labels",
    "channel_names",
    "modality",
    "verification",
    "provenance",
    "label_codes",
    "instances",
    "training_fingerprint",
    "quality",
)


@dataclass(frozen=True)
class PipelineSection:
    """metadata.json's `unet_pipeline` block: what running the model needs. `recorded` keeps the
    rest as written (legal sizes, tiles, ONNX tensor names, orientation, ...)."""

    model_args: ModelArgs
    labels: tuple[str, ...]
    preprocessing: dict[str, Any]
    inference: dict[str, Any]
    models: dict[str, dict[str, Any]]
    format_version: int = FORMAT_VERSION
    modality: str = "other"
    channel_names: tuple[str, ...] = ()
    label_codes: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, Any] | None = None
    training_fingerprint: dict[str, Any] | None = None
    # the QC score's review threshold and the kept temperature (`pipeline.evaluation.quality.export_fields`);
    # None in exports made before issue 29, which then print the score without a verdict
    quality: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        return self.model_args.spatial_dims

    @property
    def in_channels(self) -> int:
        return self.model_args.in_channels

    @property
    def review_threshold(self) -> float | None:
        """The QC score at or past which a case is printed `REVIEW` (None: the export has none)."""
        value = (self.quality or {}).get("threshold")
        return None if value is None else float(value)

    @property
    def qc_auroc(self) -> float | None:
        """The QC score's AUROC for the worst validation cases (None: the export does not say)."""
        value = ((self.quality or {}).get("validation") or {}).get("qc_auroc")
        return None if value is None else float(value)

    @property
    def temperature(self) -> float | None:
        """The temperature the evaluate stage fitted and kept (None: probabilities used as they are)."""
        value = (self.quality or {}).get("temperature")
        return None if value is None else float(value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineSection:
        """From the JSON block.

        Raises:
            KeyError, TypeError, ValueError: a required key is missing or malformed (the caller names the file).
        """
        typed = {f.name for f in fields(cls)} - {"recorded"}
        kw = {k: v for k, v in data.items() if k in typed}
        kw["model_args"] = ModelArgs.from_dict(data["model_args"])
        kw["labels"] = tuple(str(n) for n in data["labels"])
        kw["channel_names"] = tuple(str(n) for n in data.get("channel_names") or ())
        kw["label_codes"] = dict(data.get("label_codes") or {})
        for required in ("preprocessing", "inference", "models"):
            kw[required] = dict(data[required])
        section = cls(**kw, recorded={k: v for k, v in data.items() if k not in typed})
        for number in ("review_threshold", "temperature", "qc_auroc"):  # read per case: a malformed one fails
            try:  # here, where the caller names the file, not mid-prediction
                getattr(section, number)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"quality's {number}: {exc}") from None
        return section

    def to_dict(self) -> dict[str, Any]:
        """The JSON block, keys in the order the export writes them."""
        out = dict(self.recorded)
        for f in fields(self):
            if f.name != "recorded":
                out[f.name] = getattr(self, f.name)
        out["model_args"] = self.model_args.to_dict()
        out["labels"], out["channel_names"] = list(self.labels), list(self.channel_names)
        rank = {k: i for i, k in enumerate(KEY_ORDER)}
        return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))


@dataclass(frozen=True)
class BundleMetadata:
    """The whole metadata.json: MONAI's standard fields as written, plus the typed `pipeline` block."""

    standard: dict[str, Any]
    pipeline: PipelineSection

    @property
    def name(self) -> str:
        return str(self.standard.get("name", ""))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | Path) -> BundleMetadata:
        """From the parsed JSON.

        Raises:
            PredictError: not an unet-pipeline metadata file, naming `where`.
        """
        try:
            section = PipelineSection.from_dict(data[SECTION])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PredictError(f"{where} is not an unet-pipeline bundle metadata file ({exc})") from None
        return cls({k: v for k, v in data.items() if k != SECTION}, section)

    def to_dict(self) -> dict[str, Any]:
        return {**self.standard, SECTION: self.pipeline.to_dict()}


def find_metadata(model_path: str | Path) -> Path:
    """The bundle's metadata.json next to the model (or one folder up for models/model.ts).

    Raises:
        PredictError: none found; the message lists where it looked.
    """
    model_path = Path(model_path)
    for rel in METADATA_CANDIDATES:
        cand = (model_path.parent / rel).resolve()
        if cand.is_file():
            return cand
    looked = ", ".join(str(model_path.parent / r) for r in METADATA_CANDIDATES)
    raise PredictError(
        f"no metadata.json for model {model_path} (looked in {looked}); pass a model from an exported/ folder"
    )


def load_metadata_file(path: str | Path) -> BundleMetadata:
    """A metadata.json, parsed and typed (no check against a model file).

    Raises:
        PredictError: unreadable, not JSON, or not an unet-pipeline metadata file.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PredictError(f"{path} is not an unet-pipeline bundle metadata file ({exc})") from None
    return BundleMetadata.from_dict(data, path)


def read_metadata(model_path: str | Path) -> tuple[BundleMetadata, Path]:
    """The metadata of a model file, checked to describe this very file (SHA-256).

    Args:
        model_path: `model.onnx`, `model.ts` or `models/model.ts` of an exported folder.

    Returns:
        (metadata, bundle root).

    Raises:
        PredictError: the model or its metadata is missing, unreadable, or the model's SHA-256
            differs from the one recorded.
    """
    from pipeline.io.digests import sha256_file

    model_path = Path(model_path)
    if not model_path.is_file():
        raise PredictError(f"model file {model_path} does not exist")
    meta_path = find_metadata(model_path)
    meta = load_metadata_file(meta_path)
    root = meta_path.parent.parent
    resolved, root_resolved = model_path.resolve(), root.resolve()
    inside = resolved.is_relative_to(root_resolved)
    rel = resolved.relative_to(root_resolved).as_posix() if inside else model_path.name
    recorded = meta.pipeline.models.get(rel)
    if recorded is None:
        raise PredictError(f"model {model_path} is not listed in {meta_path} (known: {sorted(meta.pipeline.models)})")
    digest = sha256_file(model_path)
    if digest != recorded["sha256"]:
        raise PredictError(
            f"model {model_path} does not match {meta_path}: SHA-256 {digest[:12]}... != recorded "
            f"{recorded['sha256'][:12]}..."
        )
    return meta, root


def write_metadata(path: str | Path, meta: BundleMetadata) -> Path:
    """Write metadata.json (indented, trailing newline), creating its folder.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return path
