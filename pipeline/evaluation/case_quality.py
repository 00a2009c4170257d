"""The evaluate stage's QC and calibration pass over the validation cases.

The temperature is fitted on every case's voxels, and the QC score (which the exported predictor
computes *after* the kept temperature) needs it, so the pass has two halves: `add` keeps each case's
probabilities and mask in a scratch folder (one case in memory at a time) and a calibration sample
in memory; `finish` fits the temperature, scores every case with it and returns the metrics
(`pipeline.evaluation.quality`). `uncertainty(case)` is the entropy map the predictor would write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.quality import band_sample, calibration, qc_metrics
from pipeline.inference.uncertainty import apply_temperature, normalized_entropy, quality_score


class CaseQuality:
    """Per-case probabilities kept in `scratch` (a folder the caller removes), scored by `finish`."""

    def __init__(self, scratch: str | Path) -> None:
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.cases: list[str] = []
        self._probs: list[np.ndarray] = []
        self._truths: list[np.ndarray] = []
        self.temperature: float | None = None  # the kept temperature (None: not kept or not fitted)
        self.scores: dict[str, float] = {}

    def _path(self, case: str, what: str) -> Path:
        index = self.cases.index(case) if case in self.cases else len(self.cases)  # case ids need not be file names
        return self.scratch / f"{index}_{what}.npy"

    def add(self, case: str, prob: Any, mask: Any, label: Any) -> None:
        """One case's probabilities (K, *spatial), mask and true label ((1, *spatial) or (*spatial))."""
        p = np.asarray(prob, dtype=np.float32)
        m, y = (np.asarray(a).reshape(p.shape[1:]) for a in (mask, label))
        np.save(self._path(case, "prob"), p)
        np.save(self._path(case, "mask"), m.astype(np.uint8))
        sample, truth = band_sample(p, y, m)
        self._probs.append(sample)
        self._truths.append(truth)
        self.cases.append(case)

    def _calibrated(self, case: str) -> np.ndarray:
        return apply_temperature(np.load(self._path(case, "prob")), self.temperature)

    def finish(self, per_case: list[dict[str, Any]]) -> dict[str, float]:
        """Fit and judge the temperature, score every case (the `qc_score` of each `per_case` entry,
        matched on `case`) and return the qc_* and calibration metrics."""
        num_classes = max((p.shape[1] for p in self._probs), default=2)
        prob = np.concatenate(self._probs) if self._probs else np.zeros((0, num_classes), np.float32)
        truth = np.concatenate(self._truths) if self._truths else np.zeros(0, np.int64)
        cal = calibration(prob, truth)
        self.temperature = cal["temperature"] if cal["temperature_kept"] else None
        self.scores = {c: quality_score(self._calibrated(c), np.load(self._path(c, "mask"))) for c in self.cases}
        for entry in per_case:
            entry["qc_score"] = self.scores[entry["case"]]
        dice = [e["dice"] for e in per_case]
        return {**qc_metrics([e["qc_score"] for e in per_case], dice), **cal}

    def uncertainty(self, case: str) -> np.ndarray:
        """The case's normalised entropy map (*spatial), after the kept temperature."""
        return normalized_entropy(self._calibrated(case))
