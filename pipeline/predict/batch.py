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
    qc: str = ""  # the QC score and its verdict (REVIEW, ok, or - without an exported threshold)
    qc_note: str = ""  # the export's weak-flag note (`Verdict.weak_note`), repeated under the table


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


def parse_shard(text: str | None) -> tuple[int, int]:
    """`--shard I/N` -> (I, N): this process takes every N-th case starting at I (0-based), as
    nnU-Net's `-part_id`/`-num_parts` do, so N machines together cover every case exactly once.

    Raises:
        PredictError: not `I/N` with 0 <= I < N.
    """
    if text is None:
        return 0, 1
    index, sep, count = text.partition("/")
    if not (sep and index.strip().isdigit() and count.strip().isdigit()) or not 0 <= int(index) < int(count):
        raise PredictError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


def shard_cases(cases: list[Case], index: int, count: int) -> list[Case]:
    """Every `count`-th case of the (sorted) case list, starting at `index`."""
    return cases[index::count]


def _predict_case(predictor: Predictor, case: Case, out_dir: Path, fmt: str) -> Outcome:
    """One case through the predictor; any failure becomes an Outcome naming the case."""
    t0 = time.perf_counter()
    predictor.last_findings = []
    try:
        reason = _skip_reason(case, predictor)
        if reason is not None:
            return Outcome(case.name, "skipped", detail=reason)
        suffix = FORMATS[fmt] if case.series is not None else ".nii.gz"
        out = predictor.predict(
            case.path, out_dir / f"{case.name}{suffix}", series_uid=case.series.uid if case.series else None
        )
        note = f"{out} (warning: {'; '.join(predictor.last_findings)})" if predictor.last_findings else str(out)
        verdict = predictor.last_verdict
        qc = f"{verdict.score:.4f} {verdict.flag}" if verdict is not None else ""
        qc_note = verdict.weak_note if verdict is not None else ""
        return Outcome(case.name, "ok", note, seconds=time.perf_counter() - t0, qc=qc, qc_note=qc_note)
    except PipelineError as exc:
        return Outcome(case.name, "failed", detail=str(exc), seconds=time.perf_counter() - t0)
    except Exception as exc:  # one unreadable case must not end the batch; report it by name
        detail = f"{case.path}: {type(exc).__name__}: {exc}"
        return Outcome(case.name, "failed", detail=detail, seconds=time.perf_counter() - t0)


_WORKER: dict[str, Any] = {}  # a worker process's predictor, loaded once by `_init_worker`


def _init_worker(model: str, kw: dict[str, Any], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["predictor"] = Predictor(model, **kw)


def _worker_case(case: Case, out_dir: Path, fmt: str) -> Outcome:
    return _predict_case(_WORKER["predictor"], case, out_dir, fmt)


def _run_in_workers(
    model: str | Path, cases: list[Case], out_dir: Path, fmt: str, workers: int, progress: bool, kw: dict[str, Any]
) -> list[Outcome]:
    """The cases over `workers` processes, each loading the model once; outcomes in case order."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.progress import progress as bar

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # no forked torch / ONNX Runtime thread pools
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(str(model), kw, threads)
    ) as ex:
        futures = [ex.submit(_worker_case, case, out_dir, fmt) for case in cases]
        return [f.result() for f in bar(futures, show=progress, desc="predict", unit="case")]


def predict_folder(
    model: str | Path,
    root: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "nifti",
    progress: bool = True,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    **kw: Any,
) -> list[Outcome]:
    """Predict every case under `root` (or this shard's share of them) into `out_dir`.

    Args:
        model: an exported folder or model file.
        root: the folder of images and DICOM series.
        out_dir: where the masks go, one per case.
        fmt: `nifti` or `dicom-seg` (for DICOM series).
        progress: show a progress bar.
        workers: processes, each loading the model once (1: this process).
        shard: (I, N): only every N-th case from the I-th (`parse_shard`); stray files are reported by shard 0.
        kw: `Predictor` options (tta, device, strict).

    Returns:
        One Outcome per case of this shard, plus the stray files.

    Raises:
        PredictError: an unknown format, a bad shard or worker count, or nothing to predict under `root`.
    """
    from pipeline.progress import progress as bar

    if fmt not in FORMATS:
        raise PredictError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if workers < 1:
        raise PredictError(f"--workers {workers}: must be at least 1")
    root, out_dir = Path(root), Path(out_dir)
    predictor = Predictor(model, **kw)  # loaded here first: a bad model fails before any worker starts
    cases, outcomes = collect_cases(root)
    if not cases:
        raise PredictError(f"{root}: no images or DICOM series found under this folder")
    cases, outcomes = shard_cases(cases, *shard), outcomes if shard[0] == 0 else []
    out_dir.mkdir(parents=True, exist_ok=True)
    if workers == 1:
        outcomes += [
            _predict_case(predictor, case, out_dir, fmt)
            for case in bar(cases, show=progress, desc="predict", unit="case")
        ]
    else:
        outcomes += _run_in_workers(model, cases, out_dir, fmt, workers, progress, kw)
    return outcomes


def summary_table(outcomes: list[Outcome]) -> str:
    """A plain-text table: case, status, seconds, QC score and verdict, output or reason; then the
    counts (and how many cases to review, with the export's note when its flag is weak)."""
    head = ("case", "status", "s", "qc")
    rows = [(o.case, o.status, f"{o.seconds:.1f}", o.qc, o.output or o.detail) for o in outcomes]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  output / reason"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    review = sum(o.qc.endswith("REVIEW") for o in outcomes)
    notes = sorted({o.qc_note for o in outcomes if o.qc_note})
    tail = f" ({'; '.join(notes)})" if notes else ""
    lines.append(f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed; {review} to review{tail}")
    return "\n".join(lines)
