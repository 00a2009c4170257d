"""Out-of-distribution warning: the exported metadata carries the training fingerprint, and the
predictor names, per case, a spacing 2x off, non-overlapping intensities or another modality;
--strict refuses the case and writes nothing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

FP = {
    "modality": "mr",
    "axes": "RAS",
    "spacing": {"min": [1.0, 1.0, 1.0], "median": [1.0, 1.0, 1.2], "max": [1.0, 1.0, 1.5]},
    "intensity": [{"channel": 0, "p00_5": 0.0, "median": 100.0, "p99_5": 400.0}],
}


def _image(spacing: tuple[float, float, float], lo: float, hi: float):  # noqa: ANN202
    from monai.data import MetaTensor

    values = np.linspace(lo, hi, 10 * 12 * 8, dtype=np.float32).reshape(1, 10, 12, 8)
    return MetaTensor(torch.from_numpy(values), affine=torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64)))


def test_findings_name_what_is_far_outside() -> None:
    from pipeline.predict.ood import findings

    assert findings(_image((1.0, 1.0, 1.4), 20, 300), FP, "MR") == []
    assert findings(_image((1.0, 1.0, 2.9), 20, 300), FP) == []  # within 2x of the largest training spacing
    (msg,) = findings(_image((1.0, 1.0, 3.5), 20, 300), FP)
    assert "axis 2" in msg and "more than 2x outside" in msg
    (msg,) = findings(_image((1.0, 0.4, 1.0), 20, 300), FP)
    assert "axis 1" in msg
    (msg,) = findings(_image((1.0, 1.0, 1.0), 1000, 3000), FP)
    assert "do not overlap" in msg
    assert findings(_image((1.0, 1.0, 1.0), 300, 3000), FP) == []  # overlaps: a shift, not a stranger
    (msg,) = findings(_image((1.0, 1.0, 1.0), 20, 300), FP, "CT")
    assert "modality tag CT" in msg
    assert findings(_image((9.0, 9.0, 9.0), 1e6, 2e6), None) == []  # an old bundle: nothing to compare


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from helpers.export import run_stage

    return run_stage(tmp_path_factory.mktemp("ood_export"), "3d-same")


def test_metadata_carries_the_training_fingerprint(exported: dict) -> None:
    meta = json.loads((exported["exported"] / "configs" / "metadata.json").read_text())
    fp = meta["unet_pipeline"]["training_fingerprint"]
    assert fp["modality"] == "mr" and fp["axes"] == "RAS"
    assert len(fp["spacing"]["min"]) == 3 and fp["intensity"][0]["p00_5"] < fp["intensity"][0]["p99_5"]


def test_predict_warns_and_strict_refuses(tmp_path: Path, exported: dict) -> None:
    import nibabel as nib

    from pipeline.predict.predictor import PredictError, predict_file

    src = nib.load(str(exported["val_image"]))
    bright = tmp_path / "bright.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj) * 100.0 + 1e5, src.affine), str(bright))
    model = exported["exported"] / "model.onnx"
    with warnings.catch_warnings(record=True) as seen:  # the training kind: no warning
        warnings.simplefilter("always")
        predict_file(model, exported["val_image"], tmp_path / "ok.nii.gz")
    assert not [w for w in seen if "unlike the training data" in str(w.message)]
    with pytest.warns(UserWarning, match=r"bright\.nii\.gz: unlike the training data: channel 0 intensities"):
        predict_file(model, bright, tmp_path / "warned.nii.gz")
    assert (tmp_path / "warned.nii.gz").is_file()
    with pytest.raises(PredictError, match=r"do not overlap.*refused: --strict"):
        predict_file(model, bright, tmp_path / "refused.nii.gz", strict=True)
    assert not (tmp_path / "refused.nii.gz").exists()
