"""A volume with anisotropic spacing and a non-identity direction, written by SimpleITK, and the RAS
affine pipeline.io must read back for it (computed independently of pipeline.io)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

SPACING = (0.7, 1.3, 2.5)
ORIGIN = (-12.0, 30.5, 7.25)
# a proper rotation (30 degrees about z, then 90 about x): not identity, not axis-aligned
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
DIRECTION = (np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])).ravel()


def volume(dtype=np.int16) -> np.ndarray:
    """(z, y, x) as SimpleITK holds it; values distinct per voxel so any axis mix-up shows."""
    return np.arange(5 * 7 * 9, dtype=dtype).reshape(5, 7, 9)


def sitk_volume() -> sitk.Image:
    image = sitk.GetImageFromArray(volume())
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tuple(DIRECTION))
    return image


def expected_ras_affine(image: sitk.Image) -> np.ndarray:
    """RAS affine from ITK's LPS geometry, computed independently of pipeline.io."""
    d = image.GetDimension()
    direction = np.asarray(image.GetDirection()).reshape(d, d)
    affine = np.eye(d + 1)
    affine[:d, :d] = direction * np.asarray(image.GetSpacing())
    affine[:d, d] = image.GetOrigin()
    flip = np.diag([-1, -1] + [1] * (d - 1))
    return flip @ affine


def write_sitk(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path
