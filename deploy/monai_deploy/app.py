"""MONAI Deploy App SDK application: one DICOM series in, one DICOM SEG out, running unet-pipeline's
exported bundle unchanged.

    python app.py -i STUDY_DIR -o OUT -m exported/model.ts    (or -m exported/, the bundle folder)

The DAG is the SDK's own operators: DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator (the
model's modality) -> DICOMSeriesToVolumeOperator -> MonaiBundleInferenceOperator (the bundle's
`preprocessing`, `inferer` and `postprocessing`, LoadImage/SaveImage dropped by the SDK) ->
DICOMSegmentationWriterOperator (segments from the bundle's label names and codes). The loader,
the volume conversion, the segment description and the SEG writer are thin subclasses, each for a
shortcoming of SDK 4.0.0 measured here and documented where it is defined.

The bundle always runs from its folder (`bundle_path`), never from the configs embedded in model.ts:
the folder is what puts `scripts/` (the bundle's copy of the pipeline code its inference.json
imports) on sys.path, and SDK 4.0.0 reads an embedded config only when the archive's root folder
is named after the file (`model/extra/inference.json`); otherwise it silently parses nothing but
`_meta_` and runs the raw volume through the network. This app never imports `pipeline`.
"""

from __future__ import annotations

import copy
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application, Image, IOType
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.dicom_utils import ModelInfo
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
)
from pydicom.sr.coding import Code

# DICOM objects that are not images (as pipeline/io/dicom_series.py); a model for "other" takes any image
NON_IMAGE_MODALITIES = ("SEG", "SR", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "KO", "REG", "DOC")
# type-2 attributes a SEG copies from its source: anonymised series drop them and highdicom then fails
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
GENERIC_CATEGORY = {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"}  # as unet-pipeline's SEG
GENERIC_TYPE = {"scheme": "SCT", "value": "91723000", "meaning": "Anatomical Structure"}


def bundle_root(model: Path) -> Path:
    """The bundle folder: `-m` itself, the folder of `-m model.ts` (exported/ or exported/models/),
    or the one bundle inside `-m` (a MAP's /opt/holoscan/models holding the exported folder)."""
    root = model if model.is_dir() else model.parent
    for cand in (root, root.parent, *sorted(p for p in root.iterdir() if p.is_dir())):
        if (cand / "configs" / "inference.json").is_file():
            if not (cand / "scripts").is_dir():  # exported before bundles carried their code
                raise FileNotFoundError(f"{cand}: no scripts/ folder; re-run `unet-pipeline export` to add it")
            return cand.resolve()
    raise FileNotFoundError(f"{model}: no configs/inference.json beside it; pass an exported bundle")


def read_metadata(model: Path) -> dict[str, Any]:
    """metadata.json as embedded in model.ts (MONAI's `save_net_with_metadata`), else the bundle's copy."""
    ts = model if model.is_file() else bundle_root(model) / "models" / "model.ts"
    with zipfile.ZipFile(ts) as archive:
        names = [n for n in archive.namelist() if n.endswith("/extra/metadata.json")]
        if names:
            return json.loads(archive.read(names[0]))
    return json.loads((bundle_root(model) / "configs" / "metadata.json").read_text())


def selection_rules(modality: str) -> str:
    """DICOMSeriesSelectorOperator rules: the model's CT/MR, or any image series for other modalities."""
    want = modality.upper()
    pattern = f"^{want}$" if want in ("CT", "MR") else f"^(?!({'|'.join(NON_IMAGE_MODALITIES)})$)"
    return json.dumps({"selections": [{"name": f"{want} series", "conditions": {"Modality": pattern}}]})


def _code(c: dict[str, Any]) -> Code:
    return Code(str(c["value"]), str(c["scheme"]), str(c["meaning"]))


def _algorithm(meta: dict[str, Any], root: Path) -> tuple[str, str]:
    """(name, version) as unet-pipeline's SEG: the registered MLflow model, else bundle name and weights hash."""
    reg_file = root / "mlflow.json"
    reg = json.loads(reg_file.read_text()) if reg_file.is_file() else {}
    if reg.get("registered_model_name") and reg.get("registered_model_version") is not None:
        return str(reg["registered_model_name"]), str(reg["registered_model_version"])
    prov = meta["unet_pipeline"].get("provenance") or {}
    return str(meta.get("name", "unet-pipeline")), str(prov.get("weights_sha256") or meta.get("version", "unknown"))


class CodedSegmentDescription(SegmentDescription):
    """The SDK's SegmentDescription plus a property type modifier (e.g. Anterior), which it lacks."""

    def __init__(self, *args: Any, modifier: Code | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._modifier = modifier

    def to_segment_description(self, segment_number: int) -> Any:
        import highdicom as hd

        item = super().to_segment_description(segment_number)
        if self._modifier is not None:  # (0062,0011) sits inside the property type's code item
            m = self._modifier
            item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(m.value, m.scheme_designator, m.meaning)
            ]
        return item


def segment_descriptions(meta: dict[str, Any], root: Path) -> list[SegmentDescription]:
    """One segment per foreground label (mask value k -> segment k), coded from `unet_pipeline.label_codes`."""
    up = meta["unet_pipeline"]
    codes = up.get("label_codes") or {}
    name, version = _algorithm(meta, root)
    out: list[SegmentDescription] = []
    for label in up["labels"][1:]:
        c = codes.get(label) or {}
        out.append(
            CodedSegmentDescription(
                segment_label=label,
                segmented_property_category=_code(c.get("category") or GENERIC_CATEGORY),
                segmented_property_type=_code(c.get("type") or GENERIC_TYPE),
                algorithm_name=name,
                algorithm_version=version,
                modifier=_code(c["modifier"]) if c.get("modifier") else None,
            )
        )
    return out


class StudyLoader(DICOMDataLoaderOperator):
    """The SDK's DICOM loader, tolerating an empty SeriesNumber (type 2: present, may be empty).

    SDK 4.0.0 runs `int(None)` on it; the exception drops the series' first instance and leaves the
    series out of its study, so nothing is selected (the hippocampus test series have it empty).
    """

    def populate_series_attributes(self, series: Any, sop_instance: Any) -> None:
        tag = 0x00200011  # SeriesNumber
        empty = sop_instance.pop(tag) if tag in sop_instance and sop_instance[tag].value in (None, "") else None
        try:
            super().populate_series_attributes(series, sop_instance)
        finally:
            if empty is not None:
                sop_instance.add(empty)  # the dataset stays as read


class SeriesToVolume(DICOMSeriesToVolumeOperator):
    """The SDK's series-to-volume (its slice sort, metadata and frame order) with two fixes, both
    measured on SDK 4.0.0 (deploy/monai_deploy/README.md):

    - voxel type: the SDK picks the volume's dtype from the first slice alone (uint16 when that
      slice is all positive) and writes every slice into it, so a later slice's negative values
      wrap to 65 000 and more. Here the type is chosen from the whole volume.
    - in-plane spacing: the SDK scales the row direction cosine (which a column index steps along)
      by PixelSpacing[0], the spacing between rows, and the column cosine by PixelSpacing[1]; DICOM
      PS3.3 C.7.6.2.1.1 has it the other way. With unequal in-plane spacings the affine is wrong
      and the bundle's Spacingd resamples the wrong way (frame placement is unaffected).
    """

    def generate_voxel_data(self, series: Any) -> np.ndarray:
        from pydicom.pixels import apply_presentation_lut, apply_rescale

        slices = []
        for sop in series.get_sop_instances():
            ds = sop.get_native_sop_instance()
            slices.append(apply_presentation_lut(apply_rescale(sop.get_pixel_array(), ds), ds))
        if not slices:
            return np.array([])
        volume = np.stack(slices)
        for dtype in (np.uint8, np.uint16, np.int16, np.float32):  # the SDK's candidates, whole volume
            if np.array_equal(volume, volume.astype(dtype)):
                return volume.astype(dtype)
        return volume

    def compute_affine_transform(self, s_1: Any, s_n: Any, n: int, series: Any) -> None:
        super().compute_affine_transform(s_1, s_n, n, series)
        row_spacing, col_spacing = (float(v) for v in s_1[0x0028, 0x0030].value)
        for name in (self.ATTRIBUTE_DICOM_AFFINE, self.ATTRIBUTE_NIFTI_AFFINE):
            affine = np.array(getattr(series, name), dtype=float)
            affine[:3, 0] *= col_spacing / row_spacing
            affine[:3, 1] *= row_spacing / col_spacing
            setattr(series, name, affine)


class SegWriter(DICOMSegmentationWriterOperator):
    """The SDK's SEG writer, after adding absent type-2 patient/study attributes (empty, in memory):
    highdicom needs them, and anonymised series (the hippocampus test series among them) lack them."""

    def create_dicom_seg(self, image: np.ndarray, dicom_series: Any, output_dir: Path) -> None:
        for sop in dicom_series.get_sop_instances():
            ds = sop.get_native_sop_instance()
            for keyword in TYPE2_COPIED:
                if keyword not in ds:
                    setattr(ds, keyword, "")
        super().create_dicom_seg(image, dicom_series, output_dir)


class UNetSegApp(Application):
    """DICOM series -> unet-pipeline bundle -> DICOM SEG referencing that series."""

    def compose(self) -> None:
        context: AppContext = Application.init_app_context(self.argv)
        model = Path(context.model_path)
        root = bundle_root(model)
        meta = read_metadata(model)
        out_dir = Path(context.output_path)

        loader = StudyLoader(self, CountCondition(self, 1), input_folder=Path(context.input_path), name="study_loader")
        selector = DICOMSeriesSelectorOperator(
            self, rules=selection_rules(meta["unet_pipeline"]["modality"]), name="series_selector"
        )
        to_volume = SeriesToVolume(self, name="series_to_volume")
        # the operator takes the model from the context when it holds one, and parses the configs
        # embedded in that file; without it, it runs the bundle folder (see the module docstring)
        bundle_context = copy.copy(context)
        bundle_context.models = None
        infer = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=bundle_context,
            bundle_path=root,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            name="bundle_inference",
        )
        name, version = _algorithm(meta, root)
        writer = SegWriter(
            self,
            segment_descriptions=segment_descriptions(meta, root),
            output_folder=out_dir,
            model_info=ModelInfo("unet-pipeline", name, version),
            custom_tags={"SeriesDescription": f"{name} {version} (research use)"[:64]},
            omit_empty_frames=False,  # as unet-pipeline's SEG: one frame per source slice and segment
            name="seg_writer",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, infer, {("image", "image")})
        self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(infer, writer, {("pred", "seg_image")})
        logging.info("bundle %s, modality %s", root, meta["unet_pipeline"]["modality"])


if __name__ == "__main__":
    UNetSegApp().run()
