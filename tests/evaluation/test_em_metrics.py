"""The ISBI challenge's V_Rand / V_Info after thinning, on hand-made slices with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation.em_metrics import scores_after_thinning, split_merge_scores, thinned_segments, truth_cells


def _grid(size: int = 31, step: int = 10, width: int = 1) -> np.ndarray:
    """Cells (1) separated by straight membranes (0) of `width` pixels centred on every `step`-th line."""
    img = np.ones((size, size), np.float32)
    half = width // 2
    for c in range(0, size, step):
        img[:, max(c - half, 0) : c + half + 1] = 0
        img[max(c - half, 0) : c + half + 1, :] = 0
    return img


def test_perfect_segmentation_scores_one() -> None:
    truth = _grid()
    s = scores_after_thinning([truth], [truth])
    assert s["v_rand"] == pytest.approx(1.0) and s["v_info"] == pytest.approx(1.0)


def test_one_merge_by_hand() -> None:
    """Two equal truth cells, one proposal segment over both (a gap in the membrane between them):
    Rand precision sum p_ij^2 / sum b_j^2 = 2 (1/2)^2 / 1 = 1/2, recall 1 -> F = 2/3; the proposal
    holds no information about the split: H(proposal) = 0 -> V_Info 0."""
    truth = np.ones((9, 19), np.float32)
    truth[:, 9] = 0  # two 9 x 9 cells
    truth[0, :] = truth[-1, :] = truth[:, 0] = truth[:, -1] = 0  # a frame of membrane
    merged = truth.copy()
    merged[1:-1, 9] = 1  # the membrane between them is missing in the proposal
    s = split_merge_scores(truth_cells(truth), thinned_segments(merged, 0.5))
    assert (s.rand_precision, s.rand_recall, s.v_rand) == pytest.approx((0.5, 1.0, 2 / 3))
    assert s.v_info == pytest.approx(0.0)
    assert scores_after_thinning([truth], [merged])["v_rand"] == pytest.approx(2 / 3)


def test_one_split_by_hand() -> None:
    """One truth cell cut by a 1-pixel proposal line into a (left) and b (right) pixels, with l line
    pixels counted as singletons (Fiji's p_i0): recall (a^2 + b^2 + l) / n^2, precision 1."""
    truth = np.ones((7, 12), np.float32)
    split = truth.copy()
    split[:, 4] = 0  # left 7 x 4 = 28, line 7, right 7 x 7 = 49
    a, line, b = 28, 7, 49
    n = a + line + b
    recall = (a * a + b * b + line) / n**2
    s = split_merge_scores(truth_cells(truth), thinned_segments(split, 0.5))
    assert s.rand_precision == pytest.approx(1.0)
    assert s.rand_recall == pytest.approx(recall)
    assert s.v_rand == pytest.approx(2 * recall / (1 + recall))
    # information: the truth is one cell, H(truth) = 0 -> precision 0, recall 1 (Fiji's convention)
    assert s.v_info == pytest.approx(0.0)


def test_thick_and_thin_boundaries_score_the_same_after_thinning() -> None:
    truth = _grid(width=1)
    thick = _grid(width=3)  # same centre lines, three pixels wide
    thin_s, thick_s = scores_after_thinning([truth], [truth]), scores_after_thinning([truth], [thick])
    assert thick_s == pytest.approx(thin_s)
    # without thinning the thick membranes' extra pixels would be unassigned proposal pixels
    assert (thinned_segments(thick, 0.5) == 0).sum() == (thinned_segments(truth, 0.5) == 0).sum()


def test_a_membrane_gap_costs_v_rand_and_more_gaps_cost_more() -> None:
    truth = _grid()
    one_gap, two_gaps = truth.copy(), truth.copy()
    one_gap[5, 10] = 1
    two_gaps[5, 10] = two_gaps[15, 20] = 1
    perfect, one, two = (scores_after_thinning([truth], [p])["v_rand"] for p in (truth, one_gap, two_gaps))
    assert perfect > one > two


def test_threshold_sweep_finds_the_best_binarisation() -> None:
    """A soft proposal whose membranes are only 0.35 'cell': closed at thresholds >= 0.4, merged below."""
    truth = _grid()
    soft = np.where(truth > 0, 0.9, 0.35).astype(np.float32)
    s = scores_after_thinning([truth], [soft])
    assert s["v_rand"] == pytest.approx(1.0) and 0.35 <= s["v_rand_threshold"] < 0.9


def test_stack_scores_average_slices() -> None:
    truth = _grid()
    merged = truth.copy()
    merged[1:30, 10] = 1  # one membrane line gone: cells merge pairwise across it
    both = scores_after_thinning([truth, truth], [truth, merged])
    alone = scores_after_thinning([truth], [merged])
    assert both["v_rand"] == pytest.approx((1.0 + alone["v_rand"]) / 2, abs=1e-9)
