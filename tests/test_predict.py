"""Predictions come back in the source image's geometry, and the standalone predictor rejects bad input.

Geometry: a generated LPS-oriented, slightly oblique, anisotropic 3D NIfTI case goes through
`predict_case` with a spec that reorients to RAS and resamples to another spacing; the mask written
by `pipeline.io.write_image` must have exactly the source's shape and affine (read back with both
SimpleITK and nibabel), and its content must sit where the object is in the source.
Bad input: `unet-pipeline predict` with a wrong-dimensional, wrong-channel or unreadable image
fails with an error naming the file and writes nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_eval import pipeline_env

from pipeline.inference import InferenceSettings
from pipeline.inference.case import predict_case

SHAPE = (23, 19, 9)
SPACING = (0.7, 1.1, 2.5)
ORIGIN_RAS = (31.0, -12.5, 7.25)
SPEC = {
    "orientation": "RAS",
    "spacing": [1.0, 1.0, 1.2],
    "crop_foreground": False,
    "normalization": {"scheme": "zscore", "nonzero": False, "clip": None, "mean": None, "std": None},
}


class ThresholdNet(torch.nn.Module):
    """Pointwise logits (t - x, x - t): class 1 wherever the normalised intensity is above `t`.

    No context, so the mask is a known function of the image: if the geometry round trip flipped
    or shifted anything, the mask would no longer cover the object in the source image."""

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([threshold, -threshold]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def lps_affine() -> np.ndarray:
    """RAS affine of an LPS-stored volume (x -> L, y -> P, z -> S), rotated 10 degrees about z
    (oblique: a non-identity, non-axis-aligned direction), anisotropic spacing, nonzero origin."""
    t = math.radians(10.0)
    rot = np.array([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]])
    lps = np.diag([-1.0, -1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = rot @ lps @ np.diag(SPACING)
    aff[:3, 3] = ORIGIN_RAS
    return aff


def write_lps_case(path: Path) -> tuple[Path, np.ndarray, float]:
    """An off-centre ellipsoid (asymmetric, so any flip moves it) on noise.

    Returns (path, object mask, the intensity half-way between object and background in z-score
    units: the threshold that linear interpolation moves least)."""
    import nibabel as nib

    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij"))
    centre = np.array([0.3, 0.35, 0.45]) * np.array(SHAPE)
    radii = np.array([5.0, 4.0, 2.5])  # voxels; about 3.5 x 4.4 x 6.2 mm
    inside = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0
    image = (100.0 + 80.0 * inside + rng.normal(0.0, 1.0, SHAPE)).astype(np.float32)
    img = nib.Nifti1Image(image, lps_affine())
    img.set_qform(lps_affine(), code=1)
    img.set_sform(lps_affine(), code=1)
    nib.save(img, str(path))
    return path, inside, float((140.0 - image.mean()) / image.std())


def test_lps_affine_is_really_lps_oblique_and_anisotropic() -> None:
    import nibabel as nib

    assert "".join(nib.aff2axcodes(lps_affine())) == "LPS"
    np.testing.assert_allclose(nib.affines.voxel_sizes(lps_affine()), SPACING)
    direction = lps_affine()[:3, :3] / np.array(SPACING)
    assert not np.allclose(np.abs(direction), np.eye(3))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_prediction_on_reoriented_resampled_case_has_source_geometry(tmp_path: Path, padding: str) -> None:
    import nibabel as nib
    import SimpleITK as sitk

    from pipeline.inference.case import load_source_image, preprocess
    from pipeline.io import write_image

    src, inside, halfway = write_lps_case(tmp_path / "case_0000.nii.gz")
    # the spec really changes the grid: network input is RAS and on another shape
    x, _ = preprocess(src, SPEC)
    assert tuple(x.shape[1:]) != SHAPE
    assert "".join(nib.aff2axcodes(np.asarray(x.affine))) == "RAS"

    if padding == "same":
        net = ThresholdNet(halfway).eval()
        settings = InferenceSettings(padding="same", depth=1, tile_size=(8, 8, 8), blend="constant")
    else:
        from helpers_eval import small_unet

        net = small_unet(3, "valid", (4, 8), out_channels=2, dtype=torch.float32)
        settings = InferenceSettings(padding="valid", depth=1, tile_size=(8, 8, 8))
    mask, prob = predict_case(src, net, SPEC, settings)
    assert tuple(mask.shape) == (1, *SHAPE) and mask.dtype == torch.uint8
    assert tuple(prob.shape) == (2, *SHAPE)
    torch.testing.assert_close(prob.sum(0), torch.ones(SHAPE), atol=1e-5, rtol=0)

    out = write_image(mask, load_source_image(src), tmp_path / "mask.nii.gz")

    # nibabel: same shape and affine as the source file
    s_nib, m_nib = nib.load(str(src)), nib.load(str(out))
    assert m_nib.shape == s_nib.shape == SHAPE
    np.testing.assert_allclose(m_nib.affine, s_nib.affine, atol=1e-5)
    # SimpleITK: same size, spacing, origin and direction
    s_itk, m_itk = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert m_itk.GetSize() == s_itk.GetSize() == SHAPE
    np.testing.assert_allclose(m_itk.GetSpacing(), s_itk.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(m_itk.GetOrigin(), s_itk.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(m_itk.GetDirection(), s_itk.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(s_itk.GetSpacing(), SPACING, atol=1e-5)

    if padding == "same":
        # content, not just the header: the thresholded object lands back on the source object
        pred = np.asarray(m_nib.dataobj) > 0
        dice = 2 * (pred & inside).sum() / (pred.sum() + inside.sum())
        assert dice > 0.95, f"mask does not cover the source object (Dice {dice:.3f}): geometry flipped or shifted"
    # reading the file first (the evaluate stage's and the predictor's way) gives the same mask
    mask2, _ = predict_case(load_source_image(src), net, SPEC, settings)
    assert torch.equal(torch.as_tensor(mask2), torch.as_tensor(mask))


# --- the standalone predictor on bad input ---------------------------------------------------------------------


def _write_3d(path: Path) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 20, 20), np.float32)), str(path))
    return path


def _write_rgb_png(path: Path) -> Path:
    import SimpleITK as sitk

    rgb = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    return path


def _write_garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an image" * 10)
    return path


@pytest.mark.parametrize(
    "make,name,message",
    [
        (_write_3d, "volume.nii.gz", r"3D image .* the model is 2D"),
        (_write_rgb_png, "photo.png", r"3 channel\(s\) .* the model expects 1"),
        (_write_garbage, "broken.nii.gz", r"cannot read input image"),
        (None, "missing.nii.gz", r"does not exist"),
    ],
)
def test_predictor_rejects_bad_input_and_writes_nothing(
    tmp_path: Path, exported_model: Path, capsys: pytest.CaptureFixture, make, name: str, message: str
) -> None:
    import re

    from pipeline.cli import main
    from pipeline.predict.predictor import PredictError, predict_file

    image = make(tmp_path / name) if make else tmp_path / name
    out = tmp_path / "out" / "mask.nii.gz"
    with pytest.raises(PredictError, match=message) as err:
        predict_file(exported_model, image, out)
    assert str(image) in str(err.value)
    assert not out.exists() and not out.parent.exists()

    # the CLI: one error line naming the file, exit status 2, nothing written
    assert main(["predict", str(image), "--model", str(exported_model), "-o", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and str(image) in stderr and re.search(message, stderr)
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists() and not out.parent.exists()


def test_predictor_rejects_a_model_that_does_not_match_its_metadata(tmp_path: Path, exported_model: Path) -> None:
    import shutil

    from pipeline.predict.predictor import PredictError, predict_file

    bundle = tmp_path / "exported"
    shutil.copytree(exported_model.parent, bundle)
    tampered = bundle / "model.onnx"
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_000_0000.nii.gz"
    out = tmp_path / "mask.nii.gz"
    with pytest.raises(PredictError, match=r"model\.onnx does not match .*metadata\.json: SHA-256"):
        predict_file(tampered, image, out)
    assert not out.exists()


def test_unusable_inference_settings_in_the_metadata_name_the_file(tmp_path: Path, exported_model: Path) -> None:
    import json
    import shutil

    from pipeline.predict.predictor import PredictError, Predictor

    bundle = tmp_path / "exported"
    shutil.copytree(exported_model.parent, bundle)
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["unet_pipeline"]["inference"]["channels_last"] = "sometimes"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PredictError, match=r"metadata\.json: unusable inference settings: channels_last .*'sometimes'"):
        Predictor(bundle / exported_model.name)


def test_predictor_writes_mask_in_input_geometry(tmp_path: Path, exported_model: Path) -> None:
    """The 2D predictor on a raw case: a uint8 mask, same size/spacing/origin/direction as the input."""
    import SimpleITK as sitk

    from pipeline.predict.predictor import predict_file

    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_000_0000.nii.gz"
    with pipeline_env(root):
        out = predict_file(exported_model, image, tmp_path / "sub" / "mask.nii.gz")
    src, m = sitk.ReadImage(str(image)), sitk.ReadImage(str(out))
    assert m.GetSize() == src.GetSize()
    assert m.GetSpacing() == src.GetSpacing() and m.GetOrigin() == src.GetOrigin()
    assert m.GetDirection() == src.GetDirection()
    values = set(np.unique(sitk.GetArrayFromImage(m)).tolist())
    assert values <= {0, 1, 2} and len(values) > 1
    assert [p.name for p in out.parent.iterdir()] == ["mask.nii.gz"]  # no temp file left behind
