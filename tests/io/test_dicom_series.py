"""DICOM series reading (pipeline.io.dicom_series): a generated series and the real ones in ../shared/
keep their geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.images import expected_ras_affine

from pipeline.io import read_image


def _write_dicom_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """A CT-like series, one file per slice, as in SimpleITK's DicomSeriesFromArray example.

    ITK's GDCM writer leaves the process in the C locale (ASCII `open()`, which then breaks e.g.
    torch.compile's template reading in later tests); the locale is put back afterwards."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(folder, volume, spacing)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(folder: Path, volume: np.ndarray, spacing: tuple[float, float, float]) -> None:
    folder.mkdir()
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_tags = [
        ("0008|0060", "CT"),
        ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.424242"),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.434343"),
        ("0020|0037", "1\\0\\0\\0\\1\\0"),
        ("0008|103e", "unet-pipeline test series"),
    ]
    for i in range(image.GetDepth()):
        sl = image[:, :, i]
        for tag, value in series_tags:
            sl.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, i))
        sl.SetMetaData("0020|0032", "\\".join(map(str, position)))
        sl.SetMetaData("0020|0013", str(i))
        sl.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.5{i:04d}")
        writer.SetFileName(str(folder / f"slice{i:03d}.dcm"))
        writer.Execute(sl)


def test_generated_dicom_series(tmp_path: Path) -> None:
    volume = (np.arange(6 * 10 * 12).reshape(6, 10, 12) % 1000).astype(np.int16)
    _write_dicom_series(tmp_path / "series", volume, (0.8, 0.6, 2.0))
    got = read_image(tmp_path / "series")
    assert tuple(got.shape) == (1, 12, 10, 6)
    np.testing.assert_allclose(np.linalg.norm(got.affine.numpy()[:3, :3], axis=0), [0.8, 0.6, 2.0], atol=1e-4)
    np.testing.assert_array_equal(got.numpy()[0], volume.transpose(2, 1, 0))


def test_real_dicom_series_keep_their_geometry(shared_data: Path) -> None:
    root = shared_data / "hippocampus-mri" / "dicom"
    series = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not series:
        pytest.skip(f"no DICOM series under {root}")
    assert len(series) == 3
    for folder in series:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        ref = reader.Execute()
        got = read_image(folder)
        assert tuple(got.shape[1:]) == ref.GetSize(), folder
        np.testing.assert_allclose(got.affine.numpy(), expected_ras_affine(ref), atol=1e-4, err_msg=str(folder))
