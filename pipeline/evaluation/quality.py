"""Does the QC score find the bad masks, and are the probabilities calibrated? (the evaluate stage)

On the validation cases:
- `qc_spearman`: Spearman rho between the QC score (`pipeline.inference.uncertainty.quality_score`)
  and the true Dice (negative: more uncertain, lower Dice);
- `qc_auroc`: the score's AUROC for finding the worst `WORST_FRACTION` of cases by Dice (at least
  one), from the Mann-Whitney U statistic: AUROC = U / (n_pos n_neg), ties counted half;
- `qc_threshold`: a score at which `RECALL_TARGET` of those worst cases are flagged (score >=
  threshold; `review_threshold`), and `qc_flagged`, the fraction of all validation cases it flags;
- `calibration_ece_before` / `calibration_ece_after`: the expected calibration error (top-label
  confidence, `ECE_BINS` equal-width bins) of the voxel probabilities near any structure (the
  union of true and predicted foreground, dilated by `NEAR_VOXELS` voxels), before and after
  `temperature`, one scalar T fitted by minimising the negative log-likelihood of those voxels
  (probabilities power-scaled, `uncertainty.apply_temperature`); `temperature_kept` is 1 when T
  lowers the ECE, and only then does the export carry it.

Undefined statistics (fewer than two cases, a constant score) are 0 for rho and 0.5 for the AUROC,
so metrics.json holds no NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

WORST_FRACTION = 0.1
RECALL_TARGET = 0.75  # "most" of the worst cases: three in four
NEAR_VOXELS = 3
ECE_BINS = 15
MAX_VOXELS_PER_CASE = 200_000  # the calibration sample of one case (evenly strided beyond this)
T_BOUNDS = (0.05, 20.0)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (`scipy.stats.spearmanr`); 0.0 where it is undefined (n < 2, a constant input)."""
    from scipy import stats

    if len(x) < 2:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(stats.spearmanr(np.asarray(x, dtype=float), np.asarray(y, dtype=float))[0])
    return rho if math.isfinite(rho) else 0.0


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(score of a random positive > that of a random negative), ties counted half: the Mann-Whitney
    U of the positives over n_pos * n_neg. 0.5 when either group is empty."""
    from scipy import stats

    s, pos = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = stats.rankdata(s)  # average ranks for ties
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def worst_cases(dice: Sequence[float], fraction: float = WORST_FRACTION) -> np.ndarray:
    """Boolean mask of the ceil(fraction * n) cases with the lowest Dice (at least one; ties by order)."""
    d = np.asarray(dice, dtype=float)
    out = np.zeros(len(d), dtype=bool)
    if len(d):
        out[np.argsort(d, kind="stable")[: max(1, math.ceil(fraction * len(d)))]] = True
    return out


def review_threshold(scores: Sequence[float], positive: Sequence[bool], recall: float = RECALL_TARGET) -> float:
    """A threshold that flags (score >= threshold) at least `recall` of the positives: halfway between
    the score of the positive that reaches `recall` and the next lower score of any case, so the
    flagged validation cases are the same and a case scored a hair differently elsewhere (another
    runtime's float rounding) falls on the same side."""
    s = np.asarray(scores, dtype=float)
    top = np.sort(s[np.asarray(positive, dtype=bool)])[::-1]
    if not len(top):
        return 1.0
    cut = float(top[max(1, math.ceil(recall * len(top))) - 1])
    below = s[s < cut]
    return (cut + float(below.max())) / 2 if len(below) else cut


def qc_metrics(scores: Sequence[float], dice: Sequence[float]) -> dict[str, float]:
    """qc_spearman, qc_auroc, qc_threshold and qc_flagged of per-case scores against the true Dice."""
    positive = worst_cases(dice)
    threshold = review_threshold(scores, positive)
    flagged = float(np.mean(np.asarray(scores, dtype=float) >= threshold)) if len(scores) else 0.0
    return {
        "qc_spearman": spearman(scores, dice),
        "qc_auroc": auroc(scores, positive),
        "qc_threshold": threshold,
        "qc_flagged": flagged,
    }


def near_structures(label: np.ndarray, mask: np.ndarray, width: int = NEAR_VOXELS) -> np.ndarray:
    """Voxels within `width` face-connected steps of any true or predicted foreground."""
    from scipy import ndimage

    fg = (np.asarray(label) > 0) | (np.asarray(mask) > 0)
    if not fg.any() or width <= 0:
        return fg
    return ndimage.binary_dilation(fg, ndimage.generate_binary_structure(fg.ndim, 1), iterations=width)


def band_sample(prob: Any, label: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (n, K) float32, true classes (n,)) of the voxels `near_structures`, at most
    `MAX_VOXELS_PER_CASE` of them (evenly strided, so the sample is the same on every run)."""
    p = np.asarray(prob, dtype=np.float32)
    where = np.flatnonzero(near_structures(label, mask))
    if len(where) > MAX_VOXELS_PER_CASE:
        where = where[:: math.ceil(len(where) / MAX_VOXELS_PER_CASE)]
    flat = p.reshape(p.shape[0], -1)
    return np.ascontiguousarray(flat[:, where].T), np.asarray(label).reshape(-1)[where].astype(np.int64)


def expected_calibration_error(prob: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over equal-width confidence bins of (bin share) * |accuracy - mean confidence|.

    `prob` (n, K), `truth` (n,) class indices; 0.0 for an empty sample.
    """
    if not len(truth):
        return 0.0
    conf = prob.max(axis=1).astype(np.float64)
    correct = (prob.argmax(axis=1) == truth).astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, correct, bins) - np.bincount(which, conf, bins))
    return float(gap.sum() / count.sum())


def _log_probs(prob: np.ndarray) -> np.ndarray:
    return np.log(np.clip(prob.astype(np.float64), 1e-12, None))


def nll(logp: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of `truth` under p**(1/T) renormalised (`logp` = log p, (n, K))."""
    z = logp / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = (top + np.log(np.exp(z - top).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(truth)), truth]))


def fit_temperature(prob: np.ndarray, truth: np.ndarray) -> float:
    """The T in `T_BOUNDS` minimising `nll` (`scipy.optimize.minimize_scalar`, bounded); 1.0 without data."""
    from scipy.optimize import minimize_scalar

    if not len(truth):
        return 1.0
    logp = _log_probs(prob)
    found = minimize_scalar(lambda t: nll(logp, truth, t), bounds=T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(found.x)


def calibration(prob: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """ECE before and after the fitted temperature, the temperature, and whether it is kept (1.0 / 0.0)."""
    from pipeline.inference.uncertainty import apply_temperature

    t = fit_temperature(prob, truth)
    before = expected_calibration_error(prob, truth)
    after = expected_calibration_error(apply_temperature(prob, t, axis=1), truth)
    return {
        "calibration_ece_before": before,
        "calibration_ece_after": after,
        "temperature": t,
        "temperature_kept": float(after < before),
    }


def export_fields(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """What the export carries from metrics.json (metadata.json's `quality`): the score, its review
    threshold and the temperature when it was kept; None for reports written before issue 29."""
    from pipeline.inference.uncertainty import SCORE_NAME, SCORE_TEXT

    if "qc_threshold" not in metrics:
        return None
    kept = bool(metrics.get("temperature_kept")) and "temperature" in metrics
    return {
        "score": SCORE_NAME,
        "score_definition": SCORE_TEXT,
        "threshold": float(metrics["qc_threshold"]),
        "temperature": float(metrics["temperature"]) if kept else None,
        "validation": {k: metrics[k] for k in sorted(metrics) if k.startswith(("qc_", "calibration_", "temperature"))},
    }
