"""pipeline.io round trips: files written by SimpleITK / nibabel / tifffile with anisotropic spacing
and non-identity directions come back through our readers with the same array and geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.io import ImageReadError, read_image, read_tiff_stack, write_image

SPACING = (0.7, 1.3, 2.5)
ORIGIN = (-12.0, 30.5, 7.25)
# a proper rotation (30 degrees about z, then 90 about x): not identity, not axis-aligned
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
DIRECTION = (np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])).ravel()


def _volume(dtype=np.int16) -> np.ndarray:
    """(z, y, x) as SimpleITK holds it; values distinct per voxel so any axis mix-up shows."""
    return np.arange(5 * 7 * 9, dtype=dtype).reshape(5, 7, 9)


def _sitk_volume() -> sitk.Image:
    image = sitk.GetImageFromArray(_volume())
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tuple(DIRECTION))
    return image


def _expected_ras_affine(image: sitk.Image) -> np.ndarray:
    """RAS affine from ITK's LPS geometry, computed independently of pipeline.io."""
    d = image.GetDimension()
    direction = np.asarray(image.GetDirection()).reshape(d, d)
    affine = np.eye(d + 1)
    affine[:d, :d] = direction * np.asarray(image.GetSpacing())
    affine[:d, d] = image.GetOrigin()
    flip = np.diag([-1, -1] + [1] * (d - 1))
    return flip @ affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_sitk_written_files_round_trip(tmp_path: Path, suffix: str) -> None:
    image = _sitk_volume()
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(image, str(path))
    got = read_image(path)
    assert tuple(got.shape) == (1, 9, 7, 5)  # (C, x, y, z)
    np.testing.assert_array_equal(got.numpy()[0], _volume().transpose(2, 1, 0))
    np.testing.assert_allclose(got.affine.numpy(), _expected_ras_affine(image), atol=1e-5)


def test_nibabel_written_nifti_round_trip(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float32)
    affine = np.array([[0, -0.8, 0, 10], [1.5, 0, 0, -4], [0, 0, 3.0, 2], [0, 0, 0, 1]])  # permuted, flipped axes
    path = tmp_path / "nib.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    got = read_image(path)
    np.testing.assert_allclose(got.numpy()[0], data)
    np.testing.assert_allclose(got.affine.numpy(), affine, atol=1e-5)


def test_write_then_read_keeps_geometry(tmp_path: Path) -> None:
    source = read_image(_write(tmp_path / "src.nrrd", _sitk_volume()))
    out = write_image(source, source, tmp_path / "copy.nii.gz")
    back = read_image(out)
    np.testing.assert_array_equal(back.numpy(), source.numpy())
    np.testing.assert_allclose(back.affine.numpy(), source.affine.numpy(), atol=1e-5)
    assert nib.load(out).shape == (9, 7, 5)
    np.testing.assert_allclose(nib.load(out).affine, source.affine.numpy(), atol=1e-4)


def _write(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_2d_image_files(tmp_path: Path, suffix: str) -> None:
    import tifffile
    from PIL import Image

    arr = (np.arange(12 * 20).reshape(12, 20) % 251).astype(np.uint8)  # (rows, cols)
    path = tmp_path / f"slice{suffix}"
    if suffix == ".png":
        Image.fromarray(arr).save(path)
    else:
        tifffile.imwrite(path, arr)
    got = read_image(path)
    assert tuple(got.shape) == (1, 20, 12)  # (C, x = columns, y = rows)
    np.testing.assert_array_equal(got.numpy()[0], arr.T)
    assert got.affine.shape == (3, 3)


def test_multipage_tiff_is_a_stack_of_2d_slices(tmp_path: Path) -> None:
    import tifffile

    pages = np.stack([np.full((8, 10), k * 10, np.uint8) + np.arange(10, dtype=np.uint8) for k in range(4)])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, pages, photometric="minisblack")
    slices = read_tiff_stack(path)
    assert len(slices) == 4
    for k, s in enumerate(slices):
        assert tuple(s.shape) == (1, 10, 8)
        np.testing.assert_array_equal(s.numpy()[0], pages[k].T)


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
        np.testing.assert_allclose(got.affine.numpy(), _expected_ras_affine(ref), atol=1e-4, err_msg=str(folder))


def test_truncated_gzip_nifti_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.nii.gz", _sitk_volume())
    blob = path.read_bytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageReadError, match=r"bad\.nii\.gz.*(truncated|corrupt)"):
        read_image(bad)


def test_truncated_uncompressed_nifti_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.nii", _sitk_volume())
    bad = tmp_path / "short.nii"
    bad.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ImageReadError, match=r"short\.nii.*truncated"):
        read_image(bad)


def test_garbage_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(gzip.compress(b"not an image at all"))
    with pytest.raises(ImageReadError, match="garbage.nii.gz"):
        read_image(bad)
