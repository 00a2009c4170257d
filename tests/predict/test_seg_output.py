"""DICOM SEG output of the predictor (pipeline.predict.seg_output): the pixels are the NIfTI mask's,
the codes and algorithm identity are the model's -- on a generated oblique series and on the real
series in ../shared/ when present -- and the MONAI bundle writes the predictor's SEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.dicom import (
    GEOMETRIES,
    check_against_sources,
    frames_by_source,
    phantom_series,
    pixel_positions_lps,
    read_seg,
)

HIPPOCAMPUS = {
    "category": {"scheme": "SCT", "value": "91723000", "meaning": "Anatomical Structure"},
    "type": {"scheme": "SCT", "value": 5366008, "meaning": "Hippocampus"},  # unquoted: YAML gives a number
    "modifier": {"scheme": "SCT", "value": "255549009", "meaning": "Anterior"},
}


@pytest.fixture(scope="module")
def exported_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers.export import run_stage

    # 300 steps: enough that the net marks some voxels "a" (4 steps leave every mask empty, which
    # would make the pixel comparisons below vacuous)
    out = run_stage(tmp_path_factory.mktemp("seg_export"), "3d-same", label_codes={"a": HIPPOCAMPUS}, train_steps=300)
    return out["exported"] / "model.onnx"


def _nifti_at_source_pixels(nifti: Path):  # noqa: ANN202
    """The NIfTI mask sampled with SimpleITK's own geometry at a source slice's pixel centres."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(nifti))
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)

    def frame(ds, n: int) -> np.ndarray:  # noqa: ANN001
        pts = pixel_positions_lps(ds).reshape(-1, 3)
        idx = np.array([img.TransformPhysicalPointToIndex(tuple(p)) for p in pts])
        return (arr[idx[:, 2], idx[:, 1], idx[:, 0]] == n).reshape(int(ds.Rows), int(ds.Columns))

    return frame


def _predict_both(model: Path, series: Path, out: Path):  # noqa: ANN202
    from pipeline.predict.predictor import predict_file

    with pytest.warns(UserWarning, match=r"\['b'\] have no codes"):
        seg_path = predict_file(model, series, out / "seg.dcm")
    nii = predict_file(model, series, out / "mask.nii.gz")
    return read_seg(seg_path), nii


def test_predict_writes_a_seg_equal_to_its_nifti_mask(tmp_path: Path, exported_3d: Path) -> None:
    import pydicom

    files = phantom_series(tmp_path / "series", GEOMETRIES["oblique"])
    seg, nii = _predict_both(exported_3d, tmp_path / "series", tmp_path)
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    check_against_sources(seg, sources, _nifti_at_source_pixels(nii))
    _dciodvfy_clean(tmp_path / "seg.dcm")
    assert seg.pixel_array.any(), "an empty mask would make the pixel comparison vacuous"
    # segments: one per foreground label, codes from the config's `labels` block, else generic
    a, b = seg.SegmentSequence
    assert (a.SegmentLabel, b.SegmentLabel) == ("a", "b")
    assert a.SegmentedPropertyTypeCodeSequence[0].CodeValue == "5366008"
    assert a.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Anterior"
    assert b.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Tissue"
    assert b.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Anatomical Structure"
    algo = (
        a.SegmentationAlgorithmIdentificationSequence[0] if "SegmentationAlgorithmIdentificationSequence" in a else None
    )
    algo = algo or a.AlgorithmIdentificationSequence[0]
    assert algo.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("unet-test", "1")  # the MLflow registered version
    assert seg.Manufacturer == "unet-pipeline" and str(seg.SoftwareVersions).startswith("unet-pipeline")


def test_real_series_give_readable_segs(tmp_path: Path, exported_3d: Path, shared_data: Path) -> None:
    import pydicom

    from pipeline.io import dicom_series_files

    root = shared_data / "hippocampus-mri" / "dicom"
    series = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not series:
        pytest.skip(f"no DICOM series under {root}")
    for folder in series:
        out = tmp_path / folder.name
        out.mkdir()
        seg, nii = _predict_both(exported_3d, folder, out)
        sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in dicom_series_files(folder)[1]]
        check_against_sources(seg, sources, _nifti_at_source_pixels(nii))
        _dciodvfy_clean(out / "seg.dcm")


def _dciodvfy_clean(path: Path) -> None:
    """dicom3tools' IOD validator, where installed (`apt install dicom3tools`): no errors, no warnings."""
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        return
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    report = (proc.stdout + proc.stderr).strip().splitlines()
    assert report[:1] == ["Segmentation"] and not [ln for ln in report if ln.startswith(("Error", "Warning"))], report


def test_seg_needs_a_dicom_series_input(tmp_path: Path, exported_3d: Path) -> None:
    from helpers.export import write_raw_case

    from pipeline.predict.predictor import PredictError, predict_file

    image = write_raw_case(tmp_path / "case.nii.gz", 3, (18, 20, 14), (1.0, 0.9, 1.5), 0)
    with pytest.raises(PredictError, match="needs a DICOM series folder"):
        predict_file(exported_3d, image, tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()


def test_bundle_run_writes_the_predictors_seg(tmp_path: Path, exported_3d: Path, repo_root: Path) -> None:
    """`python -m monai.bundle run ... --output_format dicom-seg` on a DICOM series: the same SEG
    frames as the predictor on the same TorchScript model (the DICOM part runs outside the network)."""
    import os
    import subprocess
    import sys

    from pipeline.predict.predictor import predict_file

    phantom_series(tmp_path / "series", GEOMETRIES["oblique"])
    bundle, out = exported_3d.parent, tmp_path / "bundle_out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json"),
           "--meta_file", str(bundle / "configs/metadata.json"), "--bundle_root", str(bundle),
           "--input_image", str(tmp_path / "series"), "--output_dir", str(out),
           "--output_format", "dicom-seg"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (from_bundle,) = out.glob("*.dcm")
    with pytest.warns(UserWarning, match="no codes"):
        from_predictor = predict_file(bundle / "model.ts", tmp_path / "series", tmp_path / "pred.dcm")
    a, b = frames_by_source(read_seg(from_bundle)), frames_by_source(read_seg(from_predictor))
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        np.testing.assert_array_equal(a[key][0], b[key][0], err_msg=str(key))
    assert any(frame.any() for frame, _ in a.values())
