"""What `predict` says about each mask (pipeline.predict.quality), through the real CLI and exports:

- `--uncertainty` writes `<mask>_uncertainty.nii.gz` on the mask's grid, equal to the normalised
  entropy of the exported model's probabilities after the exported temperature, and a JSON sidecar
  saying how many passes it averages (one softmax, or the TTA flips);
- the QC score is printed, with `REVIEW` for the workdir's worst validation case, and an export
  made before the score (no `quality` in metadata.json) still predicts, without a verdict;
- batch mode's table has the score column;
- a DICOM series gets the score in its SEG's content description and the map as a DICOM Parametric
  Map referencing the series, whose frames are the NIfTI map at each source pixel.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.dicom import GEOMETRIES, phantom_series, pixel_positions_lps


def _workdir_case(exported_model: Path, which: str) -> Path:
    """The raw image of the workdir's worst (or best) validation case by the evaluate stage's Dice."""
    root = exported_model.parent.parent
    with open(root / "reports" / "per_case_dice.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    case = rows[0 if which == "worst" else -1]["case"]
    return root / "data" / "imagesTr" / f"{case}_0000.nii.gz"


def _expected_entropy(model: Path, image: Path) -> np.ndarray:
    """The entropy map recomputed on the full path: predict_case with the exported ONNX model."""
    from pipeline.inference.case import predict_case
    from pipeline.inference.settings import InferenceSettings
    from pipeline.inference.uncertainty import apply_temperature, normalized_entropy
    from pipeline.predict.metadata import read_metadata
    from pipeline.predict.runtime import load_net

    meta, _ = read_metadata(model)
    settings = InferenceSettings.from_dict(meta.pipeline.inference)
    _, prob = predict_case(image, load_net(model, "cpu"), meta.pipeline.preprocessing, settings)
    return normalized_entropy(apply_temperature(prob, meta.pipeline.temperature))


def _with_auroc(exported_model: Path, dest: Path, auroc: object) -> Path:
    """A copy of the export whose metadata.json's validation `qc_auroc` is `auroc`."""
    bundle = dest / "exported"
    shutil.copytree(exported_model.parent, bundle)
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["unet_pipeline"]["quality"]["validation"]["qc_auroc"] = auroc
    meta_path.write_text(json.dumps(meta))
    return bundle


def test_uncertainty_map_beside_the_mask(tmp_path: Path, exported_model: Path, capsys) -> None:
    import nibabel as nib
    import SimpleITK as sitk

    from pipeline.cli import main

    image = _workdir_case(exported_model, "worst")
    mask = tmp_path / "out" / "case.nii.gz"
    assert main(["predict", str(image), "--model", str(exported_model), "-o", str(mask), "--uncertainty"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in mask.parent.iterdir()) == [
        "case.nii.gz",
        "case_uncertainty.json",
        "case_uncertainty.nii.gz",
    ]
    written, m = sitk.ReadImage(str(mask.parent / "case_uncertainty.nii.gz")), sitk.ReadImage(str(mask))
    assert written.GetSize() == m.GetSize() and written.GetSpacing() == m.GetSpacing()
    assert written.GetOrigin() == m.GetOrigin() and written.GetDirection() == m.GetDirection()
    assert written.GetPixelID() == sitk.sitkFloat32
    header = nib.load(str(mask.parent / "case_uncertainty.nii.gz")).header["descrip"].tobytes().decode()
    assert header.startswith("entropy/logK in [0,1]; 1 softmax; T=")
    got = np.asarray(nib.load(str(mask.parent / "case_uncertainty.nii.gz")).dataobj)
    assert 0.0 <= got.min() and got.max() <= 1.0 and got.max() > 0.2
    np.testing.assert_allclose(got, _expected_entropy(exported_model, image), atol=1e-4)

    info = json.loads((mask.parent / "case_uncertainty.json").read_text())
    meta = json.loads((exported_model.parent / "configs" / "metadata.json").read_text())["unet_pipeline"]
    assert info["map"] == "case_uncertainty.nii.gz" and info["range"] == [0.0, 1.0] and info["classes"] == 3
    assert info["passes"] == 1 and info["source"].startswith("entropy of the single softmax")
    assert info["temperature"] == meta["quality"]["temperature"]
    assert info["qc_threshold"] == meta["quality"]["threshold"]
    # the worst validation case is past the threshold the evaluate stage chose, and predict says so
    assert info["review"] is True
    assert f"QC score {info['qc_score']:.4f} (review at >= {info['qc_threshold']:.4f}): REVIEW" in printed
    assert f"wrote {mask.parent / 'case_uncertainty.nii.gz'}" in printed


def test_tta_map_is_the_entropy_of_the_mean_over_the_flips(tmp_path: Path, exported_model: Path) -> None:
    from pipeline.predict.predictor import Predictor

    image = _workdir_case(exported_model, "best")
    predictor = Predictor(exported_model, tta=True, uncertainty=True)
    predictor.predict(image, tmp_path / "m.nii.gz")
    info = json.loads((tmp_path / "m_uncertainty.json").read_text())
    assert info["passes"] == info["tta_flips"] == 4 and info["ensemble_members"] == 1  # 2D: every flip of 2 axes
    assert info["source"].startswith("entropy of the mean softmax over 4 passes")
    assert predictor.last_uncertainty == tmp_path / "m_uncertainty.nii.gz"


def test_an_export_without_a_threshold_still_predicts(tmp_path: Path, exported_model: Path, capsys) -> None:
    """metadata.json as exports before the QC score wrote it (no `quality`): the score is printed
    without a verdict, the map is the entropy of the untempered probabilities."""
    from pipeline.cli import main

    bundle = tmp_path / "exported"
    shutil.copytree(exported_model.parent, bundle)
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["unet_pipeline"]["quality"]
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "o" / "mask.nii.gz"
    image = _workdir_case(exported_model, "worst")
    assert main(["predict", str(image), "--model", str(bundle), "-o", str(out), "--uncertainty"]) == 0
    assert "(this export has no review threshold: evaluate before export)" in capsys.readouterr().out
    info = json.loads((out.parent / "mask_uncertainty.json").read_text())
    assert info["temperature"] is None and info["qc_threshold"] is None and info["review"] is False


@pytest.mark.parametrize(("auroc", "weak"), [(0.33, True), (0.95, False)])
def test_predict_calls_a_flag_weak_when_validation_found_it_weak(
    tmp_path: Path, exported_model: Path, capsys, auroc: float, weak: bool
) -> None:
    """The export's validation AUROC (metadata.json's `quality.validation.qc_auroc`) decides whether
    the QC line, the uncertainty sidecar and batch mode's summary say that the flag is weak; the
    verdict itself is the same either way."""
    from pipeline.cli import main

    bundle = _with_auroc(exported_model, tmp_path, auroc)
    image = _workdir_case(exported_model, "worst")
    out = tmp_path / "m.nii.gz"
    assert main(["predict", str(image), "--model", str(bundle), "-o", str(out), "--uncertainty"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("QC score"))
    assert line.split(": ")[1].startswith("REVIEW")
    assert ("(a weak flag: on validation it found the worst cases with AUROC 0.33)" in line) is weak
    assert ("weak" in line) is weak
    sidecar = json.loads((tmp_path / "m_uncertainty.json").read_text())
    assert sidecar["weak_flag"] is weak and sidecar["qc_validation_auroc"] == auroc and sidecar["review"] is True

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(image, folder / "worst.nii.gz")
    assert main(["predict", str(folder), "--model", str(bundle), "-o", str(tmp_path / "batch")]) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith("1 ok, 0 skipped, 0 failed; 1 to review")
    assert summary.endswith("1 to review (a weak flag: on validation it found the worst cases with AUROC 0.33)") is weak


def test_a_malformed_quality_number_is_named_at_load(tmp_path: Path, exported_model: Path, capsys) -> None:
    from pipeline.cli import main

    bundle = _with_auroc(exported_model, tmp_path, "abc")
    meta_path = bundle / "configs" / "metadata.json"
    out = tmp_path / "m.nii.gz"
    assert main(["predict", str(_workdir_case(exported_model, "worst")), "--model", str(bundle), "-o", str(out)]) != 0
    err = capsys.readouterr().err
    assert f"{meta_path} is not an unet-pipeline bundle metadata file" in err
    assert "quality's qc_auroc: could not convert string to float: 'abc'" in err
    assert not out.exists()


def test_batch_table_has_the_qc_column(tmp_path: Path, exported_model: Path) -> None:
    from pipeline.predict.batch import predict_folder, summary_table
    from pipeline.predict.predictor import Predictor

    folder = tmp_path / "in"
    folder.mkdir()
    for which in ("worst", "best"):
        shutil.copy(_workdir_case(exported_model, which), folder / f"{which}.nii.gz")
    outcomes = {o.case: o for o in predict_folder(exported_model, folder, tmp_path / "out", progress=False)}
    single = Predictor(exported_model)
    single.predict(folder / "worst.nii.gz", tmp_path / "single.nii.gz")
    assert outcomes["worst"].qc == f"{single.last_verdict.score:.4f} REVIEW"
    table = summary_table(list(outcomes.values()))
    assert table.splitlines()[0].split()[:4] == ["case", "status", "s", "qc"]
    assert "REVIEW" in table.splitlines()[1 + list(outcomes).index("worst")]
    assert table.splitlines()[-1].startswith("2 ok, 0 skipped, 0 failed;") and "to review" in table


@pytest.fixture(scope="module")
def evaluated_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3D export made after a real evaluate stage, so its metadata carries a threshold."""
    from helpers.export import make_workspace

    from pipeline.stages import evaluate, export

    cfg = make_workspace(tmp_path_factory.mktemp("qc_export"), "3d-same")
    evaluate.run(cfg, device="cpu")
    export.run(cfg)
    return Path(cfg.export.output_dir) / "model.onnx"


def test_dicom_series_gets_a_parametric_map_and_the_score_in_the_seg(tmp_path: Path, evaluated_3d: Path) -> None:
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk

    from pipeline.io import dicom_series_files
    from pipeline.predict.predictor import Predictor

    phantom_series(tmp_path / "series", GEOMETRIES["oblique"])
    predictor = Predictor(evaluated_3d, uncertainty=True)
    with pytest.warns(UserWarning, match="have no codes"):
        seg_path = predictor.predict(tmp_path / "series", tmp_path / "out" / "seg.dcm")
    verdict = predictor.last_verdict
    assert verdict is not None and verdict.threshold is not None
    seg = hd.seg.segread(str(seg_path))
    assert seg.ContentDescription == verdict.description() and seg.ContentDescription.startswith("QC score ")
    pmap_path = tmp_path / "out" / "seg_uncertainty.dcm"
    assert predictor.last_uncertainty == pmap_path
    assert json.loads((tmp_path / "out" / "seg_uncertainty.json").read_text())["map"] == "seg_uncertainty.dcm"

    predictor.predict(tmp_path / "series", tmp_path / "nii" / "mask.nii.gz")  # the same map as NIfTI
    nifti = sitk.ReadImage(str(tmp_path / "nii" / "mask_uncertainty.nii.gz"))
    values = sitk.GetArrayFromImage(nifti)  # (z, y, x)

    pmap = pydicom.dcmread(str(pmap_path))
    assert pmap.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in dicom_series_files(tmp_path / "series")[1]]
    assert pmap.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert int(pmap.NumberOfFrames) == len(sources)
    frames = pmap.pixel_array
    by_uid = {ds.SOPInstanceUID: ds for ds in sources}
    for f, item in enumerate(pmap.PerFrameFunctionalGroupsSequence):
        ds = by_uid[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        idx = np.array([nifti.TransformPhysicalPointToIndex(tuple(p)) for p in pixel_positions_lps(ds).reshape(-1, 3)])
        want = values[idx[:, 2], idx[:, 1], idx[:, 0]].reshape(int(ds.Rows), int(ds.Columns))
        np.testing.assert_allclose(frames[f], want, atol=1e-6)
    assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames.max() > 0


def test_the_bundle_writes_the_same_map_and_verdict(tmp_path: Path, exported_model: Path) -> None:
    """`python -m monai.bundle run ... --uncertainty true` in a MONAI-only interpreter (the bundle's own
    scripts/): beside its mask, the predictor's entropy map and sidecar, with the same QC verdict,
    and the same weak-flag note for an export whose validation AUROC was 0.33."""
    import nibabel as nib
    from helpers.export import bundle_run

    from pipeline.predict.predictor import Predictor

    exported = _with_auroc(exported_model, tmp_path, 0.33)
    image = _workdir_case(exported_model, "worst")
    predictor = Predictor(exported, uncertainty=True)
    predictor.predict(image, tmp_path / "predictor" / "case_seg.nii.gz")
    assert predictor.last_uncertainty is not None and predictor.last_verdict is not None
    out = tmp_path / "bundle"
    printed: list[str] = []
    mapped = bundle_run(
        exported, image, out, pattern="*_uncertainty.nii.gz", extra=("--uncertainty", "true"), stdout=printed
    )
    stem = image.name.removesuffix(".nii.gz")
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}_seg.nii.gz", f"{stem}_seg_uncertainty.json", mapped.name]
    ours, theirs = nib.load(str(mapped)), nib.load(str(predictor.last_uncertainty))
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.dataobj), np.asarray(theirs.dataobj), atol=2e-3)
    bundle_info = json.loads((out / f"{stem}_seg_uncertainty.json").read_text())
    predictor_info = json.loads(predictor.last_uncertainty.with_name("case_seg_uncertainty.json").read_text())
    assert bundle_info["review"] is predictor_info["review"] is True
    assert bundle_info["weak_flag"] is predictor_info["weak_flag"] is True
    stem_line = next(x for x in "".join(printed).splitlines() if x.startswith(f"{image.name}: QC score"))
    assert stem_line.endswith(f"({predictor.last_verdict.weak_note})") and "AUROC 0.33" in stem_line
    assert bundle_info["qc_threshold"] == predictor_info["qc_threshold"]
    assert abs(bundle_info["qc_score"] - predictor_info["qc_score"]) < 1e-3
