"""The standalone predictor (pipeline.predict.predictor) with the session's exported 2D model: the mask
in the input's geometry, and bad input rejected.

Bad input: `unet-pipeline predict` with a wrong-dimensional, wrong-channel or unreadable image
fails with an error naming the file and writes nothing; a model that does not match its metadata,
or unusable inference settings in it, are refused naming the file. A mask write that hits a real
file-size limit (a full disk) fails with one line naming the mask and keeps the previous one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.evaluation import pipeline_env
from helpers.faults import cli, digests, one_error_line, run_limited, temps


def _write_3d(path: Path) -> Path:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 20, 20), np.float32)), str(path))
    return path


def _write_rgb_png(path: Path) -> Path:
    import SimpleITK as sitk

    rgb = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    return path


def _write_garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an image" * 10)
    return path


@pytest.mark.parametrize(
    "make,name,message",
    [
        (_write_3d, "volume.nii.gz", r"3D image .* the model is 2D"),
        (_write_rgb_png, "photo.png", r"3 channel\(s\) .* the model expects 1"),
        (_write_garbage, "broken.nii.gz", r"cannot read input image"),
        (None, "missing.nii.gz", r"does not exist"),
    ],
)
def test_predictor_rejects_bad_input_and_writes_nothing(
    tmp_path: Path, exported_model: Path, capsys: pytest.CaptureFixture, make, name: str, message: str
) -> None:
    import re

    from pipeline.cli import main
    from pipeline.predict.predictor import PredictError, predict_file

    image = make(tmp_path / name) if make else tmp_path / name
    out = tmp_path / "out" / "mask.nii.gz"
    with pytest.raises(PredictError, match=message) as err:
        predict_file(exported_model, image, out)
    assert str(image) in str(err.value)
    assert not out.exists() and not out.parent.exists()

    # the CLI: one error line naming the file, exit status 2, nothing written
    assert main(["predict", str(image), "--model", str(exported_model), "-o", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and str(image) in stderr and re.search(message, stderr)
    assert len(stderr.strip().splitlines()) == 1
    assert not out.exists() and not out.parent.exists()


def test_predictor_rejects_a_model_that_does_not_match_its_metadata(tmp_path: Path, exported_model: Path) -> None:
    import shutil

    from pipeline.predict.predictor import PredictError, predict_file

    bundle = tmp_path / "exported"
    shutil.copytree(exported_model.parent, bundle)
    tampered = bundle / "model.onnx"
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_000_0000.nii.gz"
    out = tmp_path / "mask.nii.gz"
    with pytest.raises(PredictError, match=r"model\.onnx does not match .*metadata\.json: SHA-256"):
        predict_file(tampered, image, out)
    assert not out.exists()


def test_unusable_inference_settings_in_the_metadata_name_the_file(tmp_path: Path, exported_model: Path) -> None:
    import json
    import shutil

    from pipeline.predict.predictor import PredictError, Predictor

    bundle = tmp_path / "exported"
    shutil.copytree(exported_model.parent, bundle)
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["unet_pipeline"]["inference"]["channels_last"] = "sometimes"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PredictError, match=r"metadata\.json: unusable inference settings: channels_last .*'sometimes'"):
        Predictor(bundle / exported_model.name)


def test_predictor_writes_mask_in_input_geometry(tmp_path: Path, exported_model: Path) -> None:
    """The 2D predictor on a raw case: a uint8 mask, same size/spacing/origin/direction as the input."""
    import SimpleITK as sitk

    from pipeline.predict.predictor import predict_file

    root = exported_model.parent.parent
    image = root / "data" / "imagesTr" / "synth_000_0000.nii.gz"
    with pipeline_env(root):
        out = predict_file(exported_model, image, tmp_path / "sub" / "mask.nii.gz")
    src, m = sitk.ReadImage(str(image)), sitk.ReadImage(str(out))
    assert m.GetSize() == src.GetSize()
    assert m.GetSpacing() == src.GetSpacing() and m.GetOrigin() == src.GetOrigin()
    assert m.GetDirection() == src.GetDirection()
    values = set(np.unique(sitk.GetArrayFromImage(m)).tolist())
    assert values <= {0, 1, 2} and len(values) > 1
    assert [p.name for p in out.parent.iterdir()] == ["mask.nii.gz"]  # no temp file left behind


def test_prediction_write_on_a_full_disk(tmp_path: Path, exported_model: Path, capsys) -> None:
    """`unet-pipeline predict` with a real file-size limit just below the mask's size: exit 2, one line
    naming the mask, the previous mask byte-identical, no temp; without the limit the re-run completes."""
    image = exported_model.parent.parent / "data" / "imagesTr" / "synth_000_0000.nii.gz"
    out = tmp_path / "out"
    mask = out / "mask.nii.gz"
    argv = ["predict", str(image), "--model", str(exported_model), "-o", str(mask)]
    assert cli(argv, capsys)[0] == 0
    before = digests(out)
    limit = mask.stat().st_size - 1
    limited = run_limited(argv, limit, tmp_path)
    line = one_error_line(limited.stderr)
    assert limited.returncode == 2, limited.stderr[-3000:]
    assert f"cannot write {mask}: file too large or disk full" in line and f"limit of {limit} bytes" in line
    assert digests(out) == before
    assert temps(tmp_path) == []
    assert cli(argv, capsys)[0] == 0
    assert digests(out) == before
