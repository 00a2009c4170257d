"""Batch prediction: every case under a folder -- image files, and DICOM series found by Series
Instance UID -- one output each, case by case (memory does not grow with the number of cases).

A case that cannot be read, or that the model cannot take, is reported by name and the run goes
on; the caller turns the failures into the exit status.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.io.dicom_series import NON_IMAGE_MODALITIES, Series, check_series, find_series
from pipeline.io.suffixes import SEG_SUFFIX, SUPPORTED_SUFFIXES, full_suffix, strip_image_suffix
from pipeline.predict.errors import PredictError
from pipeline.predict.predictor import Predictor

FORMATS = {"nifti": ".nii.gz", "dicom-seg": SEG_SUFFIX}


@dataclass
class Outcome:
    case: str
    status: str  # ok | skipped | failed
    output: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    series: Series | None = None


def _name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).as_posix() if path != root else root.name
    return strip_image_suffix(rel).replace("/", "_") or root.name


def collect_cases(root: Path) -> tuple[list[Case], list[Outcome]]:
    """Cases under `root` and the stray files (non-DICOM files in DICOM folders, reported as failures)."""
    series, strays = find_series(root)
    per_folder: dict[Path, int] = {}
    for s in series:
        per_folder[s.folder] = per_folder.get(s.folder, 0) + 1
    cases = []
    for s in series:
        name = _name(root, s.folder)
        if per_folder[s.folder] > 1:
            name += f"_series{s.number}" if s.number else f"_{s.uid[-8:]}"
        cases.append(Case(name, s.folder, s))
    dicom_folders = set(per_folder)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if Path(dirpath) in dicom_folders:
            continue
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if full_suffix(p) in SUPPORTED_SUFFIXES and full_suffix(p) != ".dcm":
                cases.append(Case(_name(root, p), p))
    problems = [Outcome(str(p.relative_to(root)), "failed", detail=f"{p}: not a DICOM file") for p in strays]
    return cases, problems


def _skip_reason(case: Case, predictor: Predictor) -> str | None:
    """Why the model should not run on this series (modality or dimensionality), else None."""
    s = case.series
    if s is None:
        return None
    if s.modality.upper() in NON_IMAGE_MODALITIES:
        return f"a {s.modality} object, not an image series"
    want = str(predictor.up.modality).upper()
    if want in ("CT", "MR") and s.modality.upper() != want:
        return f"modality {s.modality or '?'}, the model is for {want}"
    dims = 3 if check_series(s) > 1 else 2
    if dims != predictor.spatial_dims:
        return f"a {dims}D series, the model is {predictor.spatial_dims}D"
    return None


def predict_folder(
    model: str | Path, root: str | Path, out_dir: str | Path, *, fmt: str = "nifti", progress: bool = True, **kw: Any
) -> list[Outcome]:
    """Predict every case under `root` into `out_dir`; one Outcome per case or stray file."""
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise PredictError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    root, out_dir = Path(root), Path(out_dir)
    predictor = Predictor(model, **kw)
    cases, outcomes = collect_cases(root)
    if not cases:
        raise PredictError(f"{root}: no images or DICOM series found under this folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in tqdm(cases, desc="predict", unit="case", disable=not progress):
        t0 = time.perf_counter()
        predictor.last_findings = []
        try:
            reason = _skip_reason(case, predictor)
            if reason is not None:
                outcomes.append(Outcome(case.name, "skipped", detail=reason))
                continue
            suffix = FORMATS[fmt] if case.series is not None else ".nii.gz"
            out = predictor.predict(
                case.path, out_dir / f"{case.name}{suffix}", series_uid=case.series.uid if case.series else None
            )
            note = f"{out} (warning: {'; '.join(predictor.last_findings)})" if predictor.last_findings else str(out)
            outcomes.append(Outcome(case.name, "ok", note, seconds=time.perf_counter() - t0))
        except PipelineError as exc:
            outcomes.append(Outcome(case.name, "failed", detail=str(exc), seconds=time.perf_counter() - t0))
        except Exception as exc:  # one unreadable case must not end the batch; report it by name
            detail = f"{case.path}: {type(exc).__name__}: {exc}"
            outcomes.append(Outcome(case.name, "failed", detail=detail, seconds=time.perf_counter() - t0))
    return outcomes


def summary_table(outcomes: list[Outcome]) -> str:
    """A plain-text table: case, status, seconds, output or reason; then the counts."""
    rows = [(o.case, o.status, f"{o.seconds:.1f}", o.output or o.detail) for o in outcomes]
    widths = [max(len(r[i]) for r in [("case", "status", "s", "output / reason"), *rows]) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("case", "status", "s"), widths)) + "  output / reason"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    lines.append(f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed")
    return "\n".join(lines)
