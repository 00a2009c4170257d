"""`unet-pipeline data import SRC`: a real dataset -> the canonical `data/` layout, then `dvc add`.

Three source layouts (docs/ARCHITECTURE.md for the target):
- `msd`: Medical Segmentation Decathlon / nnU-Net (`dataset.json`, `imagesTr/`, `labelsTr/`).
  Both dataset.json styles: MSD (`labels` {"0": "background"}, `modality`, a `training` list,
  multi-modal cases as one 4D file, split here into `_0000`, `_0001`, ... channel files) and
  nnU-Net v2 (`labels` {"background": 0}, `channel_names`, files `<id>_XXXX<file_ending>`).
  Labels come from `dataset.json`; label values are class indices (checked by preprocess).
- `pairs`: `images/` + `labels/` with matching file names (PNG, TIFF, NIfTI, NRRD, MHA, ...).
- `stack`: a multi-page TIFF of images and one of labels (the ISBI 2012 form); each page a 2D case.

Label values of `pairs` / `stack` masks are never guessed, not even when they already look like
class indices 0..K-1: `--labels NAME=RAW,...` (class-index order) maps them, and masks already
holding class indices say so with an identity mapping (`--labels background=0,nucleus=1`) or
with a `dataset.json` beside `images/` whose `labels` declare the indices. Without either, the
import fails listing the raw values found. An `msd` import may pass `--labels` too (names and
a raw->class mapping instead of the dataset.json's).

Every case is staged beside `out` and checked by the validator preprocess uses (readable, shapes
and geometry of label vs image, dimensionality, channel count, declared label values, NaN/Inf);
only a dataset that passes replaces `out`, atomically, and only then does `dvc add` run.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.canonical import DATASET_JSON, FILE_ENDING, build_dataset_json, dumps, image_relpath, label_relpath
from pipeline.data.errors import DatasetError

LAYOUTS = ("msd", "pairs", "stack")
_TIFF = (".tif", ".tiff")


@dataclass(frozen=True)
class LabelSpec:
    """Class names in index order and the raw mask value each comes from."""

    names: list[str]
    raw_to_class: dict[int, int]

    @property
    def mapping_record(self) -> dict[str, int]:
        """What dataset.json records as `label_mapping` (JSON keys are strings)."""
        return {str(raw): cls for raw, cls in sorted(self.raw_to_class.items())}


def parse_labels(text: str) -> LabelSpec:
    """`cell=255,membrane=0` -> names [cell, membrane], raw 255 -> 0, raw 0 -> 1."""
    names: list[str] = []
    raw_to_class: dict[int, int] = {}
    for i, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
        name, sep, raw = item.partition("=")
        if not sep or not name.strip() or not re.fullmatch(r"-?\d+", raw.strip()):
            raise DatasetError([f"--labels: {item!r} is not NAME=RAW_VALUE (e.g. cell=255,membrane=0)"])
        value = int(raw)
        if name.strip() in names:
            raise DatasetError([f"--labels: class name {name.strip()!r} given twice"])
        if value in raw_to_class:
            raise DatasetError([f"--labels: raw value {value} given for two classes"])
        names.append(name.strip())
        raw_to_class[value] = i
    if len(names) < 2:
        raise DatasetError([f"--labels {text!r}: needs at least two classes (background and one more)"])
    return LabelSpec(names, raw_to_class)


def detect_layout(src: Path) -> str:
    """The layout of `src`, or an error saying what was looked for."""
    if src.is_dir() and (src / DATASET_JSON).is_file() and (src / "imagesTr").is_dir():
        return "msd"
    if src.is_dir() and (src / "images").is_dir() and (src / "labels").is_dir():
        return "pairs"
    if _stack_files(src, strict=False) is not None:
        return "stack"
    raise DatasetError(
        [
            f"{src}: cannot tell the layout; expected dataset.json + imagesTr/ + labelsTr/ (msd), "
            "images/ + labels/ (pairs) or two multi-page TIFFs of images and labels (stack); pass --layout"
        ]
    )


# ------------------------------------------------------------------------------------ sources


@dataclass
class SourceCase:
    """One case to import: per-channel image sources and its label source."""

    id: str
    images: list[Any]  # paths, or in-memory MetaTensors for TIFF pages
    label: Any
    copy_as_is: bool = False  # NIfTI files whose values need no mapping: copy the bytes
    channels_in_4d: int = 0  # MSD multi-modal case: one 4D NIfTI holding this many channels


def _strip_ending(name: str) -> str:
    for ending in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tiff", ".tif"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


def _msd_labels(meta: dict[str, Any], path: Path) -> list[str]:
    """MSD (`{"0": "background"}`) or nnU-Net v2 (`{"background": 0}`) labels -> names by index."""
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DatasetError([f"{path}: no 'labels' mapping"])
    if all(re.fullmatch(r"\d+", str(k)) for k in labels):
        pairs = {int(k): str(v) for k, v in labels.items()}
    elif all(isinstance(v, int) for v in labels.values()):
        pairs = {int(v): str(k) for k, v in labels.items()}
    else:
        raise DatasetError(
            [f"{path}: 'labels' must map indices to names (MSD) or names to integer indices (nnU-Net v2), got {labels}"]
        )
    if sorted(pairs) != list(range(len(pairs))):
        raise DatasetError([f"{path}: label indices {sorted(pairs)} are not contiguous 0..{len(pairs) - 1}"])
    return [pairs[i] for i in range(len(pairs))]


def _msd_cases(src: Path, meta: dict[str, Any]) -> list[SourceCase]:
    channels = meta.get("channel_names") or meta.get("modality") or {"0": "image"}
    n_ch = len(channels)
    ending = meta.get("file_ending", FILE_ENDING)
    cases = []
    if meta.get("training"):  # MSD: explicit list, one (possibly 4D) file per case
        for entry in meta["training"]:
            image = src / str(entry["image"]).removeprefix("./")
            label = src / str(entry["label"]).removeprefix("./")
            cid = _strip_ending(image.name)
            # nnU-Net v1 style lists `imagesTr/x.nii.gz` while the files are x_0000.nii.gz, ...
            if not image.exists() and (image.parent / f"{cid}_0000{ending}").exists():
                cases.append(SourceCase(cid, [image.parent / f"{cid}_{c:04d}{ending}" for c in range(n_ch)], label))
            else:  # MSD proper: one file, 4D (x, y, z, channel) when the set is multi-modal
                cases.append(SourceCase(cid, [image], label, channels_in_4d=n_ch if n_ch > 1 else 0))
    else:  # nnU-Net v2: files named <id>_<XXXX><ending>
        ids = sorted(
            {
                re.sub(r"_\d{4}$", "", _strip_ending(p.name))
                for p in (src / "imagesTr").glob(f"*{ending}")
                if not p.name.startswith(".")
            }
        )
        for cid in ids:
            images = [src / "imagesTr" / f"{cid}_{c:04d}{ending}" for c in range(n_ch)]
            cases.append(SourceCase(cid, images, src / "labelsTr" / f"{cid}{ending}"))
    for case in cases:
        case.copy_as_is = not case.channels_in_4d and all(
            str(p).endswith(FILE_ENDING) for p in [*case.images, case.label]
        )
    return cases


def _pairs_cases(src: Path) -> list[SourceCase]:
    def index(folder: Path) -> dict[str, Path]:
        return {
            _strip_ending(p.name): p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
        }

    images, labels = index(src / "images"), index(src / "labels")
    problems = [
        f"{src / 'images'}: {images[k].name} has no label in {src / 'labels'}"
        for k in sorted(set(images) - set(labels))
    ]
    problems += [
        f"{src / 'labels'}: {labels[k].name} has no image in {src / 'images'}"
        for k in sorted(set(labels) - set(images))
    ]
    if problems:
        raise DatasetError(problems)
    return [SourceCase(k, [images[k]], labels[k]) for k in sorted(images)]


def _stack_files(src: Path, strict: bool = True) -> tuple[Path, Path] | None:
    """(image stack, label stack): the TIFFs in `src` whose names say image/volume and label."""
    tiffs = sorted(p for p in src.iterdir() if p.suffix.lower() in _TIFF) if src.is_dir() else []
    labels = [p for p in tiffs if "label" in p.name.lower()]
    images = [p for p in tiffs if p not in labels]
    if len(labels) == 1 and len(images) == 1:
        return images[0], labels[0]
    if strict:
        raise DatasetError(
            [
                f"{src}: a stack dataset holds one multi-page TIFF of images and one whose name contains 'label'; "
                f"found {[p.name for p in tiffs]}"
            ]
        )
    return None


def _stack_cases(src: Path) -> list[SourceCase]:
    from pipeline.io import read_tiff_stack

    image_path, label_path = _stack_files(src)
    images, labels = read_tiff_stack(image_path), read_tiff_stack(label_path)
    if len(images) != len(labels):
        raise DatasetError([f"{label_path}: {len(labels)} pages, but {image_path} has {len(images)}"])
    width = max(2, len(str(len(images) - 1)))
    return [SourceCase(f"slice_{i:0{width}d}", [img], lab) for i, (img, lab) in enumerate(zip(images, labels))]


# ------------------------------------------------------------------------------------ import


def _read(source: Any) -> Any:
    from pipeline.io import read_image

    return source if hasattr(source, "affine") else read_image(source)


def _map_label(label: Any, spec: LabelSpec | None, where: str, n_classes: int) -> np.ndarray:
    """Raw mask values -> class indices (uint8); unmapped values are an error listing them."""
    arr = np.asarray(label)
    values = np.unique(arr)
    if spec is None:
        outside = [v for v in values.tolist() if v not in range(n_classes)]
        if outside:
            raise DatasetError([f"{where}: label values {outside} are not class indices 0..{n_classes - 1}"])
        return arr.astype(np.uint8)
    unmapped = sorted(set(values.tolist()) - set(spec.raw_to_class))
    if unmapped:
        raise DatasetError(
            [
                f"{where}: mask values {unmapped} are not mapped by --labels (found values {values.tolist()}; "
                f"mapped: {spec.mapping_record})"
            ]
        )
    lut = np.zeros(int(values.max()) - int(values.min()) + 1, np.uint8)
    for raw, cls in spec.raw_to_class.items():
        if values.min() <= raw <= values.max():
            lut[raw - int(values.min())] = cls
    return lut[arr.astype(np.int64) - int(values.min())]


def _found_values(cases: list[SourceCase]) -> list[int]:
    found: set[int] = set()
    for case in cases:
        found.update(np.unique(np.asarray(_read(case.label))).tolist())
    return sorted(found)


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
    mapped = _map_label(label, spec, where, n_classes)
    write_image(mapped, label, out / label_relpath(case.id))


def _describe(case: SourceCase) -> str:
    """How errors name a case: its first image file, or the case id for an in-memory page."""
    first = case.images[0]
    return str(first) if isinstance(first, Path) else f"{case.id} (image page)"


def _read_source(src: Path, layout: str, spec: LabelSpec | None) -> tuple[list[SourceCase], list[str], dict[str, Any]]:
    """(cases, class names in index order, the source's dataset.json or {}) of a source dataset."""
    meta: dict[str, Any] = {}
    if layout == "msd":
        meta = json.loads((src / DATASET_JSON).read_text(encoding="utf-8"))
        cases = _msd_cases(src, meta)
        names = spec.names if spec else _msd_labels(meta, src / DATASET_JSON)
    else:
        cases = _pairs_cases(src) if layout == "pairs" else _stack_cases(src)
        if spec is not None:
            names = spec.names
        elif (src / DATASET_JSON).is_file():
            names = _msd_labels(json.loads((src / DATASET_JSON).read_text(encoding="utf-8")), src / DATASET_JSON)
        else:
            raise DatasetError(
                [
                    f"{src}: the masks hold raw values {_found_values(cases)} and nothing maps them to classes; pass "
                    "--labels NAME=RAW,... in class-index order (e.g. --labels background=0,object=255)"
                ]
            )
    if not cases:
        raise DatasetError([f"{src}: no cases found ({layout} layout)"])
    missing = [str(p) for c in cases for p in [*c.images, c.label] if isinstance(p, Path) and not p.exists()]
    if missing:
        raise DatasetError([f"{p}: listed but missing" for p in missing])
    return cases, names, meta


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
    from tqdm import tqdm

    (tmp / "imagesTr").mkdir()
    (tmp / "labelsTr").mkdir()
    for case in tqdm(cases, desc=f"import ({layout})", unit="case"):
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
    """Convert `src` into the canonical layout at `out`; returns the written dataset.json."""
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
