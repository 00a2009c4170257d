"""Writing an import: cases into a staging folder beside `out`, checked by preprocess's validator, then moved."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.canonical import DATASET_JSON, FILE_ENDING, build_dataset_json, dumps, image_relpath, label_relpath
from pipeline.data.errors import DatasetError
from pipeline.data.importer.labels import LabelSpec, map_label, parse_labels
from pipeline.data.importer.layouts import LAYOUTS, SourceCase, _read, _read_source, detect_layout


def _split_4d(path: Path, n_channels: int, case_id: str, out: Path) -> None:
    """An MSD multi-modal 4D NIfTI (x, y, z, channel) -> one 3D file per channel, same affine."""
    import nibabel as nib

    from pipeline.io import ImageReadError

    try:
        img = nib.load(path)
        if img.ndim != 4 or img.shape[3] != n_channels:
            raise DatasetError(
                [
                    f"{path}: shape {img.shape}, but dataset.json lists {n_channels} modalities; "
                    f"expected a 4D image (x, y, z, {n_channels})"
                ]
            )
        for c in range(n_channels):
            data = np.asanyarray(img.dataobj[..., c])
            nib.save(nib.Nifti1Image(data, img.affine, img.header), out / image_relpath(case_id, c))
    except (OSError, EOFError, ValueError, ImageReadError, nib.filebasedimages.ImageFileError) as exc:
        raise DatasetError([f"{path}: not a readable 4D NIfTI file ({exc})"]) from None


def _channels(image: Any) -> list[Any]:
    """A multi-component image (RGB PNG, vector NRRD) -> one single-channel image per component."""
    return [image] if image.shape[0] == 1 else [image[c : c + 1] for c in range(image.shape[0])]


def _write_case(case: SourceCase, out: Path, spec: LabelSpec | None, n_classes: int) -> None:
    from pipeline.io import write_image

    if case.channels_in_4d:
        _split_4d(case.images[0], case.channels_in_4d, case.id, out)
    if case.copy_as_is and spec is None:
        for c, path in enumerate(case.images):
            shutil.copyfile(path, out / image_relpath(case.id, c))
        shutil.copyfile(case.label, out / label_relpath(case.id))
        return
    if not case.channels_in_4d:
        channels = [ch for p in case.images for ch in _channels(_read(p))]
        for c, image in enumerate(channels):
            write_image(image, image, out / image_relpath(case.id, c))
    label = _read(case.label)
    where = str(case.label) if not hasattr(case.label, "affine") else f"{case.id} (label page)"
    if label.shape[0] != 1:
        raise DatasetError([f"{where}: mask has {label.shape[0]} channels (colour?); a mask holds one value per pixel"])
    mapped = map_label(label, spec, where, n_classes)
    write_image(mapped, label, out / label_relpath(case.id))


def _describe(case: SourceCase) -> str:
    """How errors name a case: its first image file, or the case id for an in-memory page."""
    first = case.images[0]
    return str(first) if isinstance(first, Path) else f"{case.id} (image page)"


def _channel_names(cases: list[SourceCase], meta: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """(spatial dims, channel index -> name) from the first case and the source's dataset.json."""
    if cases[0].channels_in_4d:
        dims, n_channels = 3, cases[0].channels_in_4d
    else:
        first = _read(cases[0].images[0])
        dims, n_channels = first.ndim - 1, int(first.shape[0]) * len(cases[0].images)
    if meta:
        return dims, {
            str(k): str(v) for k, v in (meta.get("channel_names") or meta.get("modality") or {"0": "image"}).items()
        }
    return dims, {str(c): f"channel {c}" for c in range(n_channels)}


def _stage_cases(
    tmp: Path, cases: list[SourceCase], spec: LabelSpec | None, n_classes: int, channels: dict[str, str], layout: str
) -> None:
    """Write every case into the staging dir, checking each has the dataset's channel count."""
    from pipeline.progress import progress

    (tmp / "imagesTr").mkdir()
    (tmp / "labelsTr").mkdir()
    for case in progress(cases, desc=f"import ({layout})", unit="case"):
        _write_case(case, tmp, spec, n_classes)
        written = len(list((tmp / "imagesTr").glob(f"{case.id}_[0-9][0-9][0-9][0-9]{FILE_ENDING}")))
        if written != len(channels):
            raise DatasetError(
                [
                    f"{_describe(case)}: {written} channel(s), but the dataset has {len(channels)} "
                    f"({', '.join(channels.values())})"
                ]
            )


def import_dataset(
    src: str | Path, out: str | Path = "data", layout: str | None = None, labels: str | None = None
) -> dict[str, Any]:
    """Convert `src` into the canonical layout at `out`, which is replaced only by a dataset that validates.

    Args:
        src: the source dataset (a folder in one of `LAYOUTS`).
        out: the canonical dataset folder to write; left as it was when the import fails.
        layout: `msd`, `pairs` or `stack`; None detects it (`detect_layout`).
        labels: `--labels NAME=RAW,...` in class-index order (`parse_labels`); required for
            `pairs` / `stack` masks unless a dataset.json beside `images/` declares the labels.

    Returns:
        The dataset.json written to `out`.

    Raises:
        DatasetError: `src` is missing, the layout or labels are unusable, a mask value is not
            mapped, or the staged dataset fails preprocess's checks (naming the source files).
    """
    from pipeline.io import atomic_dir, write_text_atomic

    src, out = Path(src), Path(out)
    if not src.exists():
        raise DatasetError([f"{src}: no such file or folder"])
    layout = layout or detect_layout(src)
    if layout not in LAYOUTS:
        raise DatasetError([f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}"])
    spec = parse_labels(labels) if labels else None
    cases, names, meta = _read_source(src, layout, spec)
    dims, channels = _channel_names(cases, meta)
    with atomic_dir(out) as tmp:
        _stage_cases(tmp, cases, spec, len(names), channels, layout)
        dataset = build_dataset_json(
            name=str(meta.get("name") or src.name),
            description=str(meta.get("description") or f"imported from {src}"),
            spatial_dims=dims,
            modality=_modality(meta),
            channel_names=channels,
            labels=names,
            label_mapping=spec.mapping_record if spec else None,
            source=f"unet-pipeline data import {src} --layout {layout}" + (f" --labels {labels}" if labels else ""),
            case_ids=[c.id for c in cases],
        )
        write_text_atomic(tmp / DATASET_JSON, dumps(dataset))
        # the checks preprocess runs, on what was staged: a refused dataset never replaces `out`
        _validate_staged(tmp, cases, src, n_channels=len(channels), n_labels=len(names))
    return dataset


def _source_of(case: SourceCase, staged: Path) -> dict[str, str]:
    """Staged file -> the source it came from, so that errors name the user's own files."""
    out: dict[str, str] = {}
    for c in range(max(len(case.images), case.channels_in_4d)):
        src = case.images[0] if case.channels_in_4d else case.images[min(c, len(case.images) - 1)]
        name = str(src) if isinstance(src, Path) else f"{case.id} (image page)"
        out[str(staged / image_relpath(case.id, c))] = name
    out[str(staged / label_relpath(case.id))] = (
        str(case.label) if isinstance(case.label, Path) else f"{case.id} (label page)"
    )
    return out


def _validate_staged(staged: Path, cases: list[SourceCase], src: Path, n_channels: int, n_labels: int) -> None:
    """Run preprocess's validator on the staged dataset; its problems name the source files."""
    import os

    from pipeline.data.canonical import load_dataset
    from pipeline.data.validation import validate_cases

    info = load_dataset(staged)
    try:
        validate_cases(
            info.cases,
            where=src,
            spatial_dims=None,
            label_values=range(n_labels),
            in_channels=n_channels,
            num_workers=min(2, os.cpu_count() or 1),
        )
    except DatasetError as exc:
        names: dict[str, str] = {}
        for case in cases:
            names.update(_source_of(case, staged))
        problems = []
        for problem in exc.problems:
            for staged_name, source_name in sorted(names.items(), key=lambda kv: -len(kv[0])):
                problem = problem.replace(staged_name, source_name)
            problems.append(problem.replace(str(staged), str(src)))
        raise DatasetError(
            problems, header=f"{src}: not imported, nothing written ({len(problems)} problem(s))"
        ) from None


def _modality(meta: dict[str, Any]) -> str:
    """ct / mr from the MSD modality or nnU-Net channel names; anything else is 'other'."""
    text = " ".join(str(v) for v in (meta.get("channel_names") or meta.get("modality") or {}).values()).lower()
    if "ct" in text.split():
        return "ct"
    if "mr" in text or "t1" in text or "t2" in text or "flair" in text:
        return "mr"
    return "other"
