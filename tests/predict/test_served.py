"""The scan-in, mask-out MLflow model (pipeline.predict.served) the export stage registers, on the
session's exported 2D workdir: loaded with `mlflow.pyfunc.load_model` and behind a real
`mlflow models serve`, it answers a base64 NIfTI (or NRRD, or a server path) with the mask
`predict` writes for that image, voxel for voxel, and bad input with a 400 and one line.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers.evaluation import pipeline_env, pipeline_workdir
from helpers.mlflow_serve import assert_same_mask, b64, post, serving


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(cfg, exported dir, models:/ URI of the served model, a held-out raw image, predict's mask of it)."""
    from pipeline.predict.predictor import Predictor

    cfg, root = pipeline_workdir(tmp_path_factory, export=True)
    with pipeline_env(root):
        exported = root / cfg.export.output_dir
        logged = json.loads((exported / "mlflow.json").read_text())
        assert logged["served_model_name"] == cfg.tracking.served_name == "unet-test-pipeline-scan"
        uri = f"models:/{logged['served_model_name']}/{logged['served_model_version']}"
        manifest = json.loads((root / cfg.preprocess.output_dir / "manifest.json").read_text())
        case = next(c for c in manifest["cases"] if c["id"] == manifest["splits"]["val"][0])
        image = root / cfg.data.root / "imagesTr" / f"{case['id']}_0000.nii.gz"
        reference = Predictor(exported).predict(image, tmp_path_factory.mktemp("reference") / "mask.nii.gz")
        yield cfg, exported, uri, image, reference


def _volume_3d(path: Path) -> Path:
    import nibabel as nib

    arr = np.random.default_rng(0).random((12, 12, 6), dtype=np.float32)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


def _huge_header() -> str:
    """A gzipped NIfTI header declaring 30000 x 30000 2D voxels, with no voxels after it (200 bytes)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000))
    header.set_data_dtype(np.uint8)
    return base64.b64encode(gzip.compress(header.binaryblock + b"\0" * 4)).decode("ascii")


def test_pyfunc_mask_equals_predict(served, tmp_path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd
    import SimpleITK as sitk

    _, _, uri, image, reference = served
    model = mlflow.pyfunc.load_model(uri)
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["image"] and sig.outputs.input_names() == ["mask"]
    nrrd = tmp_path / "scan.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(image)), str(nrrd))
    base64_lines = base64.encodebytes(image.read_bytes()).decode("ascii")  # `base64 scan.nii.gz`: wrapped lines
    rows = [b64(image), b64(nrrd), str(image), base64_lines]
    out = model.predict(pd.DataFrame({"image": rows}))
    assert list(out.columns) == ["mask"] and len(out) == len(rows)
    for encoded in out["mask"]:
        assert_same_mask(encoded, reference, tmp_path / "got")


@pytest.mark.parametrize(
    "cell,message",
    [
        ("bm90IGFuIGltYWdl", r"^image: not an image: the bytes are not NIfTI"),
        ("this is no base64 !", r"^image: not an image: neither base64 nor an existing path"),
        ("H4sI" + "A" * 40, r"^image: not an image"),  # a gzip signature, then nothing readable
    ],
)
def test_pyfunc_refuses_what_is_not_an_image(served, cell: str, message: str) -> None:
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(served[2])
    with pytest.raises(MlflowException, match=message) as err:
        model.predict(pd.DataFrame({"image": [cell]}))
    assert err.value.get_http_status_code() == 400 and "\n" not in err.value.message


def test_a_bad_row_is_named_and_an_empty_cell_refused(served) -> None:
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    _, _, uri, image, _ = served
    model = mlflow.pyfunc.load_model(uri)
    with pytest.raises(MlflowException, match=r"^image 1: not an image: the bytes are not NIfTI"):
        model.predict(pd.DataFrame({"image": [b64(image), "bm90IGFuIGltYWdl"]}))
    with pytest.raises(MlflowException, match=r"^image: expected a base64-encoded image .*, got an empty string$"):
        model.predict(pd.DataFrame({"image": [" "]}))


def test_the_size_limit_is_model_config(served) -> None:
    """`max_voxels` is logged as the model's config, and a load can lower it."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from pipeline.predict.served import MAX_VOXELS

    _, _, uri, image, _ = served
    assert mlflow.pyfunc.load_model(uri).model_config == {"max_voxels": MAX_VOXELS}
    small = mlflow.pyfunc.load_model(uri, model_config={"max_voxels": 1000})
    with pytest.raises(MlflowException, match=r"^image: too large: \d+ x \d+ voxels \([\d,]+\), at most 1,000 "):
        small.predict(pd.DataFrame({"image": [b64(image)]}))


def test_mlflow_models_serve_answers_a_scan_with_its_mask(served, tmp_path: Path) -> None:
    _, _, uri, image, reference = served
    with serving(uri, tmp_path / "serve.log") as (port, started):
        print(f"mlflow models serve: /ping after {started:.1f} s")
        status, answer = post(port, b64(image))
        assert status == 200, answer
        assert_same_mask(answer["predictions"][0]["mask"], reference, tmp_path / "got")

        bad = {
            "bm90IGFuIGltYWdl": r"^image: not an image",
            b64(_volume_3d(tmp_path / "volume.nii.gz")): r"^image: a 3D image .* but the model is 2D$",
            _huge_header(): r"^image: too large: 30000 x 30000 voxels",
        }
        for cell, message in bad.items():
            status, answer = post(port, cell)
            assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
            assert "\n" not in answer["message"], answer["message"]
            assert re.search(message, answer["message"]), answer["message"]
