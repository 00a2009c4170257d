"""Image readers (pipeline.io.readers): files written by SimpleITK / nibabel / tifffile / PIL with
anisotropic spacing and non-identity directions come back with the same array and geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers.images import expected_ras_affine, sitk_volume, volume

from pipeline.io import read_image, read_tiff_stack


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_sitk_written_files_round_trip(tmp_path: Path, suffix: str) -> None:
    image = sitk_volume()
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(image, str(path))
    got = read_image(path)
    assert tuple(got.shape) == (1, 9, 7, 5)  # (C, x, y, z)
    np.testing.assert_array_equal(got.numpy()[0], volume().transpose(2, 1, 0))
    np.testing.assert_allclose(got.affine.numpy(), expected_ras_affine(image), atol=1e-5)


def test_nibabel_written_nifti_round_trip(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float32)
    affine = np.array([[0, -0.8, 0, 10], [1.5, 0, 0, -4], [0, 0, 3.0, 2], [0, 0, 0, 1]])  # permuted, flipped axes
    path = tmp_path / "nib.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    got = read_image(path)
    np.testing.assert_allclose(got.numpy()[0], data)
    np.testing.assert_allclose(got.affine.numpy(), affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_2d_image_files(tmp_path: Path, suffix: str) -> None:
    import tifffile
    from PIL import Image

    arr = (np.arange(12 * 20).reshape(12, 20) % 251).astype(np.uint8)  # (rows, cols)
    path = tmp_path / f"slice{suffix}"
    if suffix == ".png":
        Image.fromarray(arr).save(path)
    else:
        tifffile.imwrite(path, arr)
    got = read_image(path)
    assert tuple(got.shape) == (1, 20, 12)  # (C, x = columns, y = rows)
    np.testing.assert_array_equal(got.numpy()[0], arr.T)
    assert got.affine.shape == (3, 3)


def test_multipage_tiff_is_a_stack_of_2d_slices(tmp_path: Path) -> None:
    import tifffile

    pages = np.stack([np.full((8, 10), k * 10, np.uint8) + np.arange(10, dtype=np.uint8) for k in range(4)])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, pages, photometric="minisblack")
    slices = read_tiff_stack(path)
    assert len(slices) == 4
    for k, s in enumerate(slices):
        assert tuple(s.shape) == (1, 10, 8)
        np.testing.assert_array_equal(s.numpy()[0], pages[k].T)
