"""Where the model is unsure: per-voxel predictive entropy, the case-level quality score, temperature.

numpy and scipy only (no torch): the evaluate stage, the predictor's full and light paths and the
MONAI bundle's scripts share these lines.

- `normalized_entropy(prob)`: H(p) / log K per voxel, in [0, 1] (0: one-hot, 1: flat). `prob` is what
  `predict_case` returns: the softmax, or the *mean* softmax over the flip-TTA passes and the
  ensemble's members, so this is the predictive entropy of the averaged prediction.
- `apply_temperature(prob, T)`: p**(1/T) renormalised over the classes. On one pass this is exactly
  softmax(logits / T); on an average over passes (TTA, members) and after resampling to the source
  grid it is the same monotone map applied to the probabilities the pipeline has. The argmax
  (the mask) never changes.
- `quality_score(prob, mask)`: the case's QC score (higher = more likely wrong): 1 - the soft Dice
  between the probabilities and the mask, averaged over the foreground classes (`SCORE_TEXT`; the
  choice is argued in the README, "Which predictions to check").
- `weak_flag(auroc)`: whether the score's validation AUROC for the worst cases is below `WEAK_AUROC`,
  so that its REVIEW flag is to be read as a ranking, not an alarm.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SCORE_NAME = "1-soft_dice"
SCORE_TEXT = "1 - soft Dice between the probabilities and the mask, mean over the foreground classes"
EPS = 1e-12
# below 0.7 an AUROC is "poor discrimination" in the usual reading of diagnostic tests (Hosmer & Lemeshow)
WEAK_AUROC = 0.7


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def normalized_entropy(prob: Any, axis: int = 0) -> np.ndarray:
    """H(p) / log K along `axis` (the classes), float32 in [0, 1]: 1 for a flat softmax, 0 for a one-hot one.

    `prob` is (K, *spatial) probabilities (a MetaTensor, torch tensor or array); K = 1 gives zeros.
    """
    p = _array(prob).astype(np.float64, copy=False)
    k = p.shape[axis]
    if k < 2:
        return np.zeros(np.delete(p.shape, axis), dtype=np.float32)
    h = -np.sum(p * np.log(np.clip(p, EPS, None)), axis=axis)
    return np.clip(h / math.log(k), 0.0, 1.0).astype(np.float32)


def apply_temperature(prob: Any, temperature: float | None, axis: int = 0) -> np.ndarray:
    """p**(1/T) renormalised along `axis`, float32; T = 1 or None returns the probabilities as they are.

    T > 1 flattens (less confident), T < 1 sharpens; the argmax is unchanged.
    """
    p = _array(prob)
    if temperature is None or float(temperature) == 1.0:
        return p.astype(np.float32, copy=False)
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = np.log(np.clip(p.astype(np.float64), EPS, None)) / float(temperature)
    logp -= logp.max(axis=axis, keepdims=True)
    e = np.exp(logp)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def soft_dice(prob_c: np.ndarray, hard_c: np.ndarray) -> float:
    """Dice between one class's probabilities and its predicted mask: 2 sum(p h) / (sum p + sum h).

    A class predicted nowhere scores 1 when its expected volume (sum p) is under one voxel (sure it
    is absent), else 0 (the model expects some of it but drew none).
    """
    hard_sum, soft_sum = float(hard_c.sum()), float(prob_c.sum(dtype=np.float64))
    if hard_sum == 0:
        return 1.0 if soft_sum < 1.0 else 0.0
    return float(2.0 * prob_c[hard_c].sum(dtype=np.float64) / (soft_sum + hard_sum))


def quality_score(prob: Any, mask: Any) -> float:
    """The case's QC score in [0, 1]: 1 - the mean over foreground classes of `soft_dice`.

    The soft Dice is the Dice the mask would have if the voxel probabilities were the truth, so
    1 - it estimates the mask's Dice loss from the model's own doubt: wide uncertain borders around
    a small structure score high, a crisp large one low. `prob` (K, *spatial), `mask` class indices
    ((1, *spatial) or (*spatial)) on the same grid; K = 1 scores 0.
    """
    p = _array(prob)
    m = _array(mask)
    m = m[0] if m.ndim == p.ndim else m
    if p.shape[0] < 2:
        return 0.0
    return float(1.0 - np.mean([soft_dice(p[c], m == c) for c in range(1, p.shape[0])]))


def needs_review(score: float, threshold: float | None) -> bool:
    """Past the exported threshold (`score >= threshold`); never without one."""
    return threshold is not None and score >= threshold


def weak_flag(auroc: float | None) -> bool:
    """Whether the evaluate stage found the QC score too weak to trust its REVIEW flag as an alarm.

    Args:
        auroc: the score's AUROC for the worst validation cases (`qc_auroc`); None where unknown.

    Returns:
        True when `auroc` is known and below `WEAK_AUROC`.
    """
    return auroc is not None and auroc < WEAK_AUROC
