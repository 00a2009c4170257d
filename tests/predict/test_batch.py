"""Batch prediction over a study tree: series found by UID (two in one folder), one output each,
bad series and stray files reported by name while the rest still run, exit status = failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.dicom import write_series

HIPPOCAMPUS = {
    "category": {"value": "91723000", "meaning": "Anatomical Structure"},
    "type": {"value": "5366008", "meaning": "Hippocampus"},
}


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers.export import run_stage

    out = run_stage(
        tmp_path_factory.mktemp("batch_export"), "3d-same", label_codes={"a": HIPPOCAMPUS, "b": HIPPOCAMPUS}
    )
    return out["exported"]


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, (8, 12, 10)).round()


def _study(root: Path) -> dict[str, Path]:
    """A study export as a clinic sends it, good and bad series mixed."""
    from helpers.export import write_raw_case
    from pydicom import dcmread

    study_uid = "1.2.826.0.1.3680043.8.498.1"
    two = root / "study" / "mixed_folder"
    write_series(two, _volume(0), study_uid=study_uid, prefix="t1_", series_number=3)
    write_series(two, _volume(1), study_uid=study_uid, prefix="t2_", series_number=4)
    (two / "README.txt").write_text("exported by a PACS\n")
    gap = root / "study" / "gap"
    files = write_series(gap, _volume(2), study_uid=study_uid, series_number=5)
    files[4].unlink()  # a missing slice in the middle
    tilted = root / "study" / "tilted"
    files = write_series(tilted, _volume(3), study_uid=study_uid, series_number=6)
    ds = dcmread(str(files[2]))
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.9, 0.43589]  # one slice in another orientation
    ds.save_as(str(files[2]))
    write_series(root / "study" / "ct", _volume(4), study_uid=study_uid, modality="CT", series_number=8)
    write_raw_case(root / "nifti" / "case7.nii.gz", 3, (18, 20, 14), (1.0, 0.9, 1.5), 7)
    return {"two": two, "gap": gap, "tilted": tilted}


def test_batch_over_a_study_tree(tmp_path: Path, exported_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    folders = _study(tmp_path / "in")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(tmp_path / "in"), "--model", str(exported_dir), "-o", str(out), "--format", "dicom-seg"])
    text = capsys.readouterr()
    assert stop.value.code == 3, text.out + text.err  # the gap, the tilted slice and the stray README
    written = sorted(p.name for p in out.iterdir())
    assert written == [
        "nifti_case7.nii.gz",
        "study_mixed_folder_series3.dcm",
        "study_mixed_folder_series4.dcm",
    ]
    summary = text.out
    assert "3 ok, 1 skipped, 3 failed" in summary
    assert f"{folders['gap']} (series 5" in summary and "not evenly spaced" in summary
    assert f"{folders['tilted']} (series 6" in summary and "different orientations" in summary
    assert "README.txt: not a DICOM file" in summary
    assert "modality CT, the model is for MR" in summary
    # each SEG references its own series: two series in one folder stay apart
    import highdicom as hd

    refs = {hd.seg.segread(str(out / n)).ReferencedSeriesSequence[0].SeriesInstanceUID for n in written[1:]}
    assert len(refs) == 2


def test_batch_of_nothing_is_an_error(tmp_path: Path, exported_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--model", str(exported_dir), "-o", str(tmp_path / "o")]) == 2
    assert "no images or DICOM series found" in capsys.readouterr().err


def test_shards_are_disjoint_and_cover_every_case_and_workers_change_nothing(
    tmp_path: Path, exported_dir: Path
) -> None:
    """`--shard I/N` splits a study tree the way a Slurm array would: the N shares are disjoint and
    together predict every case once; `--workers 2` writes the same masks as one process."""
    import nibabel as nib
    from helpers.export import write_raw_case

    from pipeline.predict.batch import parse_shard, predict_folder

    root = tmp_path / "in"
    write_series(root / "dicom_a", _volume(10), study_uid="1.2.826.0.1.3680043.8.498.2", series_number=1)
    for i in range(4):
        write_raw_case(root / "nifti" / f"case{i}.nii.gz", 3, (14, 16, 12), (1.0, 0.9, 1.5), 20 + i)
    (root / "dicom_a" / "notes.txt").write_text("not an image\n")  # a stray file in a DICOM folder

    whole = predict_folder(exported_dir, root, tmp_path / "whole", progress=False)
    done = sorted(o.case for o in whole if o.status == "ok")
    assert len(done) == 5

    seen: list[str] = []
    for index in range(3):
        part = predict_folder(exported_dir, root, tmp_path / "shards", shard=parse_shard(f"{index}/3"), progress=False)
        seen += [o.case for o in part if o.status == "ok"]
        strays = [o for o in part if o.status == "failed"]
        assert all(o.case.endswith("notes.txt") for o in strays)
        assert bool(strays) == (index == 0), "stray files are reported once, by shard 0"
    assert sorted(seen) == done, "the shards are disjoint and cover every case"

    pooled = predict_folder(exported_dir, root, tmp_path / "pooled", workers=2, progress=False)
    assert [(o.case, o.status) for o in pooled] == [(o.case, o.status) for o in whole]
    for path in sorted((tmp_path / "whole").iterdir()):
        for other in (tmp_path / "pooled" / path.name, tmp_path / "shards" / path.name):
            assert np.array_equal(np.asarray(nib.load(str(path)).dataobj), np.asarray(nib.load(str(other)).dataobj))


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "1/0"])
def test_bad_shard_is_one_clear_error(text: str) -> None:
    from pipeline.predict.batch import parse_shard
    from pipeline.predict.errors import PredictError

    with pytest.raises(PredictError, match="expected I/N"):
        parse_shard(text)
