"""The U-Net paper's pixel-wise loss weight map (Ronneberger et al. 2015, eq. 2), 2D and 3D.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

w_c balances class frequencies; d1 / d2 are the distances to the nearest and second-nearest
object (a connected component of a non-background class). The border term is applied on
background voxels, so the thin background gaps between touching objects weigh the most — the
network is pushed to keep them open. Computed once per case in preprocessing.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from pipeline.errors import InputError


def class_weights(label: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """w_c per class: N / (K * n_k) over the classes present (their voxel-weighted mean is 1);
    absent classes get 0."""
    label = np.asarray(label)
    n_classes = int(label.max()) + 1 if n_classes is None else n_classes
    counts = np.bincount(label.ravel().astype(np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes, np.float64)
    w[present] = label.size / (present.sum() * counts[present])
    return w


def _objects(label: np.ndarray, background: int) -> list[tuple[np.ndarray, int, tuple[slice, ...]]]:
    """(component map, component index, bounding box) per connected object of each class."""
    out = []
    for k in np.unique(label):
        if k == background:
            continue
        comps, n = ndimage.label(label == k)
        for i, sl in enumerate(ndimage.find_objects(comps), start=1):
            out.append((comps, i, sl))
    return out


def border_weight_map(
    label: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    background: int = 0,
    n_classes: int | None = None,
    spacing: tuple[float, ...] | None = None,
) -> np.ndarray:
    """The weight map for a spatial label array (2D or 3D, integer class indices).

    `sigma` and the distances are in voxels unless `spacing` is given (then in its units).
    `background` is the class whose voxels separate objects (0 normally; for ISBI-style
    membrane labels, the membrane class, so cells are the objects).
    """
    label = np.asarray(label)
    if label.ndim not in (2, 3):
        raise InputError(f"border_weight_map expects a 2D or 3D label array, got shape {label.shape}")
    lab = label.astype(np.int64)
    wc = class_weights(lab, n_classes)
    weights = wc[lab]
    if w0 == 0:
        return weights.astype(np.float32)
    d1 = np.full(lab.shape, np.inf)
    d2 = np.full(lab.shape, np.inf)
    # beyond d1 + d2 > 6 sigma the term is < 1.6e-8 * w0: compute each object's distances only there
    unit = min(spacing) if spacing is not None else 1.0
    reach = int(math.ceil(6 * sigma / unit))
    for comps, i, sl in _objects(lab, background):
        box = tuple(slice(max(s.start - reach, 0), min(s.stop + reach, n)) for s, n in zip(sl, lab.shape))
        dist = ndimage.distance_transform_edt(comps[box] != i, sampling=spacing)
        b1, b2 = d1[box], d2[box]
        d2[box] = np.minimum(b2, np.maximum(b1, dist))
        d1[box] = np.minimum(b1, dist)
    border = np.where(np.isfinite(d2), np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2)), 0.0)
    weights += w0 * border * (lab == background)
    return weights.astype(np.float32)
