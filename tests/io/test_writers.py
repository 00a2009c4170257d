"""Image writers (pipeline.io.writers): a written mask reads back with its source's geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from helpers.images import sitk_volume, write_sitk

from pipeline.io import read_image, write_image


def test_write_then_read_keeps_geometry(tmp_path: Path) -> None:
    source = read_image(write_sitk(tmp_path / "src.nrrd", sitk_volume()))
    out = write_image(source, source, tmp_path / "copy.nii.gz")
    back = read_image(out)
    np.testing.assert_array_equal(back.numpy(), source.numpy())
    np.testing.assert_allclose(back.affine.numpy(), source.affine.numpy(), atol=1e-5)
    assert nib.load(out).shape == (9, 7, 5)
    np.testing.assert_allclose(nib.load(out).affine, source.affine.numpy(), atol=1e-4)
