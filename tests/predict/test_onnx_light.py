"""The ONNX predictor's torch-free path (`pipeline.predict.onnx_light`): the same mask as the full
torch + MONAI path, without importing either, and the full path wherever it cannot be the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.evaluation import pipeline_env

from pipeline.inference import InferenceSettings
from pipeline.predict import onnx_light


def _read(path: Path) -> tuple[np.ndarray, tuple]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), (img.GetSpacing(), img.GetOrigin(), img.GetDirection(), img.GetPixelID())


def test_cli_predict_with_onnx_imports_neither_torch_nor_monai(tmp_path: Path, exported_model: Path) -> None:
    """`unet-pipeline predict IMAGE --model model.onnx` in a fresh interpreter: the mask is written and
    torch / MONAI were never imported; the full path (`light=False`) writes the same voxels and geometry."""
    from pipeline.predict.predictor import Predictor

    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_001_0000.nii.gz"
    light_out = tmp_path / "light" / "mask.nii.gz"
    code = (
        "import json, sys\n"
        "from pipeline.cli import main\n"
        f"rc = main(['predict', {str(image)!r}, '--model', {str(exported_model)!r}, '-o', {str(light_out)!r}])\n"
        "print(json.dumps({'rc': rc, 'loaded': [m for m in ('torch', 'monai', 'mlflow') if m in sys.modules]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"rc": 0, "loaded": []}

    with pipeline_env(root):
        full = Predictor(exported_model, light=False)
        full_out = full.predict(image, tmp_path / "full" / "mask.nii.gz")
    assert full.last_refusal == "light path off"
    light_mask, light_geom = _read(light_out)
    full_mask, full_geom = _read(full_out)
    assert light_geom == full_geom
    assert np.array_equal(light_mask, full_mask) and len(np.unique(full_mask)) > 1


def test_light_probabilities_equal_the_full_paths(exported_model: Path) -> None:
    """Probabilities of `onnx_light.predict_case` (numpy overlap-tile through the session) against
    `pipeline.inference.case.predict_case` (torch overlap-tile, MONAI chain) on the same model."""
    from pipeline.inference.case import predict_case
    from pipeline.io import read_array
    from pipeline.predict.predictor import Predictor

    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_002_0000.nii.gz"
    predictor = Predictor(exported_model)
    spec = predictor.up.preprocessing
    assert onnx_light.refusal(spec, predictor.settings, exported_model, image, False, "cpu") is None
    mask, prob = onnx_light.predict_case(read_array(image), predictor.net.session, spec, predictor.settings)
    full_mask, full_prob = predict_case(image, predictor.net, spec, predictor.settings)
    assert prob.shape == tuple(full_prob.shape) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, full_prob.numpy(), atol=1e-5)
    assert np.array_equal(mask, full_mask.numpy())


@pytest.mark.parametrize(
    "norm",
    [
        {"scheme": "zscore", "nonzero": False},
        {"scheme": "zscore", "nonzero": True},
        {"scheme": "ct", "clip": [-100.0, 400.0], "mean": 80.0, "std": 120.0},
        {"scheme": "none"},
    ],
    ids=["zscore", "zscore-nonzero", "ct", "none"],
)
def test_normalize_equals_the_monai_chain(norm: dict) -> None:
    """Two channels of int16 voxels with zeros in them, through `onnx_light.normalize` and through
    the exported spec's MONAI chain (`pipeline.inference.case.preprocess`)."""
    import torch
    from monai.data import MetaTensor

    from pipeline.inference.case import preprocess

    rng = np.random.default_rng(3)
    raw = rng.integers(-300, 900, (2, 23, 17)).astype(np.int16)
    raw[:, :5] = 0
    spec = {"orientation": None, "spacing": None, "crop_foreground": False, "normalization": norm}
    source = MetaTensor(torch.from_numpy(raw.copy()), affine=torch.eye(3, dtype=torch.float64))
    source.meta["original_channel_dim"] = 0  # as pipeline.io.read_image records it
    want, _ = preprocess(source, spec)
    got = onnx_light.normalize(raw, norm)
    assert got.dtype == np.float32 and got.shape == raw.shape
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-5)
    assert np.array_equal(raw[:, :5], np.zeros_like(raw[:, :5]))  # the input was not modified


def test_refusal_names_what_needs_the_full_path(tmp_path: Path, exported_model: Path) -> None:
    """Each thing numpy would not repeat exactly is named; the predictor then takes the full path
    and still writes the mask."""
    from pipeline.predict.predictor import Predictor

    spec = {"orientation": None, "spacing": None, "crop_foreground": False, "normalization": {"scheme": "zscore"}}
    valid = InferenceSettings(padding="valid", depth=2, tile_size=(64, 64))
    image = tmp_path / "x.nii.gz"
    assert onnx_light.refusal(spec, valid, Path("m.onnx"), image, False, "cpu") is None
    cases = {
        "a TorchScript model": ({}, {}, {"model_path": Path("m.ts")}),
        "reorientation": ({"orientation": "RAS"}, {}, {}),
        "resampling": ({"spacing": [1.0, 1.0]}, {}, {}),
        "a foreground crop": ({"crop_foreground": True}, {}, {}),
        "sliding-window inference": ({}, {"padding": "same"}, {}),
        "test-time augmentation": ({}, {"tta": True}, {}),
        "largest-component clean-up": ({}, {"keep_largest": True}, {}),
        "DICOM SEG output": ({}, {}, {"as_seg": True}),
        "a DICOM series input": ({}, {}, {"image_path": tmp_path}),
        "device cuda": ({}, {}, {"device": "cuda"}),
    }
    for reason, (spec_change, settings_change, call_change) in cases.items():
        from dataclasses import replace

        kw = {"model_path": Path("m.onnx"), "image_path": image, "as_seg": False, "device": "cpu", **call_change}
        got = onnx_light.refusal({**spec, **spec_change}, replace(valid, **settings_change), **kw)
        assert got == reason, (reason, got)

    root = exported_model.parent.parent
    with pipeline_env(root):
        predictor = Predictor(exported_model, tta=True)
        out = predictor.predict(root / "data" / "imagesTr" / "synth_000_0000.nii.gz", tmp_path / "tta.nii.gz")
    assert predictor.last_refusal == "test-time augmentation" and out.is_file()
