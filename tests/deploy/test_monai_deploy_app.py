"""The MONAI Deploy app (deploy/monai_deploy/app.py), run by its own venv's interpreter: the SEG it
writes references its source series and overlaps `unet-pipeline predict`'s SEG on the same series
with Dice >= 0.99 per segment, frame by frame on the source slices (by SOP instance UID, each frame
on its source's ImagePositionPatient).

(a) A generated series the SDK 4.0.0 gets wrong unaided: oblique, unequal in-plane spacings,
files in shuffled order, an all-positive first slice and negative values further on (the app's
SeriesToVolume fixes). (b) The three real hippocampus series, with the hippocampus preset trained
for a few iterations on 12 cases (slow: about 2 minutes on 2 cores).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "deploy" / "monai_deploy"
SDK_PYTHON = APP_DIR / ".venv" / "bin" / "python"
HIPPOCAMPUS = {
    "category": {"value": "91723000", "meaning": "Anatomical Structure"},
    "type": {"value": "5366008", "meaning": "Hippocampus"},
}

pytestmark = pytest.mark.skipif(
    not SDK_PYTHON.is_file(), reason=f"{SDK_PYTHON} absent: the SDK's venv is made by deploy/monai_deploy/setup.sh"
)


def _big_stack() -> None:
    """Holoscan wants a 32 MB stack (it warns below)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = 32 * 1024 * 1024
    if soft != resource.RLIM_INFINITY and soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_STACK, (want, hard))


def run_app(series: Path, model: Path, out: Path) -> Path:
    """`python app.py -i SERIES -o OUT -m MODEL` in the SDK's venv, where this project is not importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [str(SDK_PYTHON), str(APP_DIR / "app.py"), "-i", str(series), "-o", str(out), "-m", str(model)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=out.parent, env=env, timeout=600, preexec_fn=_big_stack
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (seg,) = out.glob("*.dcm")
    return seg


def predict_seg(series: Path, exported: Path, out: Path) -> Path:
    from pipeline.cli import main

    assert main(["predict", str(series), "--model", str(exported), "-o", str(out)]) == 0
    return out


def frames_on_sources(seg_path: Path, sources: dict[str, Any]) -> dict[str, np.ndarray]:
    """Segment label -> (slices, rows, cols) bool mask stacked in `sources` order; a source slice
    without a frame is empty. Every frame must lie on its source's ImagePositionPatient."""
    import highdicom as hd

    seg = hd.seg.segread(str(seg_path))
    pixels = seg.pixel_array.reshape(-1, *seg.pixel_array.shape[-2:])
    shared = seg.SharedFunctionalGroupsSequence[0]
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    order = {uid: k for k, uid in enumerate(sources)}
    first = next(iter(sources.values()))
    out = {name: np.zeros((len(sources), int(first.Rows), int(first.Columns)), bool) for name in labels.values()}
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ident = item if "SegmentIdentificationSequence" in item else shared
        number = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, [float(v) for v in sources[uid].ImagePositionPatient], atol=1e-3)
        out[labels[number]][order[uid]] |= pixels[f].astype(bool)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def compare(series: Path, exported: Path, model: Path, tmp: Path) -> dict[str, float]:
    """Run both on `series`; check the app's SEG references it; Dice per segment (ours vs the app's)."""
    import pydicom

    sources = {}
    for p in sorted(series.iterdir()):
        ds = pydicom.dcmread(str(p), stop_before_pixels=True)
        sources[ds.SOPInstanceUID] = ds
    series_uid = next(iter(sources.values())).SeriesInstanceUID
    app_seg = run_app(series, model, tmp / "app_out")
    ds = pydicom.dcmread(str(app_seg))
    assert ds.Modality == "SEG" and ds.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    assert [r.SeriesInstanceUID for r in ds.ReferencedSeriesSequence] == [series_uid]
    referenced = {i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(sources)
    ours = frames_on_sources(predict_seg(series, exported, tmp / "ours.dcm"), sources)
    theirs = frames_on_sources(app_seg, sources)
    assert sorted(ours) == sorted(theirs)
    assert any(m.any() for m in ours.values()), "the model predicts no foreground: nothing to compare"
    return {name: dice(ours[name], theirs[name]) for name in ours}


@pytest.fixture(scope="module")
def generated_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3d-same tiny export, trained enough (600 steps) to predict both classes on blob images."""
    from helpers.export import run_stage

    root = tmp_path_factory.mktemp("monai_deploy_export")
    codes = {"a": HIPPOCAMPUS, "b": HIPPOCAMPUS}
    return run_stage(root, "3d-same", label_codes=codes, train_steps=600)["exported"]


def _generated_series(folder: Path) -> Path:
    from helpers.dicom import rotation, write_series
    from helpers.export import blob_image

    image, _ = blob_image(3, 20, seed=1)
    volume = (image[0][:, :18, :16] * 40 + 100).round()  # (slices, rows, cols), raw units as training saw
    volume[0] = np.clip(volume[0], 1, None)  # the SDK types the volume by its first slice alone
    assert (volume[1:] < 0).any()
    order = list(np.random.default_rng(2).permutation(len(volume)))
    direction = rotation(0, 20.0) @ rotation(2, 15.0)
    write_series(folder, volume, spacing=(0.9, 0.8, 1.5), direction=direction, file_order=order)
    return folder


def test_generated_series(tmp_path: Path, generated_export: Path) -> None:
    series = _generated_series(tmp_path / "series")
    scores = compare(series, generated_export, generated_export / "model.ts", tmp_path)
    assert all(v >= 0.99 for v in scores.values()), scores


@pytest.fixture(scope="module")
def hippocampus_export(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/hippocampus-3d.yaml trained 2 epochs x 10 iterations on 12 cases, small features, exported."""
    import json

    src = shared_data / "hippocampus-mri"
    if not (src / "dicom").is_dir():
        pytest.skip(f"{src / 'dicom'} absent")
    work = tmp_path_factory.mktemp("hippocampus")
    subset = json.loads((src / "dataset.json").read_text())
    subset["training"], subset["numTraining"] = subset["training"][:12], 12
    for item in subset["training"]:
        for key in ("image", "label"):
            link = work / "src" / item[key]
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src / item[key])
    (work / "src" / "dataset.json").write_text(json.dumps(subset))
    short = [
        *("-S", "preprocess.num_workers=0", "-S", "model.features=[8,16,32]"),
        *("-S", "train.epochs=2", "-S", "train.iterations_per_epoch=10", "-S", "train.val_every=2"),
        *("-S", "train.patch_size=[32,48,32]", "-S", "inference.tile_size=[32,48,32]"),
    ]
    config = ["-c", str(REPO_ROOT / "configs" / "hippocampus-3d.yaml"), *short]
    stages = [
        ["data", "import", "src", "--out", "data"],
        *([stage, *config] for stage in ("preprocess", "train", "export")),
    ]
    for args in stages:
        proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=work, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "exported"


@pytest.mark.slow
@pytest.mark.parametrize("study", ["Study1_13_HCropVolume", "Study2_14_HCropVolume", "Study3_11_HCropVolume"])
def test_hippocampus_series(study: str, shared_data: Path, hippocampus_export: Path, tmp_path: Path) -> None:
    series = shared_data / "hippocampus-mri" / "dicom" / study
    scores = compare(series, hippocampus_export, hippocampus_export / "model.ts", tmp_path)
    assert sorted(scores) == ["Anterior", "Posterior"]
    assert all(v >= 0.99 for v in scores.values()), scores
