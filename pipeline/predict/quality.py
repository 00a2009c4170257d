"""What the predictor says about each mask: the QC score and its verdict, and the uncertainty map.

`assess` applies the export's kept temperature to the probabilities, scores the case
(`pipeline.inference.uncertainty.quality_score`) and compares it with the export's review
threshold. `write_uncertainty` writes `<mask>_uncertainty.nii.gz` beside the mask (the normalised
entropy H(p) / log K, in [0, 1], on the mask's grid), a `<mask>_uncertainty.json` sidecar saying
what it is (one softmax, or the mean over TTA flips and ensemble members), and, for a DICOM SEG
output, `<mask>_uncertainty.dcm`, a DICOM Parametric Map referencing the source series.
numpy only at import: the light ONNX path uses it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.inference.uncertainty import (
    SCORE_TEXT,
    apply_temperature,
    needs_review,
    normalized_entropy,
    quality_score,
    weak_flag,
)
from pipeline.predict.metadata import PipelineSection

UNCERTAINTY_SUFFIX = "_uncertainty"


@dataclass(frozen=True)
class Verdict:
    """One case's QC score, the export's threshold (None: an export without one) and whether it is past it."""

    score: float
    threshold: float | None
    validation_auroc: float | None = None  # how well the score found the worst validation cases

    @property
    def review(self) -> bool:
        return needs_review(self.score, self.threshold)

    @property
    def flag(self) -> str:
        """`REVIEW`, `ok`, or `-` when the export has no threshold."""
        return "-" if self.threshold is None else ("REVIEW" if self.review else "ok")

    @property
    def weak(self) -> bool:
        """Whether the evaluate stage found the score weak at finding the worst cases (`weak_flag`)."""
        return self.threshold is not None and weak_flag(self.validation_auroc)

    @property
    def weak_note(self) -> str:
        """What the per-case line and batch mode's summary add for a weak flag; '' otherwise."""
        if not self.weak:
            return ""
        return f"a weak flag: on validation it found the worst cases with AUROC {self.validation_auroc:.2f}"

    def __str__(self) -> str:
        """The line `predict` prints, e.g. `QC score 0.4312 (review at >= 0.4223): REVIEW`, and a note
        when the evaluate stage found the score weak (`weak_note`)."""
        if self.threshold is None:
            return f"QC score {self.score:.4f} (this export has no review threshold: evaluate before export)"
        line = f"QC score {self.score:.4f} (review at >= {self.threshold:.4f}): {self.flag}"
        return f"{line} ({self.weak_note})" if self.weak else line

    def description(self) -> str:
        """A DICOM ContentDescription (64 characters at most)."""
        if self.threshold is None:
            return f"QC score {self.score:.4f}"
        return f"QC score {self.score:.4f} (review >= {self.threshold:.4f}): {self.flag}"


def assess(prob: Any, mask: Any, up: PipelineSection) -> tuple[np.ndarray, Verdict]:
    """(probabilities after the export's temperature, the case's Verdict)."""
    calibrated = apply_temperature(prob, up.temperature)
    return calibrated, Verdict(quality_score(calibrated, mask), up.review_threshold, up.qc_auroc)


def passes(settings: Any, up: PipelineSection) -> tuple[int, int]:
    """(flip-TTA passes, ensemble members) whose softmax the probabilities average."""
    flips = 1
    if settings.tta:
        axes = settings.tta_axes if settings.tta_axes is not None else range(up.spatial_dims)
        flips = 2 ** len(tuple(axes))
    return flips, int(up.provenance.get("ensemble_members") or 1)


def uncertainty_path(mask_path: str | Path, suffix: str = ".nii.gz") -> Path:
    """`<mask name without its suffix>_uncertainty<suffix>`, beside the mask."""
    from pipeline.io.suffixes import full_suffix

    mask_path = Path(mask_path)
    own = full_suffix(mask_path)
    stem = mask_path.name[: len(mask_path.name) - len(own)] if own else mask_path.name
    return mask_path.with_name(f"{stem}{UNCERTAINTY_SUFFIX}{suffix}")


def describe(settings: Any, up: PipelineSection, num_classes: int, verdict: Verdict) -> dict[str, Any]:
    """The sidecar's content: what the map is, over how many passes, and the case's QC verdict."""
    flips, members = passes(settings, up)
    n = flips * members
    if n == 1:
        source = "entropy of the single softmax (one pass: no TTA, one model)"
    else:
        source = f"entropy of the mean softmax over {n} passes ({flips} TTA flip(s) x {members} ensemble member(s))"
    return {
        "quantity": "normalised predictive entropy H(p) / log K per voxel, 0 = certain, 1 = uniform over the classes",
        "range": [0.0, 1.0],
        "classes": num_classes,
        "source": source,
        "passes": n,
        "tta_flips": flips,
        "ensemble_members": members,
        "temperature": up.temperature,
        "qc_score": verdict.score,
        "qc_score_definition": SCORE_TEXT,
        "qc_threshold": verdict.threshold,
        "review": verdict.review,
        "qc_validation_auroc": verdict.validation_auroc,
        "weak_flag": verdict.weak,
    }


def header_text(info: dict[str, Any]) -> str:
    """The NIfTI header description (80 bytes): quantity, passes, temperature."""
    how = "1 softmax" if info["passes"] == 1 else f"mean softmax of {info['passes']} passes"
    t = info["temperature"]
    return f"entropy/logK in [0,1]; {how}; T={'1' if t is None else f'{t:.3g}'}"[:79]


def _write_sidecar(mask_path: str | Path, map_path: Path, info: dict[str, Any]) -> None:
    from pipeline.io.atomic import atomic_write

    with atomic_write(uncertainty_path(mask_path, ".json")) as tmp:
        Path(tmp).write_text(json.dumps({"map": map_path.name, **info}, indent=2) + "\n")


def write_uncertainty(
    mask_path: str | Path, calibrated: Any, image: Any, settings: Any, up: PipelineSection, verdict: Verdict
) -> Path:
    """The entropy map of `calibrated` (K, *spatial) on `image`'s grid beside the mask (NIfTI), and
    its JSON sidecar; returns the map's path."""
    from pipeline.io import write_image

    info = describe(settings, up, int(np.asarray(calibrated).shape[0]), verdict)
    path = uncertainty_path(mask_path)
    out = write_image(normalized_entropy(calibrated), image, path, description=header_text(info))
    _write_sidecar(mask_path, out, info)
    return out


def write_uncertainty_pmap(
    seg_path: str | Path,
    calibrated: Any,
    image: Any,
    series_dir: str | Path,
    context: tuple[Any, PipelineSection, Any],
    verdict: Verdict,
    series_uid: str | None = None,
) -> Path:
    """The entropy map as a DICOM Parametric Map beside a SEG output (`<seg>_uncertainty.dcm`),
    referencing the series the SEG references, and its JSON sidecar. `context`: (inference settings,
    the export's metadata block, the SEG's `Algorithm`)."""
    from pipeline.io import dicom_series_files
    from pipeline.io.dicom_pmap import write_parametric_map

    settings, up, algorithm = context
    info = describe(settings, up, int(np.asarray(calibrated).shape[0]), verdict)
    _, files = dicom_series_files(series_dir, series_uid)
    affine = np.asarray(image.affine, dtype=np.float64)
    path = uncertainty_path(seg_path, ".dcm")
    out = write_parametric_map(path, normalized_entropy(calibrated), affine, files, algorithm, header_text(info)[:64])
    _write_sidecar(seg_path, out, info)
    return out
