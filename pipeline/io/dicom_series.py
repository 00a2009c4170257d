"""Find DICOM series under a folder by Series Instance UID, and check each one is a usable volume.

A study export mixes series (several per folder, or one per folder) and stray files. Series are
told apart by their UID (SimpleITK/GDCM per folder), never by folder name. A series is refused,
by name, when its slices disagree on orientation or leave a gap along the slice normal: read as
one volume, either would put voxels in the wrong place without any error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError

NON_IMAGE_MODALITIES = {"SEG", "SR", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "KO", "REG", "DOC"}
IOP_TOL = 1e-4
GAP_TOL = 0.05  # relative deviation of a slice step from the median step


@dataclass(frozen=True)
class Series:
    folder: Path
    uid: str
    files: tuple[str, ...]
    modality: str
    description: str
    number: str

    def label(self) -> str:
        return f"{self.folder} (series {self.number or '?'} {self.description!r}, UID {self.uid})"


def is_dicom_file(path: Path) -> bool:
    """The DICOM Part 10 preamble ('DICM' at byte 128)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def find_series(root: Path) -> tuple[list[Series], list[Path]]:
    """(every DICOM series under `root`, the non-DICOM files found in folders that hold DICOM)."""
    import pydicom
    import SimpleITK as sitk

    series, strays = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder = Path(dirpath)
        files = sorted(folder / f for f in filenames)
        dicom = [f for f in files if is_dicom_file(f)]
        if not dicom:
            continue
        strays += [f for f in files if f not in set(dicom)]
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
            names = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            head = pydicom.dcmread(names[0], stop_before_pixels=True)
            series.append(
                Series(
                    folder,
                    uid,
                    names,
                    str(getattr(head, "Modality", "")),
                    str(getattr(head, "SeriesDescription", "")),
                    str(getattr(head, "SeriesNumber", "") or ""),
                )
            )
    return series, strays


def check_series(s: Series) -> int:
    """Refuse mixed orientations and gaps; returns the number of slices (1 = a 2D image)."""
    import pydicom

    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in s.files]
    try:
        iops = np.array([[float(v) for v in h.ImageOrientationPatient] for h in heads])
        ipps = np.array([[float(v) for v in h.ImagePositionPatient] for h in heads])
    except AttributeError as exc:
        raise InputError(f"{s.label()}: an instance lacks its position or orientation ({exc})") from None
    if np.abs(iops - iops[0]).max() > IOP_TOL:
        raise InputError(f"{s.label()}: slices have different orientations (ImageOrientationPatient); not one volume")
    if len(heads) < 2:
        return len(heads)
    normal = np.cross(iops[0, :3], iops[0, 3:])
    pos = np.sort(ipps @ normal)
    steps = np.diff(pos)
    median = float(np.median(steps))
    if median <= 0 or (np.abs(steps - median) > GAP_TOL * median).any():
        worst = int(np.argmax(np.abs(steps - median)))
        raise InputError(
            f"{s.label()}: slice positions are not evenly spaced (step {steps[worst]:.3g} mm between slices "
            f"{worst + 1} and {worst + 2}, median {median:.3g} mm): missing or duplicate slices"
        )
    return len(heads)
