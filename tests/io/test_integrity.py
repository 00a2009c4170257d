"""Completeness checks (pipeline.io.integrity): truncated and garbage files fail naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from helpers.images import sitk_volume, write_sitk

from pipeline.io import ImageReadError, read_image


def test_truncated_gzip_nifti_names_the_file(tmp_path: Path) -> None:
    path = write_sitk(tmp_path / "ok.nii.gz", sitk_volume())
    blob = path.read_bytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageReadError, match=r"bad\.nii\.gz.*(truncated|corrupt)"):
        read_image(bad)


def test_truncated_uncompressed_nifti_names_the_file(tmp_path: Path) -> None:
    path = write_sitk(tmp_path / "ok.nii", sitk_volume())
    bad = tmp_path / "short.nii"
    bad.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ImageReadError, match=r"short\.nii.*truncated"):
        read_image(bad)


def test_garbage_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(gzip.compress(b"not an image at all"))
    with pytest.raises(ImageReadError, match="garbage.nii.gz"):
        read_image(bad)
