"""The preprocess stage: what it writes, how it resamples and reorients, and how it refuses bad
input -- every error names the case file and the problem, exits non-zero, and leaves the previous
`preprocessed/` untouched."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from pipeline import cli
from pipeline.data.synth import synthesize


def _config(root: Path, **sections: dict) -> Path:
    cfg = {
        "name": "t",
        "seed": 0,
        "data": {"root": str(root / "data"), "spatial_dims": 2, "modality": "other"},
        "preprocess": {"output_dir": str(root / "pre"), "folds": 2, "num_workers": 0, "border_weights": True},
        "model": {"features": [8, 16], "padding": "same"},
        "train": {"patch_size": [32, 32]},
        "inference": {"tile_size": [32, 32]},
    }
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def synth_repo(tmp_path: Path) -> Path:
    synthesize(tmp_path / "data", dims=2, cases=4, seed=1)
    return tmp_path


def test_writes_manifest_fingerprint_and_arrays(synth_repo: Path) -> None:
    cfg = _config(synth_repo)
    assert cli.main(["preprocess", "-c", str(cfg)]) == 0
    pre = synth_repo / "pre"
    manifest = json.loads((pre / "manifest.json").read_text())
    assert manifest["labels"] == ["background", "round", "angular"]
    assert sorted(manifest["splits"]["train"] + manifest["splits"]["val"]) == [f"synth_{i:03d}" for i in range(4)]
    case = manifest["cases"][0]
    image, label, weight = (np.load(pre / case[k]) for k in ("image", "label", "weight"))
    assert image.dtype == np.float32 and image.shape == (1, 96, 96)
    assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1) < 1e-2  # z-score
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2}
    assert weight.shape == label.shape and weight.max() > 5 * weight.min() > 0  # w0 border term on top of w_c
    assert case["original"]["shape"] == [96, 96] and Path(case["source_label"]).is_file()
    fp = json.loads((pre / "fingerprint.json").read_text())
    assert fp["cases"] == 4 and fp["cases_per_split"] == {"train": 2, "val": 2}
    assert set(fp["class_voxel_fraction"]) == {"background", "round", "angular"}
    assert fp["intensity"][0]["foreground"]["p99_5"] > fp["intensity"][0]["image"]["p00_5"]


def test_split_is_deterministic_and_fixed_split_wins(synth_repo: Path) -> None:
    cfg = _config(synth_repo)
    cli.main(["preprocess", "-c", str(cfg)])
    first = json.loads((synth_repo / "pre" / "manifest.json").read_text())["splits"]
    cli.main(["preprocess", "-c", str(cfg)])
    assert json.loads((synth_repo / "pre" / "manifest.json").read_text())["splits"] == first
    fixed = _config(
        synth_repo, preprocess={"split": {"train": ["synth_000", "synth_001", "synth_002"], "val": ["synth_003"]}}
    )
    assert cli.main(["preprocess", "-c", str(fixed)]) == 0
    assert json.loads((synth_repo / "pre" / "manifest.json").read_text())["splits"]["val"] == ["synth_003"]


def _lps_case(root: Path) -> Path:
    """One 3D case in LPS orientation with anisotropic spacing, written by SimpleITK."""
    from pipeline.data.canonical import build_dataset_json, dumps

    (root / "data" / "imagesTr").mkdir(parents=True)
    (root / "data" / "labelsTr").mkdir()
    zyx = (10, 16, 20)
    image = np.random.default_rng(0).normal(100, 10, zyx).astype(np.float32)
    label = np.zeros(zyx, np.uint8)
    label[3:7, 4:10, 5:15] = 1
    image[label > 0] += 50
    for arr, rel in ((image, "imagesTr/c1_0000.nii.gz"), (label, "labelsTr/c1.nii.gz")):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((0.8, 1.2, 3.0))
        im.SetOrigin((10.0, -5.0, 2.0))
        im.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))  # identity in ITK = LPS
        sitk.WriteImage(im, str(root / "data" / rel))
    ds = build_dataset_json(
        name="lps",
        description="",
        spatial_dims=3,
        modality="mr",
        channel_names={"0": "MR"},
        labels=["background", "object"],
        label_mapping=None,
        source="test",
        case_ids=["c1", "c2"],
    )
    for rel in ("imagesTr/c2_0000.nii.gz", "labelsTr/c2.nii.gz"):
        (root / "data" / rel).write_bytes((root / "data" / rel.replace("c2", "c1")).read_bytes())
    (root / "data" / "dataset.json").write_text(dumps(ds))
    return root


def test_reorients_to_ras_and_resamples_and_records_the_source_geometry(tmp_path: Path) -> None:
    root = _lps_case(tmp_path)
    cfg = _config(
        root,
        data={"spatial_dims": 3},
        preprocess={"orientation": "RAS", "target_spacing": [1.6, 1.2, 1.5], "folds": 2, "border_weights": False},
        train={"patch_size": [16, 16, 16]},
        inference={"tile_size": [16, 16, 16]},
    )
    assert cli.main(["preprocess", "-c", str(cfg)]) == 0
    manifest = json.loads((root / "pre" / "manifest.json").read_text())
    case = manifest["cases"][0]
    src = nib.load(root / "data" / "imagesTr" / "c1_0000.nii.gz")
    np.testing.assert_allclose(case["original"]["affine"], src.affine, atol=1e-4)
    assert case["original"]["shape"] == [20, 16, 10]
    # ITK origin (10, -5, 2) LPS -> RAS (-10, 5, 2); ITK identity direction = LPS -> RAS diag(-1, -1, 1)
    np.testing.assert_allclose(case["original"]["origin"], [-10.0, 5.0, 2.0], atol=1e-5)
    np.testing.assert_allclose(case["original"]["direction"], np.diag([-1.0, -1.0, 1.0]), atol=1e-6)
    np.testing.assert_allclose(case["original"]["spacing"], [0.8, 1.2, 3.0], atol=1e-6)
    # extents 20 x 0.8, 16 x 1.2, 10 x 3.0 mm at 1.6 / 1.2 / 1.5 mm: about 10, 16, 20 voxels
    label = np.load(root / "pre" / case["label"])
    assert np.abs(np.array(label.shape[1:]) - (10, 16, 20)).max() <= 1 and case["spacing"] == pytest.approx(
        [1.6, 1.2, 1.5]
    )
    # LPS -> RAS flips x and y. y keeps its 1.2 mm spacing: the object at ITK y index 4..9 of 16 must land
    # at RAS y 6..11 (flipped), not 4..9
    ys = np.nonzero(label[0].any(axis=(0, 2)))[0]
    assert (ys.min(), ys.max()) == (6, 11)
    zs = np.nonzero(label[0].any(axis=(0, 1)))[0]  # ITK z 3..6 at 3 mm = 9..18 mm -> ~6..13 at 1.5 mm
    assert 5 <= zs.min() <= 7 and 12 <= zs.max() <= 14
    assert manifest["preprocessing"]["orientation"] == "RAS"


# ------------------------------------------------------------------------- bad inputs


def _break_shape(data: Path) -> str:
    sitk.WriteImage(sitk.Image(50, 60, sitk.sitkUInt8), str(data / "labelsTr" / "synth_001.nii.gz"))
    return r"synth_001\.nii\.gz.*label shape \(50, 60\) does not match"


def _break_geometry(data: Path) -> str:
    path = data / "labelsTr" / "synth_002.nii.gz"
    im = sitk.ReadImage(str(path))
    im.SetOrigin((5.0, 0.0))
    sitk.WriteImage(im, str(path))
    return r"synth_002\.nii\.gz.*geometry"


def _rewrite(path: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    """Rewrite an image file's voxels through `edit`, keeping its geometry."""
    im = sitk.ReadImage(str(path))
    out = sitk.GetImageFromArray(edit(sitk.GetArrayFromImage(im)))
    out.CopyInformation(im)
    sitk.WriteImage(out, str(path))


def _set_voxel(value: float, dtype: type | None = None) -> Callable[[np.ndarray], np.ndarray]:
    def edit(arr: np.ndarray) -> np.ndarray:
        arr = arr.astype(dtype) if dtype else arr.copy()
        arr[10, 10] = value
        return arr

    return edit


def _break_label_values(data: Path) -> str:
    _rewrite(data / "labelsTr" / "synth_000.nii.gz", _set_voxel(7))
    return r"synth_000\.nii\.gz.*label values \[7\] are outside the declared set \[0, 1, 2\]"


def _break_nan(data: Path) -> str:
    _rewrite(data / "imagesTr" / "synth_003_0000.nii.gz", _set_voxel(np.nan, np.float32))
    return r"synth_003_0000\.nii\.gz.*1 NaN/Inf voxel"


def _break_truncated(data: Path) -> str:
    path = data / "imagesTr" / "synth_001_0000.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    return r"synth_001_0000\.nii\.gz: not a readable NIfTI file"


def _break_missing_label(data: Path) -> str:
    (data / "labelsTr" / "synth_002.nii.gz").unlink()
    return r"synth_002_0000\.nii\.gz.*missing label"


def _break_dims(data: Path) -> str:
    path = data / "imagesTr" / "synth_000_0000.nii.gz"
    sitk.WriteImage(sitk.Image(96, 96, 4, sitk.sitkInt16), str(path))
    return r"synth_000_0000\.nii\.gz.*3D image .* data\.spatial_dims=2"


def _break_empty(data: Path) -> str:
    meta = json.loads((data / "dataset.json").read_text())
    meta["training"] = []
    (data / "dataset.json").write_text(json.dumps(meta))
    return r"dataset\.json.*holds no cases"


@pytest.mark.parametrize(
    "breaker",
    [
        _break_shape,
        _break_geometry,
        _break_label_values,
        _break_nan,
        _break_truncated,
        _break_missing_label,
        _break_dims,
        _break_empty,
    ],
    ids=lambda f: f.__name__.removeprefix("_break_"),
)
def test_bad_input_is_named_and_earlier_output_survives(
    synth_repo: Path, breaker: Callable[[Path], str], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(synth_repo)
    assert cli.main(["preprocess", "-c", str(cfg)]) == 0
    before = _digest(synth_repo / "pre")
    capsys.readouterr()
    pattern = breaker(synth_repo / "data")
    assert cli.main(["preprocess", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    message = err[err.index("error:") :]
    assert re.search(pattern, message, flags=re.S), message
    assert _digest(synth_repo / "pre") == before
    assert sorted(p.name for p in synth_repo.iterdir()) == ["data", "params.yaml", "pre"]  # no temp dirs left
