"""The three source layouts an import reads (`msd`, `pairs`, `stack`): detecting one, finding its cases."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.canonical import DATASET_JSON, FILE_ENDING
from pipeline.data.errors import DatasetError
from pipeline.data.importer.labels import LabelSpec, _found_values, _msd_labels
from pipeline.io.suffixes import strip_image_suffix

LAYOUTS = ("msd", "pairs", "stack")
_TIFF = (".tif", ".tiff")


def detect_layout(src: Path) -> str:
    """The layout of `src`, so that `data import` needs no `--layout` for a recognisable source.

    Args:
        src: the source dataset: a folder.

    Returns:
        One of `LAYOUTS`: `msd` (dataset.json + imagesTr/), `pairs` (images/ + labels/) or `stack`
        (two multi-page TIFFs, one named for labels).

    Raises:
        DatasetError: none of the three matches; the message says what was looked for.
    """
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


@dataclass
class SourceCase:
    """One case to import: per-channel image sources and its label source."""

    id: str
    images: list[Any]  # paths, or in-memory MetaTensors for TIFF pages
    label: Any
    copy_as_is: bool = False  # NIfTI files whose values need no mapping: copy the bytes
    channels_in_4d: int = 0  # MSD multi-modal case: one 4D NIfTI holding this many channels


def _case_id(name: str) -> str:
    """A file name without its image suffix (any case); a name without one loses its last suffix."""
    stripped = strip_image_suffix(name)
    return stripped if stripped != name else Path(name).stem


def _msd_cases(src: Path, meta: dict[str, Any]) -> list[SourceCase]:
    channels = meta.get("channel_names") or meta.get("modality") or {"0": "image"}
    n_ch = len(channels)
    ending = meta.get("file_ending", FILE_ENDING)
    cases = []
    if meta.get("training"):  # MSD: explicit list, one (possibly 4D) file per case
        for entry in meta["training"]:
            image = src / str(entry["image"]).removeprefix("./")
            label = src / str(entry["label"]).removeprefix("./")
            cid = _case_id(image.name)
            # nnU-Net v1 style lists `imagesTr/x.nii.gz` while the files are x_0000.nii.gz, ...
            if not image.exists() and (image.parent / f"{cid}_0000{ending}").exists():
                cases.append(SourceCase(cid, [image.parent / f"{cid}_{c:04d}{ending}" for c in range(n_ch)], label))
            else:  # MSD proper: one file, 4D (x, y, z, channel) when the set is multi-modal
                cases.append(SourceCase(cid, [image], label, channels_in_4d=n_ch if n_ch > 1 else 0))
    else:  # nnU-Net v2: files named <id>_<XXXX><ending>
        ids = sorted(
            {
                re.sub(r"_\d{4}$", "", _case_id(p.name))
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
        return {_case_id(p.name): p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}

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


def _read(source: Any) -> Any:
    """An image or mask source (a path, or an in-memory page already read) -> a MetaTensor."""
    from pipeline.io import read_image

    return source if hasattr(source, "affine") else read_image(source)


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
            found = _found_values(_read(case.label) for case in cases)
            raise DatasetError(
                [
                    f"{src}: the masks hold raw values {found} and nothing maps them to classes; pass "
                    "--labels NAME=RAW,... in class-index order (e.g. --labels background=0,object=255)"
                ]
            )
    if not cases:
        raise DatasetError([f"{src}: no cases found ({layout} layout)"])
    missing = [str(p) for c in cases for p in [*c.images, c.label] if isinstance(p, Path) and not p.exists()]
    if missing:
        raise DatasetError([f"{p}: listed but missing" for p in missing])
    return cases, names, meta
