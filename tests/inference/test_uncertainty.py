"""Per-voxel entropy, temperature and the QC score (pipeline.inference.uncertainty) on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.inference.uncertainty import (
    apply_temperature,
    needs_review,
    normalized_entropy,
    quality_score,
    soft_dice,
    weak_flag,
)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_flat_softmax_is_maximal_and_one_hot_is_zero(k: int) -> None:
    flat = np.full((k, 5, 4, 3), 1.0 / k, dtype=np.float32)
    np.testing.assert_allclose(normalized_entropy(flat), 1.0, atol=1e-6)
    one_hot = np.zeros((k, 5, 4), dtype=np.float32)
    one_hot[k - 1] = 1.0
    assert np.array_equal(normalized_entropy(one_hot), np.zeros((5, 4), np.float32))
    # a torch tensor (what predict_case returns) gives the same
    assert np.array_equal(normalized_entropy(torch.as_tensor(flat)), normalized_entropy(flat))


def test_entropy_of_a_known_distribution() -> None:
    """(1/2, 1/4, 1/4): H = 1.5 ln 2, over ln 3."""
    p = np.array([0.5, 0.25, 0.25], dtype=np.float64)[:, None]
    assert normalized_entropy(p)[0] == pytest.approx(1.5 * math.log(2) / math.log(3), abs=1e-6)


def test_temperature_on_probabilities_is_softmax_of_scaled_logits() -> None:
    """One pass: p**(1/T) renormalised == softmax(z / T) exactly, and the argmax never moves."""
    z = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    p = torch.softmax(z, 0).numpy()
    for t in (0.5, 1.7, 4.0):
        want = torch.softmax(z / t, 0).numpy()
        np.testing.assert_allclose(apply_temperature(p, t), want, atol=1e-6)
        assert np.array_equal(apply_temperature(p, t).argmax(0), p.argmax(0))
    assert apply_temperature(p, None) is not None and np.array_equal(apply_temperature(p, 1.0), p.astype(np.float32))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(p, 0.0)


def test_soft_dice_and_quality_score_known_answers() -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 2:6] = 1  # 16 voxels of class 1
    one_hot = np.stack([mask == 0, mask == 1]).astype(np.float32)
    assert quality_score(one_hot, mask) == pytest.approx(0.0, abs=1e-7)  # certain and agreeing: nothing to check
    half = np.full((2, 8, 8), 0.5, dtype=np.float32)
    # sum p = 32, sum h = 16, sum p*h = 8: soft Dice 16 / 48
    assert soft_dice(half[1], mask == 1) == pytest.approx(1 / 3)
    assert quality_score(half, mask[None]) == pytest.approx(2 / 3)
    # a class drawn nowhere: absent for sure (expected volume < 1 voxel) -> 1, else 0
    nothing = np.zeros((8, 8), dtype=bool)
    assert soft_dice(np.full((8, 8), 0.01, np.float32), nothing) == 1.0
    assert soft_dice(np.full((8, 8), 0.2, np.float32), nothing) == 0.0


def test_review_needs_a_threshold() -> None:
    assert needs_review(0.5, 0.4) and needs_review(0.4, 0.4) and not needs_review(0.3, 0.4)
    assert not needs_review(1.0, None)


def test_a_flag_below_auroc_0_7_is_weak() -> None:
    assert weak_flag(0.33) and weak_flag(0.699)
    assert not weak_flag(0.7) and not weak_flag(0.95) and not weak_flag(None)
