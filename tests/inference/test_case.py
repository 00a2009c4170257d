"""Predictions come back in the source image's geometry (pipeline.inference.case).

A generated LPS-oriented, slightly oblique, anisotropic 3D NIfTI case goes through `predict_case`
with a spec that reorients to RAS and resamples to another spacing; the mask written by
`pipeline.io.write_image` must have exactly the source's shape and affine (read back with both
SimpleITK and nibabel), and its content must sit where the object is in the source.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

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
        from helpers.evaluation import small_unet

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
