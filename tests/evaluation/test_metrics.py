"""Dice / IoU / HD95 against hand-computed values, and the documented empty-mask rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluation.metrics import case_metrics, foreground_mean, metric_records, summarize

NAMES = ["background", "a", "b"]


def test_dice_iou_hand_computed():
    label = np.zeros((10, 10), dtype=np.uint8)
    pred = np.zeros((10, 10), dtype=np.uint8)
    label[2:6, 2:6] = 1  # 16 voxels
    pred[3:7, 2:6] = 1  # 16 voxels, shifted by one row: 12 shared
    label[8, 0:3] = 2  # 3 voxels
    pred[8, 1:5] = 2  # 4 voxels, 2 shared
    rows = case_metrics(pred, label, num_classes=3)
    assert rows[1]["dice"] == pytest.approx(2 * 12 / 32)  # 0.75
    assert rows[1]["iou"] == pytest.approx(12 / 20)  # 0.6
    assert rows[2]["dice"] == pytest.approx(2 * 2 / 7)
    assert rows[2]["iou"] == pytest.approx(2 / 5)
    # background: 100 - 19 label voxels, 100 - 20 predicted; shared = 100 - |fg union| = 100 - (20 + 5)
    assert rows[0]["dice"] == pytest.approx(2 * 75 / (81 + 80))
    assert (rows[1]["label_voxels"], rows[1]["pred_voxels"]) == (16, 16)


def test_hd95_in_mm_uses_spacing():
    label = np.zeros((1, 8, 8), dtype=np.int64)
    pred = np.zeros((1, 8, 8), dtype=np.int64)
    label[0, 2, 1] = 1
    pred[0, 2, 4] = 1  # 3 voxels apart along axis 1
    rows = case_metrics(pred, label, num_classes=2, spacing=(1.0, 2.5))
    assert rows[1]["hd95"] == pytest.approx(7.5)
    assert rows[1]["dice"] == 0.0


def test_empty_cases_follow_the_documented_rules():
    shape = (6, 8, 4)
    empty = np.zeros(shape, dtype=np.uint8)
    blob = empty.copy()
    blob[1:3, 1:3, 1:3] = 1
    spacing = (1.0, 2.0, 3.0)
    diagonal = math.sqrt(6**2 + 16**2 + 12**2)

    both = case_metrics(empty, empty, 3, spacing)  # classes 1 and 2 absent from both
    assert [(r["dice"], r["iou"], r["hd95"]) for r in both[1:]] == [(1.0, 1.0, 0.0)] * 2
    missed = case_metrics(empty, blob, 3, spacing)  # empty prediction, non-empty label
    assert (missed[1]["dice"], missed[1]["iou"]) == (0.0, 0.0) and math.isnan(missed[1]["hd95"])
    hallucinated = case_metrics(blob, empty, 3, spacing)  # non-empty prediction, empty label
    assert (hallucinated[1]["dice"], hallucinated[1]["iou"]) == (0.0, 0.0) and math.isnan(hallucinated[1]["hd95"])
    perfect = case_metrics(blob, blob, 3, spacing)
    assert (perfect[1]["dice"], perfect[1]["hd95"]) == (1.0, 0.0)

    records = []
    for cid, rows in [("both", both), ("missed", missed), ("halluc", hallucinated), ("perfect", perfect)]:
        records += metric_records(cid, rows, NAMES)
    summary = summarize(records, NAMES)
    assert not any(math.isnan(v) for v in summary.values()), summary
    assert summary["num_cases"] == 4
    assert summary["dice_mean_a"] == pytest.approx(0.5)  # 1, 0, 0, 1
    assert summary["iou_median_a"] == pytest.approx(0.5)
    assert summary["hd95_undefined_a"] == 2 and summary["hd95_undefined_b"] == 0
    assert summary["hd95_mean_a"] == pytest.approx(2 * diagonal / 4)  # undefined -> image diagonal
    assert summary["dice_mean_b"] == 1.0  # absent everywhere, correctly predicted absent
    assert summary["dice_mean_foreground"] == pytest.approx(np.mean([1, 0.5, 0.5, 1]))
    assert foreground_mean(missed, "hd95") == pytest.approx((diagonal + 0.0) / 2)


def test_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((4, 4)), np.zeros((4, 5)), 2)
    with pytest.raises(ValueError, match="outside 0..1"):
        case_metrics(np.full((4, 4), 2), np.zeros((4, 4)), 2)
