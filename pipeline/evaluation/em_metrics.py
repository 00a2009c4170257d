"""The ISBI 2012 challenge's scores for EM cell segmentation: V_Rand and V_Info after thinning.

Follows Fiji's reference implementation (Trainable_Segmentation, `trainableSegmentation.metrics`:
`RandError.getMaximalVRandAfterThinning`, `VariationOfInformation.getMaximalVInfoAfterThinning`)
step by step, on scikit-image / scipy primitives:

1. binarise the truth and the proposal (the probability of *cell*, i.e. not boundary) at a threshold;
2. label the truth's 4-connected cells; its background (the membranes) is dropped from the score;
3. thin the proposal's boundaries: a 4-connected watershed of the binary proposal seeded by its
   cells hands every boundary pixel to a cell, except 1-pixel watershed lines (label 0);
4. the overlap table p_ij of truth cell i and proposal segment j over the truth's foreground (n
   pixels), proposal label 0 counted as singletons, as Fiji does;
5. Rand: precision sum p_ij^2 / sum b_j^2, recall sum p_ij^2 / sum a_i^2 (+ singletons), F-score;
   information: precision I / H(truth), recall I / H(proposal), F-score;
6. the maximum over thresholds 0.0, 0.1, ..., 1.0 (per-slice scores averaged at each threshold).

A thick boundary and a thin one on the same centre line score the same (step 3): what counts is
whether the boundaries close, which is what separates cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(11))


@dataclass(frozen=True)
class SplitMergeScores:
    """Scores of one slice at one threshold."""

    v_rand: float
    rand_precision: float
    rand_recall: float
    v_info: float
    info_precision: float
    info_recall: float


def truth_cells(truth: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """4-connected cells of a binary truth (cell > threshold); 0 = boundary, ignored by the scores."""
    from skimage.measure import label

    return label(np.asarray(truth) > threshold, connectivity=1)


def thinned_segments(cell_probability: np.ndarray, threshold: float) -> np.ndarray:
    """The proposal's segments after boundary thinning: every boundary pixel goes to the cell whose
    flood reaches it first; 1-pixel watershed lines stay 0."""
    from skimage.measure import label
    from skimage.segmentation import watershed

    cells = np.asarray(cell_probability) > threshold
    markers = label(cells, connectivity=1)
    if markers.max() == 0:
        return markers
    boundary = np.where(cells, 0, 255).astype(np.uint8)
    return watershed(boundary, markers=markers, connectivity=1, watershed_line=True)


def _overlap(gt: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(p_ij for i, j >= 1, a_i, b_j, p_i0 total, n) over the truth's foreground, normalised by n."""
    from skimage.metrics import contingency_table

    fg = gt > 0
    n = float(fg.sum())
    table = contingency_table(gt[fg], seg[fg], sparse_type="array").toarray().astype(np.float64) / n
    # rows / columns are indexed by label value: row 0 (truth background) is empty after the mask
    p_ij, p_i0 = table[1:, 1:], float(table[1:, 0].sum()) if table.shape[1] else 0.0
    a_i = table[1:, :].sum(axis=1)
    b_j = p_ij.sum(axis=0)
    return p_ij, a_i, b_j, p_i0, n


def _f(p: float, r: float) -> float:
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def split_merge_scores(gt: np.ndarray, seg: np.ndarray) -> SplitMergeScores:
    """V_Rand and V_Info of segments `seg` against truth cells `gt` (both label images, 0 = none)."""
    if not (gt > 0).any():
        return SplitMergeScores(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    p_ij, a_i, b_j, p_i0, n = _overlap(gt, seg)
    # Rand (Fiji's getForegroundRestrictedRandIndexStatsN2): proposal label 0 counts as singletons
    sum_a2 = float((a_i**2).sum())
    sum_b2 = float((b_j**2).sum()) + p_i0 / n
    sum_ab2 = float((p_ij**2).sum()) + p_i0 / n
    r_prec = sum_ab2 / sum_b2 if sum_b2 > sum_ab2 else 1.0  # no false positives: precision 1
    r_rec = sum_ab2 / sum_a2 if sum_a2 > sum_ab2 else 1.0
    # information theoretic (Fiji's foregroundRestrictedFscore)

    def xlogx(v: np.ndarray) -> float:
        v = v[v > 0]
        return float((v * np.log(v)).sum())

    sum_a = xlogx(a_i)
    sum_b = xlogx(b_j) - p_i0 * np.log(n)
    sum_ab = xlogx(p_ij) - p_i0 * np.log(n)
    h_a, h_b = -sum_a, -sum_b
    h_a_given_b, h_b_given_a = sum_b - sum_ab, sum_a - sum_ab
    if h_b == 0:
        i_prec, i_rec = 1.0, 0.0
    elif h_a == 0:
        i_prec, i_rec = 0.0, 1.0
    else:
        i_prec, i_rec = (h_a - h_a_given_b) / h_a, (h_b - h_b_given_a) / h_b
    return SplitMergeScores(_f(r_prec, r_rec), r_prec, r_rec, _f(i_prec, i_rec), i_prec, i_rec)


def scores_after_thinning(
    truths: Sequence[np.ndarray], cell_probabilities: Sequence[np.ndarray], thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, float]:
    """The challenge's figures for a stack of 2D slices: V_Rand and V_Info after thinning, each
    maximised over `thresholds` (slice scores averaged at each threshold), and the arg-max thresholds."""
    if len(truths) != len(cell_probabilities) or not truths:
        raise ValueError(f"need as many truths as proposals (got {len(truths)} and {len(cell_probabilities)})")
    gts = [truth_cells(t) for t in truths]
    per_threshold = []
    for th in thresholds:
        slices = [split_merge_scores(gt, thinned_segments(p, th)) for gt, p in zip(gts, cell_probabilities)]
        per_threshold.append((float(np.mean([s.v_rand for s in slices])), float(np.mean([s.v_info for s in slices]))))
    k_rand = int(np.argmax([r for r, _ in per_threshold]))
    k_info = int(np.argmax([i for _, i in per_threshold]))
    return {
        "v_rand": per_threshold[k_rand][0],
        "v_rand_threshold": float(thresholds[k_rand]),
        "v_info": per_threshold[k_info][1],
        "v_info_threshold": float(thresholds[k_info]),
    }
