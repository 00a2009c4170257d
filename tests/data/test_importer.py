"""`data import` (pipeline.data.importer) of the three source layouts: labels, layouts and the staged,
validated, atomic replacement of `data/`."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.cli import main as cli
from pipeline.data.canonical import load_dataset
from pipeline.io import read_image


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _msd_tree(root: Path, n_cases: int = 3, channels: int = 2) -> Path:
    """A small nnU-Net-v1/MSD-style tree: dataset.json listing cases, 2-channel `_0000/_0001` images."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([0.9, 0.9, 2.0, 1.0])
    training = []
    for i in range(n_cases):
        cid = f"case_{i:03d}"
        label = np.zeros((12, 10, 6), np.uint8)
        label[3:7, 2:6, 1:4] = 1
        label[8:11, 6:9, 2:5] = 2
        for c in range(channels):
            nib.save(
                nib.Nifti1Image(rng.normal(size=label.shape).astype(np.float32), affine),
                root / "imagesTr" / f"{cid}_{c:04d}.nii.gz",
            )
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"{cid}.nii.gz")
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    meta = {
        "name": "Tiny",
        "modality": {"0": "T1", "1": "T2"},
        "labels": {"0": "background", "1": "a", "2": "b"},
        "numTraining": n_cases,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_import_msd_multichannel(tmp_path: Path) -> None:
    src = _msd_tree(tmp_path / "src")
    assert cli(["data", "import", str(src), "--out", str(tmp_path / "data")]) == 0  # layout detected
    info = load_dataset(tmp_path / "data")
    assert info.labels == ["background", "a", "b"] and info.spatial_dims == 3 and info.modality == "mr"
    assert len(info.cases) == 3 and all(len(c.images) == 2 for c in info.cases)
    image = read_image(list(info.cases[0].images))
    assert tuple(image.shape) == (2, 12, 10, 6)
    np.testing.assert_allclose(np.linalg.norm(image.affine.numpy()[:3, :3], axis=0), [0.9, 0.9, 2.0], atol=1e-6)
    assert info.meta["label_mapping"] is None


def _pairs_tree(root: Path, n: int = 3) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img = (np.arange(24 * 20).reshape(24, 20) % 200 + i).astype(np.uint8)
        mask = np.full((24, 20), 255, np.uint8)
        mask[:, 9:11] = 0  # a membrane line
        Image.fromarray(img).save(root / "images" / f"slice_{i:02d}.png")
        Image.fromarray(mask).save(root / "labels" / f"slice_{i:02d}.png")
    return root


def test_import_pairs_maps_raw_values_through_labels(tmp_path: Path) -> None:
    src = _pairs_tree(tmp_path / "src")
    out = tmp_path / "data"
    assert cli(["data", "import", str(src), "--labels", "cell=255,membrane=0", "--out", str(out)]) == 0
    info = load_dataset(out)
    assert info.labels == ["cell", "membrane"] and info.spatial_dims == 2
    assert info.meta["label_mapping"] == {"0": 1, "255": 0}
    label = read_image(info.cases[0].label).numpy()[0]  # (x, y)
    assert label.shape == (20, 24)
    assert set(np.unique(label)) == {0, 1} and (label[9:11] == 1).all() and (label[:9] == 0).all()


def test_import_pairs_without_mapping_lists_the_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _pairs_tree(tmp_path / "src")
    assert cli(["data", "import", str(src), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "[0, 255]" in err and "--labels" in err
    assert not (tmp_path / "data").exists()


def test_import_pairs_with_an_unmapped_value_names_file_and_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _pairs_tree(tmp_path / "src")
    assert cli(["data", "import", str(src), "--labels", "cell=255,membrane=1", "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "slice_00.png" in err and "[0]" in err
    assert not (tmp_path / "data").exists()


def test_import_tiff_stack(tmp_path: Path) -> None:
    import tifffile

    src = tmp_path / "src"
    src.mkdir()
    pages = np.stack([np.full((16, 12), 40 * k, np.uint8) for k in range(3)])
    masks = np.where(np.arange(12) < 6, 255, 0).astype(np.uint8)[None, None].repeat(16, 1).repeat(3, 0)
    tifffile.imwrite(src / "train-volume.tif", pages, photometric="minisblack")
    tifffile.imwrite(src / "train-labels.tif", masks, photometric="minisblack")
    out = tmp_path / "data"
    assert cli(["data", "import", str(src), "--labels", "cell=255,membrane=0", "--out", str(out)]) == 0
    info = load_dataset(out)
    assert [c.id for c in info.cases] == ["slice_00", "slice_01", "slice_02"]
    assert read_image(info.cases[2].images[0]).numpy().max() == 80
    assert sitk.ReadImage(str(info.cases[0].label)).GetSize() == (12, 16)


def test_import_replaces_data_atomically_and_keeps_it_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert cli(["data", "synth", "--cases", "2", "--out", str(out)]) == 0
    before = _digest(out)
    src = _pairs_tree(tmp_path / "src")
    (src / "labels" / "slice_01.png").write_bytes(b"\x89PNG truncated")
    assert cli(["data", "import", str(src), "--labels", "cell=255,membrane=0", "--out", str(out)]) == 2
    assert _digest(out) == before


def test_import_nnunet_v2_layout(tmp_path: Path) -> None:
    """nnU-Net v2 dataset.json: labels name -> index, channel_names, no training list."""
    src = tmp_path / "Dataset001_Tiny"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    affine = np.diag([-1.5, 0.7, 0.7, 1.0])
    for cid in ("b_case", "a_case"):
        label = np.zeros((8, 9, 10), np.uint8)
        label[2:5, 3:6, 4:8] = 1
        nib.save(nib.Nifti1Image(label.astype(np.float32) * 100, affine), src / "imagesTr" / f"{cid}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), src / "labelsTr" / f"{cid}.nii.gz")
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "tumour": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (src / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "data"
    assert cli(["data", "import", str(src), "--out", str(out)]) == 0
    info = load_dataset(out)
    assert [c.id for c in info.cases] == ["a_case", "b_case"] and info.labels == ["background", "tumour"]
    assert info.modality == "ct" and info.meta["channel_names"] == {"0": "CT"}
    image = read_image(info.cases[0].images[0])
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-6)
    assert image.numpy().max() == 100


def test_import_msd_4d_multimodal_splits_channels(tmp_path: Path) -> None:
    """MSD proper (e.g. BraTS): one 4D NIfTI per case, channels last -> `_0000`, `_0001` files."""
    src = tmp_path / "Task01"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    affine = np.array([[0, -1.2, 0, 5], [0.8, 0, 0, -3], [0, 0, 2.5, 1], [0, 0, 0, 1]])
    volume = np.arange(6 * 5 * 4 * 2, dtype=np.float32).reshape(6, 5, 4, 2)
    nib.save(nib.Nifti1Image(volume, affine), src / "imagesTr" / "brain_001.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), np.uint8), affine), src / "labelsTr" / "brain_001.nii.gz")
    meta = {
        "name": "Four",
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema"},
        "training": [{"image": "./imagesTr/brain_001.nii.gz", "label": "./labelsTr/brain_001.nii.gz"}],
    }
    (src / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "data"
    assert cli(["data", "import", str(src), "--out", str(out)]) == 0
    info = load_dataset(out)
    assert info.spatial_dims == 3 and info.modality == "mr" and len(info.cases[0].images) == 2
    image = read_image(list(info.cases[0].images))
    assert tuple(image.shape) == (2, 6, 5, 4)
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(volume, -1, 0))
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-5)


def test_summary_line_and_undetectable_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _pairs_tree(tmp_path / "src", n=2)
    assert cli(["data", "import", str(src), "--labels", "cell=255,membrane=0", "--out", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith("imported 2 2D cases (pairs layout, 1 channel(s))") and "0=cell, 1=membrane" in out
    assert "not in a DVC repo" in out
    (tmp_path / "empty").mkdir()
    assert cli(["data", "import", str(tmp_path / "empty"), "--out", str(tmp_path / "d2")]) == 2
    assert "cannot tell the layout" in capsys.readouterr().err


def test_import_rgb_pairs_become_channels_and_colour_masks_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    src = _pairs_tree(tmp_path / "src", n=1)
    rgb = np.stack([np.full((24, 20), v, np.uint8) for v in (10, 20, 30)], axis=-1)
    Image.fromarray(rgb).save(src / "images" / "slice_00.png")
    out = tmp_path / "data"
    assert cli(["data", "import", str(src), "--labels", "cell=255,membrane=0", "--out", str(out)]) == 0
    info = load_dataset(out)
    assert len(info.cases[0].images) == 3
    assert [int(read_image(p).numpy().max()) for p in info.cases[0].images] == [10, 20, 30]
    Image.fromarray(rgb).save(src / "labels" / "slice_00.png")
    assert cli(["data", "import", str(src), "--labels", "cell=255,membrane=0", "--out", str(tmp_path / "d2")]) == 2
    assert "slice_00.png: mask has 3 channels" in capsys.readouterr().err


def test_import_inside_a_dvc_repo_runs_dvc_add(
    tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil
    import subprocess

    import yaml

    dvc = shutil.which("dvc") or str(repo_root / ".venv" / "bin" / "dvc")
    if not Path(dvc).exists():
        pytest.skip("dvc is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=repo, check=True)
    src = _pairs_tree(tmp_path / "src", n=2)
    assert cli(["data", "import", str(src), "--labels", "cell=255,membrane=0", "--out", str(repo / "data")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("done")
    out = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]
    assert out["path"] == "data" and out["nfiles"] == 5


def _v2_tree(root: Path, defect: str) -> Path:
    """An nnU-Net v2 tree of three 3D cases; `b_case` carries `defect`."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.2, 0.8, 0.8, 1.0])
    for cid in ("a_case", "b_case", "c_case"):
        label = np.zeros((8, 9, 10), np.uint8)
        label[2:5, 3:6, 4:8] = 1
        image = label.astype(np.float32) * 100 + 5
        label_affine = affine
        if cid == "b_case":
            if defect == "shape":
                label = np.pad(label, ((0, 0), (0, 0), (0, 2)))
            elif defect == "affine":
                label_affine = np.diag([1.2, 0.8, 1.6, 1.0])
            elif defect == "4d":
                image = np.stack([image, image], axis=-1)
            elif defect == "undeclared":
                label[0, 0, 0] = 3
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{cid}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, label_affine), root / "labelsTr" / f"{cid}.nii.gz")
    meta = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "hippocampus": 1},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


DEFECTS = {  # defect -> (the file the error must name, what it must say)
    "shape": ("labelsTr/b_case.nii.gz", "does not match image"),
    "affine": ("labelsTr/b_case.nii.gz", "geometry (affine) differs"),
    "4d": ("imagesTr/b_case_0000.nii.gz", "4D image, but"),
    "undeclared": ("labelsTr/b_case.nii.gz", "outside the declared set"),
}


@pytest.fixture
def synth_repo(tmp_path: Path, repo_root: Path) -> Path:
    """A fresh clone's state after `data synth`: data/ generated, data.dvc committed, no DVC cache yet."""
    import shutil
    import subprocess

    dvc = Path(sys.executable).parent / "dvc"
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(dvc), "init", "-q"], cwd=repo, check=True)
    shutil.copy2(repo_root / "data.dvc", repo / "data.dvc")
    assert cli(["data", "synth", "--out", str(repo / "data")]) == 0
    return repo


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_import_refuses_a_bad_dataset_and_changes_nothing(
    tmp_path: Path, synth_repo: Path, defect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each defect preprocess would refuse is refused at import: exit 2, the source file named,
    and data/, data.dvc and the DVC cache byte-for-byte as before."""
    src = _v2_tree(tmp_path / "Dataset004_Bad", defect)
    before = {name: _digest(synth_repo / name) for name in ("data", ".dvc")}
    data_dvc = (synth_repo / "data.dvc").read_bytes()
    capsys.readouterr()
    assert cli(["data", "import", str(src), "--out", str(synth_repo / "data")]) == 2
    err = capsys.readouterr().err
    where, what = DEFECTS[defect]
    assert str(src / where) in err and what in err, err
    assert "tmp-" not in err, err  # problems name the user's files, never the staging copy
    assert {name: _digest(synth_repo / name) for name in ("data", ".dvc")} == before
    assert (synth_repo / "data.dvc").read_bytes() == data_dvc
    assert not any(p.name.startswith(".data.") for p in synth_repo.iterdir()), "staging directory left behind"


def test_import_lists_every_problem_of_every_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _v2_tree(tmp_path / "Dataset005_Bad", "shape")
    nib.save(
        nib.Nifti1Image(np.full((8, 9, 10), 7, np.uint8), np.diag([1.2, 0.8, 0.8, 1.0])),
        src / "labelsTr" / "c_case.nii.gz",
    )
    assert cli(["data", "import", str(src), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "b_case.nii.gz" in err and "c_case.nii.gz" in err, err
    assert not (tmp_path / "data").exists()
