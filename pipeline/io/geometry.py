"""Geometry conversions between SimpleITK (LPS, spacing/origin/direction) and MONAI (RAS affine).

Kept in one place because it is the only spot where ITK's LPS world and MONAI's RAS world meet;
the rest of the pipeline sees RAS affines only. The conversion is the one MONAI's `ITKReader`
uses (`monai.data.utils.orientation_ras_lps`): negate the first two world axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import InputError


def _flip(ndim: int) -> np.ndarray:
    """The diagonal LPS<->RAS flip for an (ndim+1)x(ndim+1) affine (self-inverse)."""
    diag = [-1.0] * min(ndim, 2) + [1.0] * (ndim - min(ndim, 2)) + [1.0]
    return np.diag(diag)


@dataclass(frozen=True)
class Geometry:
    """ITK-style geometry in LPS: spacing, origin (d,) and direction (d, d; columns = axes)."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    def lps_affine(self) -> np.ndarray:
        d = self.ndim
        aff = np.eye(d + 1)
        aff[:d, :d] = np.asarray(self.direction, float).reshape(d, d) @ np.diag(self.spacing)
        aff[:d, d] = self.origin
        return aff

    def ras_affine(self) -> np.ndarray:
        return _flip(self.ndim) @ self.lps_affine()


def geometry_from_sitk(image) -> Geometry:  # image: SimpleITK.Image
    d = image.GetDimension()
    return Geometry(
        spacing=tuple(float(s) for s in image.GetSpacing()),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=np.asarray(image.GetDirection(), float).reshape(d, d),
    )


def geometry_from_ras_affine(affine: np.ndarray) -> Geometry:
    """Split a RAS affine into ITK spacing / origin / direction (LPS)."""
    affine = np.asarray(affine, float)
    d = affine.shape[0] - 1
    lps = _flip(d) @ affine
    m = lps[:d, :d]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"affine has a zero-length axis: {affine.tolist()}")
    return Geometry(
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in lps[:d, d]),
        direction=m / spacing,
    )


def apply_geometry(image, geometry: Geometry) -> None:
    """Set spacing / origin / direction on a SimpleITK image in place."""
    image.SetSpacing([float(s) for s in geometry.spacing])
    image.SetOrigin([float(o) for o in geometry.origin])
    image.SetDirection([float(v) for v in np.asarray(geometry.direction, float).ravel()])


def spacing_from_affine(affine: np.ndarray) -> list[float]:
    affine = np.asarray(affine, float)
    d = affine.shape[0] - 1
    return [float(s) for s in np.linalg.norm(affine[:d, :d], axis=0)]
