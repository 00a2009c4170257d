"""The U-Net paper's border weight map against hand-computed values (2D) and a 3D sanity case.

w(x) = w_c(x) + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, w_c(x) elsewhere,
with w_c(k) = N / (K * n_k) (pipeline.data.weight_map.class_weights).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

W0, SIGMA = 10.0, 5.0


def _two_squares(gap: int) -> np.ndarray:
    """12 x (18 + gap): two 8x8 squares of class 1 at rows 2..9, a `gap`-px background column between."""
    label = np.zeros((12, 18 + gap), np.uint8)
    label[2:10, 2:10] = 1
    label[2:10, 10 + gap : 18 + gap] = 1
    return label


def test_two_squares_one_pixel_gap_by_hand() -> None:
    from pipeline.data.weight_map import border_weight_map

    label = _two_squares(gap=1)  # 12 x 19 = 228 px, 128 foreground, 100 background, gap = column 10
    w = border_weight_map(label, w0=W0, sigma=SIGMA)
    wc_bg, wc_fg = 228 / (2 * 100), 228 / (2 * 128)  # 1.14, 0.890625

    # on the gap: d1 = d2 = 1 px -> w0 * exp(-4 / 50) = 9.2312
    gap_value = wc_bg + W0 * math.exp(-((1 + 1) ** 2) / (2 * SIGMA**2))
    assert gap_value == pytest.approx(10.3712, abs=1e-4)
    np.testing.assert_allclose(w[2:10, 10], gap_value, rtol=1e-5)
    # the peak is the gap, and nowhere else
    assert w.max() == pytest.approx(gap_value, rel=1e-5)
    assert set(zip(*np.nonzero(w > gap_value - 1e-3))) == {(r, 10) for r in range(2, 10)}
    # inside the objects: the class weight only (the border term lives on background)
    np.testing.assert_allclose(w[label == 1], wc_fg, rtol=1e-6)
    # diagonal neighbour of the gap: d1 = d2 = sqrt(2)
    np.testing.assert_allclose(w[1, 10], wc_bg + W0 * math.exp(-((2 * math.sqrt(2)) ** 2) / (2 * SIGMA**2)), rtol=1e-5)
    # far side of the left square: d1 = 2 (to column 2), d2 = 11 (to column 11)
    np.testing.assert_allclose(w[5, 0], wc_bg + W0 * math.exp(-(13**2) / (2 * SIGMA**2)), rtol=1e-5)
    # decays away from the gap along the row above the objects and the column through the gap
    row = w[0, 10:19]
    assert np.all(np.diff(row) < 0), row
    assert np.all(np.diff(w[:3, 10]) > 0) and np.all(np.diff(w[9:, 10]) < 0)


def test_two_pixel_gap_and_class_balance() -> None:
    from pipeline.data.weight_map import border_weight_map, class_weights

    label = _two_squares(gap=2)  # 12 x 20 = 240 px, 128 fg, 112 bg; gap = columns 10, 11
    w = border_weight_map(label, w0=W0, sigma=SIGMA)
    wc = class_weights(label)
    np.testing.assert_allclose(wc, [240 / 224, 240 / 256])
    assert float((wc[label] * 1.0).mean()) == pytest.approx(1.0)  # voxel-weighted mean of w_c is 1
    expected = wc[0] + W0 * math.exp(-((1 + 2) ** 2) / (2 * SIGMA**2))  # d1 = 1, d2 = 2
    np.testing.assert_allclose(w[2:10, 10:12], expected, rtol=1e-5)
    assert w.max() == pytest.approx(expected, rel=1e-5)
    # w0 = 0 leaves only the class weights
    np.testing.assert_allclose(border_weight_map(label, w0=0.0), wc[label], rtol=1e-6)


def test_separating_class_and_single_object() -> None:
    """One object has no second-nearest object: no border term; `background` picks the separating class."""
    from pipeline.data.weight_map import border_weight_map, class_weights

    single = np.zeros((16, 16), np.uint8)
    single[4:10, 4:10] = 1
    np.testing.assert_allclose(border_weight_map(single), class_weights(single)[single], rtol=1e-6)
    # ISBI style: class 1 = membrane separating cells (class 0); the membrane gap gets the border term
    membrane = np.ones_like(_two_squares(1))
    membrane[_two_squares(1) == 1] = 0
    w = border_weight_map(membrane, w0=W0, sigma=SIGMA, background=1)
    assert np.unravel_index(int(w.argmax()), w.shape)[1] == 10


def test_3d_two_cubes_gap_plane() -> None:
    from pipeline.data.weight_map import border_weight_map, class_weights

    label = np.zeros((12, 12, 21), np.uint8)
    label[2:10, 2:10, 2:10] = 1
    label[2:10, 2:10, 11:19] = 2  # another class: each class' components are objects
    w = border_weight_map(label, w0=W0, sigma=SIGMA)
    wc = class_weights(label)
    gap = wc[0] + W0 * math.exp(-4 / (2 * SIGMA**2))
    np.testing.assert_allclose(w[2:10, 2:10, 10], gap, rtol=1e-5)
    assert w.max() == pytest.approx(gap, rel=1e-5)
    np.testing.assert_allclose(w[label == 1], wc[1], rtol=1e-6)
    np.testing.assert_allclose(w[label == 2], wc[2], rtol=1e-6)
    assert np.all(np.diff(w[0, 0, 10:]) < 0) and w.dtype == np.float32
    # anisotropic spacing: distances in mm; a 2 mm gap voxel has d1 = d2 = 2
    ws = border_weight_map(label, w0=W0, sigma=SIGMA, spacing=(1.0, 1.0, 2.0))
    np.testing.assert_allclose(ws[5, 5, 10], wc[0] + W0 * math.exp(-16 / (2 * SIGMA**2)), rtol=1e-5)


def test_rejects_1d_labels() -> None:
    from pipeline.data.weight_map import border_weight_map

    with pytest.raises(ValueError, match="2D or 3D"):
        border_weight_map(np.zeros(10, np.uint8))
