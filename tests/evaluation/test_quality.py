"""The QC statistics and the calibration of pipeline.evaluation.quality on known answers, and the
two-pass CaseQuality on synthetic cases whose answers are known."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation.quality import (
    auroc,
    band_sample,
    calibration,
    expected_calibration_error,
    export_fields,
    fit_temperature,
    near_structures,
    qc_metrics,
    review_threshold,
    spearman,
    worst_cases,
)


def _pairwise_auroc(scores, positive) -> float:
    """The AUROC by its definition: over every (positive, negative) pair, 1 if ordered, 1/2 if tied."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_auroc_known_answers() -> None:
    positive = [True, True, False, False, False]
    assert auroc([0.9, 0.8, 0.1, 0.2, 0.3], positive) == 1.0  # a perfectly separating score
    assert auroc([0.1, 0.2, 0.9, 0.8, 0.7], positive) == 0.0  # reversed
    assert auroc([0.5] * 5, positive) == 0.5  # all tied
    assert auroc([0.3, 0.2], [False, False]) == 0.5  # undefined: no positives
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 6, 15).astype(float)  # many ties
        p = rng.random(15) < 0.3
        if p.any() and not p.all():
            assert auroc(s, p) == pytest.approx(_pairwise_auroc(s, p))


def test_spearman_known_answers() -> None:
    x = [0.1, 0.4, 0.2, 0.9, 0.5]
    assert spearman(x, [v**3 for v in x]) == pytest.approx(1.0)  # any increasing map
    assert spearman(x, [-math.exp(v) for v in x]) == pytest.approx(-1.0)
    # 1 - 6 sum d^2 / (n (n^2 - 1)) with ranks (1..5) vs (2, 1, 4, 3, 5): sum d^2 = 4
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert spearman([0.3, 0.3, 0.3], [0.1, 0.5, 0.9]) == 0.0  # constant: undefined -> 0
    assert spearman([0.3], [0.1]) == 0.0


def test_worst_cases_threshold_and_qc_metrics() -> None:
    dice = [0.9, 0.2, 0.85, 0.95, 0.3, 0.88, 0.91, 0.93, 0.87, 0.92, 0.89, 0.25]  # 12 cases: worst 10 % = 2
    assert np.flatnonzero(worst_cases(dice)).tolist() == [1, 11]
    assert worst_cases([0.5]).tolist() == [True]
    scores = [0.1, 0.6, 0.2, 0.05, 0.3, 0.15, 0.1, 0.08, 0.2, 0.1, 0.12, 0.5]
    positive = worst_cases(dice)
    # both worst cases flagged (ceil(0.75 * 2) = 2): halfway between 0.5 and the next lower score, 0.3
    assert review_threshold(scores, positive) == pytest.approx(0.4)
    assert review_threshold(scores, positive, recall=0.5) == pytest.approx(0.55)
    q = qc_metrics(scores, dice)
    assert q["qc_auroc"] == 1.0 and q["qc_threshold"] == pytest.approx(0.4)
    assert q["qc_flagged"] == pytest.approx(2 / 12)
    assert q["qc_spearman"] < -0.5
    assert all(math.isfinite(v) for v in qc_metrics([0.2], [0.9]).values())  # one case: defined, no NaN


def test_perfectly_calibrated_probabilities_have_near_zero_ece() -> None:
    """Labels drawn from the probabilities themselves: calibrated by construction, ECE ~ 0; the same
    labels under over-confident probabilities (p**3 renormalised) show a clear gap."""
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (200_000, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    truth = (rng.random(len(p))[:, None] > np.cumsum(p, 1)).sum(1)
    assert expected_calibration_error(p, truth) < 0.01
    sharp = p**3 / (p**3).sum(1, keepdims=True)
    assert expected_calibration_error(sharp, truth) > 0.05
    assert expected_calibration_error(np.zeros((0, 3)), np.zeros(0, np.int64)) == 0.0


def test_ece_of_a_hand_computed_sample() -> None:
    """Two bins: confidence 0.95 right 1 of 2 times (gap 0.45), 0.55 right 1 of 2 (gap 0.05): ECE 0.25."""
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.45, 0.55]])
    truth = np.array([0, 1, 1, 0])
    assert expected_calibration_error(p, truth) == pytest.approx(0.25)


def test_temperature_fit_recovers_a_known_temperature() -> None:
    """Labels from softmax(z); the model reports softmax(2 z), over-confident by T = 2: the fit finds
    T ~ 2 and the ECE drops; on calibrated probabilities T ~ 1."""
    rng = np.random.default_rng(2)
    z = rng.normal(0, 1.5, (100_000, 3))
    p_true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    truth = (rng.random(len(z))[:, None] > np.cumsum(p_true, 1)).sum(1)
    over = np.exp(2 * z) / np.exp(2 * z).sum(1, keepdims=True)
    assert fit_temperature(over, truth) == pytest.approx(2.0, rel=0.05)
    assert fit_temperature(p_true, truth) == pytest.approx(1.0, rel=0.05)
    cal = calibration(over.astype(np.float32), truth)
    assert cal["calibration_ece_after"] < cal["calibration_ece_before"] and cal["temperature_kept"] == 1.0


def test_calibration_band_is_near_the_structures() -> None:
    label = np.zeros((20, 20), np.uint8)
    label[5:8, 5:8] = 1
    mask = np.zeros_like(label)
    mask[12, 12] = 2
    band = near_structures(label, mask, width=2)
    assert band[5, 5] and band[3, 6] and not band[2, 6]  # 2 steps out of the label, not 3
    assert band[12, 14] and not band[12, 15] and not band[0, 19]
    prob = np.zeros((3, 20, 20), np.float32)
    prob[0] = 1.0
    sample, truth = band_sample(prob, label, mask)  # the band of NEAR_VOXELS (3) steps
    assert sample.shape == (int(near_structures(label, mask).sum()), 3) and truth.tolist().count(1) == 9


def test_export_fields_keep_the_temperature_only_when_it_helped() -> None:
    metrics = {"dice_mean_foreground": 0.9, "qc_threshold": 0.3, "temperature": 1.4, "temperature_kept": 1.0}
    assert export_fields(metrics)["temperature"] == 1.4 and export_fields(metrics)["threshold"] == 0.3
    assert export_fields({**metrics, "temperature_kept": 0.0})["temperature"] is None
    assert export_fields({"dice_mean_foreground": 0.9}) is None  # reports from before the QC score


def test_case_quality_scores_each_case_with_the_kept_temperature(tmp_path: Path) -> None:
    """CaseQuality on synthetic cases: each case's qc_score is quality_score of its probabilities
    after the fitted temperature (kept here: the probabilities are over-confident), the scratch files
    hold exactly the probabilities given, and the uncertainty map is their entropy."""
    from pipeline.evaluation.case_quality import CaseQuality
    from pipeline.inference.uncertainty import apply_temperature, normalized_entropy, quality_score

    rng = np.random.default_rng(3)
    quality = CaseQuality(tmp_path / "scratch")
    cases, per_case = {}, []
    for i in range(6):
        z = rng.normal(0, 1, (2, 16, 16))
        z[1, 4 : 8 + i, 4:10] += 3  # a structure growing case by case
        p_true = np.exp(z) / np.exp(z).sum(0, keepdims=True)
        label = (rng.random((16, 16)) < p_true[1]).astype(np.uint8)
        over = (np.exp(3 * z) / np.exp(3 * z).sum(0, keepdims=True)).astype(np.float32)
        mask = over.argmax(0).astype(np.uint8)[None]
        quality.add(f"case {i}", over, mask, label[None])
        cases[f"case {i}"] = (over, mask)
        per_case.append({"case": f"case {i}", "dice": 0.5 + 0.05 * i})
    metrics = quality.finish(per_case)
    assert metrics["temperature_kept"] == 1.0 and metrics["temperature"] > 1.5
    for entry in per_case:
        over, mask = cases[entry["case"]]
        assert entry["qc_score"] == pytest.approx(quality_score(apply_temperature(over, metrics["temperature"]), mask))
        assert np.allclose(
            quality.uncertainty(entry["case"]), normalized_entropy(apply_temperature(over, quality.temperature))
        )
    assert set(metrics) == {
        "qc_spearman", "qc_auroc", "qc_threshold", "qc_flagged",
        "calibration_ece_before", "calibration_ece_after", "temperature", "temperature_kept",
    }  # fmt: skip
    assert all(math.isfinite(v) for v in metrics.values())
