"""Standalone predictor: `unet-pipeline predict --model exported/model.onnx IMAGE -o MASK`.

Needs only the exported folder: the model file and the `configs/metadata.json` beside it (or one
level up, for `models/model.ts`) -- no training data, config or checkpoint. The image goes through
`pipeline.inference.case.predict_case`, the evaluate stage's own path, with the network swapped
for an ONNX Runtime session or a TorchScript module, so the mask equals the evaluate stage's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

METADATA_CANDIDATES = ("configs/metadata.json", "metadata.json", "../configs/metadata.json")
SEG_SUFFIX = ".dcm"  # `-o result.dcm` from a DICOM series: a DICOM Segmentation object


class PredictError(PipelineError, ValueError):
    """Input the predictor cannot use; the message names the file and the problem."""


def find_metadata(model_path: str | Path) -> Path:
    """The bundle's metadata.json next to the model (or one folder up for models/model.ts)."""
    model_path = Path(model_path)
    for rel in METADATA_CANDIDATES:
        cand = (model_path.parent / rel).resolve()
        if cand.is_file():
            return cand
    looked = ", ".join(str(model_path.parent / r) for r in METADATA_CANDIDATES)
    raise PredictError(
        f"no metadata.json for model {model_path} (looked in {looked}); pass a model from an exported/ folder"
    )


def read_metadata(model_path: str | Path) -> tuple[dict[str, Any], Path]:
    """(metadata dict, bundle root) for a model file, checked to describe this very file (SHA-256)."""
    from pipeline.io.digests import sha256_file

    model_path = Path(model_path)
    if not model_path.is_file():
        raise PredictError(f"model file {model_path} does not exist")
    meta_path = find_metadata(model_path)
    try:
        meta = json.loads(meta_path.read_text())
        up = meta["unet_pipeline"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise PredictError(f"{meta_path} is not an unet-pipeline bundle metadata file ({exc})") from None
    root = meta_path.parent.parent
    rel = (
        model_path.resolve().relative_to(root.resolve()).as_posix()
        if model_path.resolve().is_relative_to(root.resolve())
        else model_path.name
    )
    recorded = up.get("models", {}).get(rel)
    if recorded is None:
        raise PredictError(f"model {model_path} is not listed in {meta_path} (known: {sorted(up.get('models', {}))})")
    digest = sha256_file(model_path)
    if digest != recorded["sha256"]:
        raise PredictError(
            f"model {model_path} does not match {meta_path}: SHA-256 {digest[:12]}... != recorded "
            f"{recorded['sha256'][:12]}..."
        )
    return meta, root


def check_image(image: Any, path: str | Path, spatial_dims: int, in_channels: int) -> None:
    """Reject an image the model cannot take, naming the file."""
    shape = tuple(image.shape)
    if len(shape) - 1 != spatial_dims:
        raise PredictError(
            f"{path}: a {len(shape) - 1}D image (channels-first shape {shape}), but the model is {spatial_dims}D"
        )
    if shape[0] != in_channels:
        raise PredictError(f"{path}: {shape[0]} channel(s) (shape {shape}), but the model expects {in_channels}")
    if min(shape[1:]) < 1:
        raise PredictError(f"{path}: empty image (shape {shape})")


def read_input(image_path: str | Path, series_uid: str | None = None, light: bool = False) -> Any:
    """The image via pipeline.io, with any reader failure turned into an error naming the file:
    a MetaTensor, or (`light`) a torch-free `ArrayImage` with the same voxels and affine."""
    import pipeline.io

    path = Path(image_path)
    if not path.exists():
        raise PredictError(f"input image {path} does not exist")
    try:  # only the reader named is imported: read_image brings MONAI
        return pipeline.io.read_array(path, series_uid) if light else pipeline.io.read_image(path, series_uid)
    except Exception as exc:  # readers raise many types (RuntimeError from SimpleITK, OSError, ...)
        raise PredictError(f"cannot read input image {path}: {exc}") from exc


def resolve_model(model: str | Path) -> Path:
    """A model file, or an exported/ folder: its model.onnx (the fastest verified runtime), else model.ts."""
    model = Path(model)
    if model.is_dir():
        for name in ("model.onnx", "model.ts", "models/model.ts"):
            if (model / name).is_file():
                return model / name
        raise PredictError(f"{model}: no model.onnx or model.ts in this folder; is it an exported/ bundle?")
    return model


class Predictor:
    """An exported model loaded once (metadata checked, runtime session open), for one or many cases."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        tta: bool | None = None,
        device: str = "cpu",
        strict: bool = False,
        light: bool = True,
    ) -> None:
        from pipeline.inference.instances import WatershedSettings
        from pipeline.inference.settings import InferenceSettings
        from pipeline.predict.runtime import load_net

        self.model_path = resolve_model(model_path)
        self.meta, _ = read_metadata(self.model_path)
        self.up = self.meta["unet_pipeline"]
        try:
            self.settings = InferenceSettings.from_dict(self.up["inference"])
        except (KeyError, TypeError, ValueError) as exc:  # InputError is a ValueError
            raise PredictError(f"{find_metadata(self.model_path)}: unusable inference settings: {exc}") from None
        if tta is not None:  # None keeps the exported setting (the evaluate stage's)
            self.settings = replace(self.settings, tta=bool(tta))
        self.net = load_net(self.model_path, device)
        self.device = device
        self.light = light  # the torch-free ONNX path where it gives the same mask (`onnx_light`)
        self.last_refusal: str | None = None  # why the last case took the full path (None: light)
        cut = self.up.get("instances")  # a seeded watershed, when the model was exported with one
        try:
            self.instances = WatershedSettings.from_dict(cut) if cut else None
        except (TypeError, ValueError) as exc:
            raise PredictError(f"{find_metadata(self.model_path)}: unusable watershed settings: {exc}") from None
        self.last_instances: Path | None = None
        self.strict = strict  # refuse (rather than warn about) inputs unlike the training data
        self.last_findings: list[str] = []

    @property
    def spatial_dims(self) -> int:
        return int(self.up["model_args"]["spatial_dims"])

    def predict(
        self, image_path: str | Path, output_path: str | Path, *, series_uid: str | None = None, progress: bool = False
    ) -> Path:
        """Segment one image (file or DICOM series folder) and write the mask atomically: in the
        input's geometry, or as a DICOM SEG (`.dcm`) referencing the input series. A model exported
        with `evaluate.instances: watershed` also writes `<name>_instances<suffix>` beside an image
        mask (`last_instances`)."""
        from pipeline.io import WRITABLE_SUFFIXES, full_suffix, write_image

        output_path = Path(output_path)
        as_seg = full_suffix(output_path) == SEG_SUFFIX
        if not as_seg and full_suffix(output_path) not in WRITABLE_SUFFIXES:
            raise PredictError(
                f"output {output_path}: cannot write {full_suffix(output_path) or '(no suffix)'!r}; "
                f"use one of {', '.join(WRITABLE_SUFFIXES)}, or {SEG_SUFFIX} (DICOM SEG) for a DICOM series input"
            )
        if as_seg and not Path(image_path).is_dir():
            raise PredictError(
                f"output {output_path}: a DICOM SEG needs a DICOM series folder as input, got {image_path}"
            )
        from pipeline.predict import onnx_light

        spec = self.up["preprocessing"]
        refusal = onnx_light.refusal(spec, self.settings, self.model_path, Path(image_path), as_seg, self.device)
        self.last_refusal = refusal if self.light else "light path off"
        image = read_input(image_path, series_uid, light=self.last_refusal is None)
        check_image(image, image_path, self.spatial_dims, int(self.up["model_args"]["in_channels"]))
        self._check_distribution(image, image_path, series_uid)
        if self.last_refusal is None:
            mask, prob = onnx_light.predict_case(image, self.net.session, spec, self.settings, progress=progress)
        else:
            from pipeline.inference.case import predict_case

            mask, prob = predict_case(image, self.net, spec, self.settings, progress=progress)
        self.last_instances = None
        if as_seg:
            from pipeline.predict.seg_output import write_prediction_seg

            return write_prediction_seg(output_path, mask, image, image_path, self.meta, self.model_path, series_uid)
        if self.instances is not None:
            from pipeline.inference.instances import instances_path, watershed_instances

            cut = watershed_instances(prob, self.instances)
            self.last_instances = write_image(cut[None], image, instances_path(output_path))
        return write_image(mask, image, output_path)  # atomic: temp file, then rename

    def _check_distribution(self, image: Any, image_path: str | Path, series_uid: str | None) -> None:
        """Warn (or, strict, refuse) when the input lies far outside the training fingerprint."""
        import warnings

        from pipeline.predict.ood import findings

        tag = series_modality(image_path, series_uid) if Path(image_path).is_dir() else None
        self.last_findings = findings(image, self.up.get("training_fingerprint"), tag)
        if not self.last_findings:
            return
        msg = f"{image_path}: unlike the training data: " + "; ".join(self.last_findings)
        if self.strict:
            raise PredictError(msg + " (refused: --strict)")
        warnings.warn(msg + "; check the mask before use", UserWarning, stacklevel=3)


def series_modality(folder: str | Path, series_uid: str | None = None) -> str | None:
    """The Modality tag of a DICOM series folder's first instance."""
    import pydicom

    from pipeline.io import dicom_series_files

    _, files = dicom_series_files(folder, series_uid)
    return str(getattr(pydicom.dcmread(files[0], stop_before_pixels=True), "Modality", "") or "") or None


def predict_file(
    model_path: str | Path,
    image_path: str | Path,
    output_path: str | Path,
    *,
    tta: bool | None = None,
    device: str = "cpu",
    progress: bool = False,
    strict: bool = False,
) -> Path:
    """Segment one image with an exported model and write the mask (input geometry, or a DICOM SEG)."""
    predictor = Predictor(model_path, tta=tta, device=device, strict=strict)
    return predictor.predict(image_path, output_path, progress=progress)


def is_batch(image: str | Path, output: str | Path) -> bool:
    """A folder in and a folder out (`-o results/`, no file suffix): every case under the input."""
    from pipeline.io import WRITABLE_SUFFIXES, full_suffix

    out = Path(output)
    known = (*WRITABLE_SUFFIXES, SEG_SUFFIX)
    return Path(image).is_dir() and (out.is_dir() or full_suffix(out) not in known)


def main(args: Any) -> int:
    """CLI entry; returns the number of failed cases (the exit status of a batch run)."""
    kw = {
        "tta": True if getattr(args, "tta", False) else None,
        "device": getattr(args, "device", "cpu") or "cpu",
        "strict": bool(getattr(args, "strict", False)),
    }
    if is_batch(args.image, args.output):
        from pipeline.predict.batch import predict_folder, summary_table

        outcomes = predict_folder(args.model, args.image, args.output, fmt=getattr(args, "format", "nifti"), **kw)
        print(summary_table(outcomes))
        return sum(o.status == "failed" for o in outcomes)
    predictor = Predictor(args.model, **kw)
    out = predictor.predict(args.image, args.output, progress=True)
    print(f"wrote {out}" + (f" and {predictor.last_instances}" if predictor.last_instances else ""))
    return 0
