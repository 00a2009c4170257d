"""`unet-pipeline predict --explain` (pipeline.predict.explain) on exported folders: one Grad-CAM file per
foreground class beside the mask -- a PNG overlay of the image's size for 2D, a NIfTI map in the mask's
geometry for 3D -- computed with the folder's model.ts (rebuilt eager) even when ONNX segments the
case; an ONNX-only folder is refused with one line saying what --explain needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.evaluation import pipeline_env


def _labels(exported: Path) -> list[str]:
    from pipeline.predict.metadata import load_metadata_file

    return list(load_metadata_file(exported / "configs" / "metadata.json").pipeline.labels)


def test_predict_explain_2d_writes_png_overlays_of_the_image_size(
    tmp_path: Path, exported_model: Path, capsys: pytest.CaptureFixture
) -> None:
    """The session's exported 2D model (ONNX segments, model.ts explains): `<mask>_explain_<label>.png`
    per foreground class, RGB, the input's size; coloured where the map is high."""
    import SimpleITK as sitk

    from pipeline.cli import main

    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_000_0000.nii.gz"
    mask = tmp_path / "case.nii.gz"
    with pipeline_env(root):
        assert main(["predict", str(image), "--model", str(exported_model.parent), "-o", str(mask), "--explain"]) == 0
    labels = _labels(exported_model.parent)
    expected = [tmp_path / f"case_explain_{name}.png" for name in labels[1:]]
    printed = capsys.readouterr().out
    src = sitk.ReadImage(str(image))
    for path in expected:
        assert f"wrote {path}" in printed
        png = sitk.ReadImage(str(path))
        assert png.GetSize() == src.GetSize() and png.GetNumberOfComponentsPerPixel() == 3
        rgb = sitk.GetArrayFromImage(png).astype(int)
        assert (np.abs(rgb[..., 0] - rgb[..., 2]) > 60).any()  # the heat overlay is somewhere, not all grey
    assert sorted(tmp_path.iterdir()) == sorted([mask, *expected])


def test_explain_layer_option_and_an_unknown_layer(
    tmp_path: Path, exported_model: Path, capsys: pytest.CaptureFixture
) -> None:
    from pipeline.cli import main

    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_001_0000.nii.gz"
    argv = ["predict", str(image), "--model", str(exported_model), "-o", str(tmp_path / "m.nii.gz"), "--explain"]
    with pipeline_env(root):
        assert main([*argv, "--explain-layer", "bottleneck"]) == 0
        assert len(list(tmp_path.glob("m_explain_*.png"))) == len(_labels(exported_model.parent)) - 1
        assert main([*argv, "--explain-layer", "decoder"]) == 2
    err = capsys.readouterr().err
    assert "explain layer 'decoder': no such U-Net module; choose from encoders.0" in err


def test_explain_refuses_an_onnx_only_folder(tmp_path: Path, exported_model: Path, capsys) -> None:
    from pipeline.cli import main

    bundle = tmp_path / "onnx_only"
    shutil.copytree(exported_model.parent, bundle, ignore=shutil.ignore_patterns("model.ts", "models"))
    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_000_0000.nii.gz"
    out = tmp_path / "mask.nii.gz"
    with pipeline_env(root):
        assert main(["predict", str(image), "--model", str(bundle), "-o", str(out), "--explain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--explain needs the TorchScript model of the exported folder (model.ts)" in err[0]
    assert not out.exists()


@pytest.fixture(scope="module")
def export_3d(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 3D export (anisotropic, LPS-flipped source, resampled and reoriented for the net), trained
    long enough (600 steps, ~20 s) to predict some of class `a` on the validation case."""
    from helpers.export import run_stage

    return run_stage(tmp_path_factory.mktemp("explain_3d"), "3d-same", train_steps=600)


def test_predict_explain_3d_writes_nifti_maps_in_the_mask_geometry(tmp_path: Path, export_3d: dict) -> None:
    """One float map per foreground class, in [0, 1], with the mask's affine and shape; where the
    net predicts the class, the map is non-zero and mostly on the true structure."""
    import nibabel as nib
    from scipy.ndimage import binary_dilation

    from pipeline.predict.predictor import Predictor

    predictor = Predictor(export_3d["exported"], explain=True)
    mask = predictor.predict(export_3d["val_image"], tmp_path / "case01.nii.gz")
    labels = _labels(export_3d["exported"])
    assert [p.name for p in predictor.last_explanations] == [f"case01_explain_{n}.nii.gz" for n in labels[1:]]
    ref = nib.load(str(mask))
    predicted = ref.get_fdata()
    truth = nib.load(str(export_3d["root"] / "data" / "labelsTr" / "case01.nii.gz")).get_fdata()
    for k, path in enumerate(predictor.last_explanations, start=1):
        saliency = nib.load(str(path))
        np.testing.assert_allclose(saliency.affine, ref.affine, atol=1e-5)
        assert saliency.shape == ref.shape
        data = saliency.get_fdata(dtype=np.float32)
        assert saliency.get_data_dtype() == np.float32 and data.min() >= 0 and data.max() <= 1
        if k == 1:  # the class the tiny net does find
            assert (predicted == 1).any() and data.max() > 0
            assert data[binary_dilation(truth == 1)].sum() >= 0.5 * data.sum()


def test_the_bundle_writes_the_same_maps(tmp_path: Path, export_3d: dict) -> None:
    """`python -m monai.bundle run ... --explain decoders.-1` in a MONAI-only interpreter (the bundle's
    own scripts/): the predictor's maps, and the bundle's mask unchanged by them."""
    import nibabel as nib
    from helpers.export import bundle_run

    from pipeline.predict.predictor import Predictor

    exported, image = export_3d["exported"], export_3d["val_image"]
    predictor = Predictor(exported, explain=True)
    predictor.predict(image, tmp_path / "predictor" / "case01_0000.nii.gz")
    plain = bundle_run(exported, image, tmp_path / "plain")
    explained = tmp_path / "explained"
    mask = bundle_run(exported, image, explained, pattern="*_seg.nii.gz", extra=("--explain", "decoders.-1"))
    assert np.array_equal(nib.load(str(mask)).get_fdata(), nib.load(str(plain)).get_fdata())
    assert nib.load(str(predictor.last_explanations[0])).get_fdata().max() > 0  # a map worth comparing
    for path in predictor.last_explanations:
        from_bundle = nib.load(str(explained / path.name))
        np.testing.assert_allclose(from_bundle.affine, nib.load(str(path)).affine, atol=1e-5)
        np.testing.assert_allclose(from_bundle.get_fdata(), nib.load(str(path)).get_fdata(), atol=1e-4)
