"""Standalone predictor: `unet-pipeline predict --model exported/model.onnx IMAGE -o MASK`.

Needs only the exported folder: the model file and the `configs/metadata.json` beside it (or one
level up, for `models/model.ts`) -- no training data, config or checkpoint. The image goes through
`pipeline.inference.case.predict_case`, the evaluate stage's own path, with the network swapped
for an ONNX Runtime session or a TorchScript module, so the mask equals the evaluate stage's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.predict.errors import PredictError
from pipeline.predict.metadata import find_metadata, read_metadata
from pipeline.predict.quality import Verdict, assess

__all__ = ["PredictError", "Predictor", "predict_file", "read_input", "read_metadata"]


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
        explain: bool = False,
        explain_layer: str | None = None,
        uncertainty: bool = False,
    ) -> None:
        from pipeline.inference.instances import WatershedSettings
        from pipeline.inference.settings import InferenceSettings
        from pipeline.predict.runtime import load_net

        self.model_path = resolve_model(model_path)
        self.meta, _ = read_metadata(self.model_path)
        self.up = self.meta.pipeline
        try:
            self.settings = InferenceSettings.from_dict(self.up.inference)
        except (KeyError, TypeError, ValueError) as exc:  # InputError is a ValueError
            raise PredictError(f"{find_metadata(self.model_path)}: unusable inference settings: {exc}") from None
        if tta is not None:  # None keeps the exported setting (the evaluate stage's)
            self.settings = replace(self.settings, tta=bool(tta))
        self.net = load_net(self.model_path, device)
        self.device = device
        self.light = light  # the torch-free ONNX path where it gives the same mask (`onnx_light`)
        self.last_refusal: str | None = None  # why the last case took the full path (None: light)
        cut = self.up.instances  # a seeded watershed, when the model was exported with one
        try:
            self.instances = WatershedSettings.from_dict(cut) if cut else None
        except (TypeError, ValueError) as exc:
            raise PredictError(f"{find_metadata(self.model_path)}: unusable watershed settings: {exc}") from None
        self.last_instances: Path | None = None
        self.strict = strict  # refuse (rather than warn about) inputs unlike the training data
        self.last_findings: list[str] = []
        self.explainer = None  # Grad-CAM maps beside each mask (`pipeline.predict.explain`)
        if explain:
            from pipeline.predict.explain import Explainer

            self.explainer = Explainer(self.model_path, self.settings, device, explain_layer)
        self.last_explanations: list[Path] = []
        self.uncertainty = uncertainty  # write the entropy map beside each mask (`pipeline.predict.quality`)
        self.last_uncertainty: Path | None = None
        self.last_verdict: Verdict | None = None  # the last case's QC score and REVIEW flag

    @property
    def spatial_dims(self) -> int:
        return self.up.spatial_dims

    def predict(
        self, image_path: str | Path, output_path: str | Path, *, series_uid: str | None = None, progress: bool = False
    ) -> Path:
        """Segment one image (file or DICOM series folder) and write the mask atomically: in the
        input's geometry, or as a DICOM SEG (`.dcm`) referencing the input series. A model exported
        with `evaluate.instances: watershed` also writes `<name>_instances<suffix>` beside an image
        mask (`last_instances`). Every case gets a QC score (`last_verdict`); with `uncertainty`, its
        entropy map goes beside the mask (`last_uncertainty`)."""
        from pipeline.io import SEG_SUFFIX, WRITABLE_SUFFIXES, full_suffix, write_image

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

        spec = self.up.preprocessing
        refusal = onnx_light.refusal(spec, self.settings, self.model_path, Path(image_path), as_seg, self.device)
        self.last_refusal = refusal if self.light else "light path off"
        image = read_input(image_path, series_uid, light=self.last_refusal is None)
        check_image(image, image_path, self.spatial_dims, self.up.in_channels)
        self._check_distribution(image, image_path, series_uid)
        if self.last_refusal is None:
            mask, prob = onnx_light.predict_case(image, self.net.session, spec, self.settings, progress=progress)
        else:
            from pipeline.inference.case import predict_case

            mask, prob = predict_case(image, self.net, spec, self.settings, progress=progress)
        self.last_instances = None
        self.last_explanations = self.explainer(image, image_path, series_uid, output_path) if self.explainer else []
        calibrated, self.last_verdict = assess(prob, mask, self.up)
        if as_seg:
            from pipeline.predict.seg_output import write_prediction_seg

            qc = self.last_verdict.description()
            out = write_prediction_seg(output_path, mask, image, image_path, self.meta, self.model_path, series_uid, qc)
        else:
            if self.instances is not None:
                from pipeline.inference.instances import instances_path, watershed_instances

                cut = watershed_instances(prob, self.instances)
                self.last_instances = write_image(cut[None], image, instances_path(output_path))
            out = write_image(mask, image, output_path)  # atomic: temp file, then rename
        self.last_uncertainty = self._write_uncertainty(
            out, calibrated, image, image_path if as_seg else None, series_uid
        )
        return out

    def _write_uncertainty(
        self, out: Path, calibrated: Any, image: Any, series_dir: str | Path | None, series_uid: str | None
    ) -> Path | None:
        """With `uncertainty`, the entropy map beside the mask `out`: NIfTI, or a DICOM Parametric Map
        beside a SEG (`series_dir`: the SEG's source series)."""
        from pipeline.predict.quality import write_uncertainty, write_uncertainty_pmap

        if not self.uncertainty:
            return None
        assert self.last_verdict is not None
        if series_dir is None:
            return write_uncertainty(out, calibrated, image, self.settings, self.up, self.last_verdict)
        from pipeline.predict.seg_output import algorithm_from_metadata

        context = (self.settings, self.up, algorithm_from_metadata(self.meta, self.model_path))
        return write_uncertainty_pmap(out, calibrated, image, series_dir, context, self.last_verdict, series_uid)

    def _check_distribution(self, image: Any, image_path: str | Path, series_uid: str | None) -> None:
        """Warn (or, strict, refuse) when the input lies far outside the training fingerprint."""
        import warnings

        from pipeline.predict.ood import findings

        tag = series_modality(image_path, series_uid) if Path(image_path).is_dir() else None
        self.last_findings = findings(image, self.up.training_fingerprint, tag)
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
