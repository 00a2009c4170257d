"""DICOM SEG output: highdicom reads it back, every frame sits on its source slice, the pixels are
the NIfTI mask's, the codes and algorithm identity are the model's -- on generated series (axial,
flipped, oblique, shuffled file names) and on the real series in ../shared/ when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_dicom import pixel_positions_lps, rotation, write_series

ELLIPSOID_C = np.array([-14.0, 21.0, 36.0])  # LPS mm: off-centre, so any flip or shift moves it
ELLIPSOID_R = np.array([5.0, 3.5, 4.0])

GEOMETRIES = {
    "axial": np.eye(3),
    "flipped in-plane, slices stacked feet-ward": np.diag([-1.0, -1.0, -1.0]),
    "oblique": rotation(0, 20.0) @ rotation(2, 15.0),
}


def _inside(lps: np.ndarray) -> np.ndarray:
    return (((lps - ELLIPSOID_C) / ELLIPSOID_R) ** 2).sum(-1) <= 1.0


def _phantom_series(folder: Path, direction: np.ndarray, shuffle: bool = True) -> list[Path]:
    """Noise plus the ellipsoid, drawn from each slice's own header geometry."""
    from pydicom.dataset import Dataset

    nz, rows, cols = 12, 16, 14
    rng = np.random.default_rng(0)
    volume = rng.normal(100, 5, (nz, rows, cols))
    origin, spacing = np.array([-20.0, 15.0, 30.0]), (0.9, 0.8, 1.5)
    if np.linalg.det(direction) < 0:  # keep the ellipsoid inside the field of view
        origin = origin + direction @ np.array([cols * spacing[0], rows * spacing[1], nz * spacing[2]]) * -1
    for k in range(nz):
        ds = Dataset()
        ds.ImagePositionPatient = list(origin + k * spacing[2] * direction[:, 2])
        ds.ImageOrientationPatient = [*direction[:, 0], *direction[:, 1]]
        ds.PixelSpacing, ds.Rows, ds.Columns = [spacing[1], spacing[0]], rows, cols
        volume[k][_inside(pixel_positions_lps(ds))] += 200
    order = list(np.random.default_rng(1).permutation(nz)) if shuffle else None
    return write_series(folder, volume.round(), spacing, direction, origin, file_order=order)


def _read_seg(path: Path):  # noqa: ANN202
    import highdicom as hd

    return hd.seg.segread(str(path))


def _frames_by_source(seg) -> dict[tuple[str, int], tuple[np.ndarray, list[float]]]:  # noqa: ANN001
    """(referenced SOP instance UID, segment number) -> (frame pixels, frame ImagePositionPatient)."""
    out = {}
    pixels = seg.pixel_array
    shared = seg.SharedFunctionalGroupsSequence[0]
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ident = item if "SegmentIdentificationSequence" in item else shared  # one segment: shared
        number = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out[uid, number] = (pixels[f], [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
    return out


def _check_against_sources(seg, sources: list, expected_frame) -> None:  # noqa: ANN001
    """Every (source, segment) has one frame, on the source's position and orientation, with the expected pixels."""
    frames = _frames_by_source(seg)
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    assert len(frames) == int(seg.NumberOfFrames) == len(sources) * len(numbers)  # empty frames kept
    iop = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    for ds in sources:
        np.testing.assert_allclose(iop, [float(v) for v in ds.ImageOrientationPatient], atol=1e-6)
        for n in numbers:
            pixels, ipp = frames[ds.SOPInstanceUID, n]
            np.testing.assert_allclose(ipp, [float(v) for v in ds.ImagePositionPatient], atol=1e-4)
            np.testing.assert_array_equal(
                pixels.astype(bool), expected_frame(ds, n), err_msg=f"{ds.SOPInstanceUID} #{n}"
            )


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_seg_frames_land_on_their_source_slices(tmp_path: Path, geometry: str) -> None:
    import pydicom

    from pipeline.io import dicom_series_files, read_image
    from pipeline.io.dicom_seg import Algorithm, SegmentSpec, write_seg

    files = _phantom_series(tmp_path / "series", GEOMETRIES[geometry])
    image = read_image(tmp_path / "series")
    affine = image.affine.numpy()
    # the mask, in the reader's voxel grid: the ellipsoid tested at each voxel centre (RAS -> LPS)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape[1:]], indexing="ij"), -1).astype(float)
    lps = (grid @ affine[:3, :3].T + affine[:3, 3]) * np.array([-1.0, -1.0, 1.0])
    mask = _inside(lps).astype(np.uint8)
    assert 20 < mask.sum() < mask.size // 4
    _, ordered = dicom_series_files(tmp_path / "series")
    out = write_seg(
        tmp_path / "seg.dcm", mask, affine, ordered, [SegmentSpec(1, "blob")], Algorithm("phantom-net", "7", "x 1")
    )
    seg = _read_seg(out)
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    _check_against_sources(seg, sources, lambda ds, n: _inside(pixel_positions_lps(ds)))
    # references, study and frame of reference are the source's; series and instance are new
    src = sources[0]
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert seg.SOPInstanceUID not in {s.SOPInstanceUID for s in sources}
    refs = seg.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == src.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in refs.ReferencedInstanceSequence} == {s.SOPInstanceUID for s in sources}
    assert seg.SegmentationType == "BINARY"


def test_mask_off_the_source_grid_is_refused(tmp_path: Path) -> None:
    from pipeline.errors import InputError
    from pipeline.io import dicom_series_files, read_image
    from pipeline.io.dicom_seg import Algorithm, SegmentSpec, write_seg

    _phantom_series(tmp_path / "series", np.eye(3))
    image = read_image(tmp_path / "series")
    shifted = image.affine.numpy().copy()
    shifted[:3, 3] += 0.37  # a mask resampled elsewhere, not the predictor's source-geometry output
    _, files = dicom_series_files(tmp_path / "series")
    with pytest.raises(InputError, match="not on the mask's grid"):
        write_seg(tmp_path / "seg.dcm", np.zeros(image.shape[1:], np.uint8), shifted, files,
                  [SegmentSpec(1, "x")], Algorithm("n", "1", "s"))  # fmt: skip
    assert not (tmp_path / "seg.dcm").exists()


# --- through the predictor, with an exported model ---------------------------------------------------------------

HIPPOCAMPUS = {
    "category": {"scheme": "SCT", "value": "91723000", "meaning": "Anatomical Structure"},
    "type": {"scheme": "SCT", "value": 5366008, "meaning": "Hippocampus"},  # unquoted: YAML gives a number
    "modifier": {"scheme": "SCT", "value": "255549009", "meaning": "Anterior"},
}


@pytest.fixture(scope="module")
def exported_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers_export import run_stage

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
    return _read_seg(seg_path), nii


def test_predict_writes_a_seg_equal_to_its_nifti_mask(tmp_path: Path, exported_3d: Path) -> None:
    import pydicom

    files = _phantom_series(tmp_path / "series", GEOMETRIES["oblique"])
    seg, nii = _predict_both(exported_3d, tmp_path / "series", tmp_path)
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    _check_against_sources(seg, sources, _nifti_at_source_pixels(nii))
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
        _check_against_sources(seg, sources, _nifti_at_source_pixels(nii))
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
    from helpers_export import write_raw_case

    from pipeline.predict.predictor import PredictError, predict_file

    image = write_raw_case(tmp_path / "case.nii.gz", 3, (18, 20, 14), (1.0, 0.9, 1.5), 0)
    with pytest.raises(PredictError, match="needs a DICOM series folder"):
        predict_file(exported_3d, image, tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()


def test_bundle_run_writes_the_predictors_seg(tmp_path: Path, exported_3d: Path) -> None:
    """`python -m monai.bundle run ... --output_format dicom-seg` on a DICOM series: the same SEG
    frames as the predictor on the same TorchScript model (the DICOM part runs outside the network)."""
    import os
    import subprocess
    import sys

    from pipeline.predict.predictor import predict_file

    _phantom_series(tmp_path / "series", GEOMETRIES["oblique"])
    bundle, out = exported_3d.parent, tmp_path / "bundle_out"
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs/inference.json"),
           "--meta_file", str(bundle / "configs/metadata.json"), "--bundle_root", str(bundle),
           "--input_image", str(tmp_path / "series"), "--output_dir", str(out),
           "--output_format", "dicom-seg"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (from_bundle,) = out.glob("*.dcm")
    with pytest.warns(UserWarning, match="no codes"):
        from_predictor = predict_file(bundle / "model.ts", tmp_path / "series", tmp_path / "pred.dcm")
    a, b = _frames_by_source(_read_seg(from_bundle)), _frames_by_source(_read_seg(from_predictor))
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        np.testing.assert_array_equal(a[key][0], b[key][0], err_msg=str(key))
    assert any(frame.any() for frame, _ in a.values())
