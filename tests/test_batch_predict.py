"""Batch prediction over a study tree: series found by UID (two in one folder), one output each,
bad series and stray files reported by name while the rest still run, exit status = failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_dicom import write_series

HIPPOCAMPUS = {
    "category": {"value": "91723000", "meaning": "Anatomical Structure"},
    "type": {"value": "5366008", "meaning": "Hippocampus"},
}


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers_export import run_stage

    out = run_stage(
        tmp_path_factory.mktemp("batch_export"), "3d-same", label_codes={"a": HIPPOCAMPUS, "b": HIPPOCAMPUS}
    )
    return out["exported"]


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, (8, 12, 10)).round()


def _study(root: Path) -> dict[str, Path]:
    """A study export as a clinic sends it, good and bad series mixed."""
    from helpers_export import write_raw_case
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
