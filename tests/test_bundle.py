"""The export stage's output on a small trained workdir, used the way a clinic would use it.

One export per session (dynamo ONNX export is the slow part), shared with test_predict.py:
exported/ holds the models and the MONAI bundle with honest metadata; `python -m monai.bundle run`,
`unet-pipeline predict` with model.onnx and with model.ts, and the evaluate stage all give the same
mask for the same case; the model registered in MLflow loads back and predicts the same logits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_eval import pipeline_env, pipeline_workdir

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory):
    """(cfg, root, manifest, exported dir) after preprocess, train, evaluate and export; cwd and
    MLFLOW_TRACKING_URI point into the workdir while the module's tests run."""
    cfg, root = pipeline_workdir(tmp_path_factory, export=True)
    with pipeline_env(root):
        manifest = json.loads((root / cfg.preprocess.output_dir / "manifest.json").read_text())
        yield cfg, root, manifest, root / cfg.export.output_dir


@pytest.fixture(scope="module")
def val_case(workdir) -> dict:
    _, _, manifest, _ = workdir
    by_id = {c["id"]: c for c in manifest["cases"]}
    return by_id[manifest["splits"]["val"][0]]


def _mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(voxels with singleton axes dropped, RAS affine) of a mask file, via nibabel."""
    import nibabel as nib

    img = nib.load(str(path))
    return np.squeeze(np.asarray(img.dataobj)), img.affine


def test_exported_folder_layout_and_metadata(workdir) -> None:
    import hashlib

    cfg, root, manifest, exported = workdir
    for rel in ("model.ts", "model.onnx", "configs/metadata.json", "configs/inference.json", "models/model.ts"):
        assert (exported / rel).is_file(), rel
    meta = json.loads((exported / "configs/metadata.json").read_text())
    up = meta["unet_pipeline"]
    for rel in ("model.onnx", "model.ts", "models/model.ts"):
        assert up["models"][rel]["sha256"] == hashlib.sha256((exported / rel).read_bytes()).hexdigest(), rel
        assert up["models"][rel]["bytes"] == (exported / rel).stat().st_size
    spec = manifest["preprocessing"]
    assert up["preprocessing"] == spec
    assert up["spacing"] == spec["spacing"] and up["orientation"] == spec["orientation"]
    assert up["intensity_normalization"] == spec["normalization"]
    assert up["labels"] == manifest["labels"] == ["background", "round", "angular"]
    assert up["padding"] == cfg.model.padding == "valid"
    assert up["inference"]["tile_size"] == list(cfg.inference.tile_size)
    assert up["output_tile"] == list(cfg.inference.tile_size) and up["input_tile"] == [64, 64]
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["inputs"]["image"]["dtype"] == "float32"
    assert fmt["outputs"]["pred"]["num_channels"] == 3
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "round", "2": "angular"}
    assert up["verification"]["passed"] and all(
        c["max_abs_diff"] <= cfg.export.tolerance for c in up["verification"]["checks"]
    )
    config = json.loads((exported / "configs/inference.json").read_text())
    assert config["preprocessing_spec"] == spec
    assert config["inferer"]["_target_"] == "pipeline.predict.inferer.UNetInferer"
    assert config["inferer"]["settings"]["padding"] == "valid"


def test_bundle_run_predict_onnx_ts_and_evaluate_give_one_mask(workdir, val_case, tmp_path: Path) -> None:
    from pipeline.cli import main

    cfg, root, _, exported = workdir
    image = (root / val_case["source_images"][0]).resolve()  # the manifest's path is relative to the workdir

    # MONAI's own runner on the bundle, as MONAI Label / Deploy would start it
    bundle_mask, bundle_affine = _mask(_bundle_run(exported, image, tmp_path / "bundle_out"))

    # the standalone predictor through the CLI, with both exported runtimes
    masks = {}
    for model in ("model.onnx", "model.ts", "models/model.ts"):
        out = tmp_path / f"{model.replace('/', '_')}.nii.gz"
        assert main(["predict", str(image), "--model", str(exported / model), "-o", str(out)]) == 0
        masks[model] = _mask(out)

    stage_mask, stage_affine = _mask(root / cfg.evaluate.predictions_dir / f"{val_case['id']}.nii.gz")
    source, source_affine = _mask(image)
    assert stage_mask.shape == source.shape
    assert len(np.unique(stage_mask)) > 1, "a trained model predicts some foreground"
    for name, (mask, affine) in {"bundle": (bundle_mask, bundle_affine), **masks}.items():
        assert mask.shape == source.shape, name
        np.testing.assert_allclose(affine, source_affine, atol=1e-6, err_msg=name)
        mismatch = int((mask != stage_mask).sum())
        assert mismatch == 0, f"{name}: {mismatch} voxels differ from the evaluate stage's mask"


def _example_input(workdir, val_case) -> np.ndarray:
    """A batch of two normalised crops of the held-out case at the bundle's legal input tile."""
    from pipeline.model.shapes import fit_to_size

    cfg, root, _, exported = workdir
    meta = json.loads((exported / "configs/metadata.json").read_text())
    image = np.load(root / cfg.preprocess.output_dir / val_case["image"])
    tile = meta["unet_pipeline"]["input_tile"]
    a = fit_to_size(image, tile)
    b = fit_to_size(image[:, ::-1, :].copy(), tile)
    return np.stack([a, b]).astype(np.float32)


def test_registered_model_loads_from_mlflow_and_predicts(workdir, val_case) -> None:
    import mlflow.onnx
    import mlflow.pyfunc
    import onnxruntime as ort
    import torch
    from mlflow.tracking import MlflowClient

    from pipeline.predict.runtime import OnnxNet
    from pipeline.training.checkpoint import load_trained_net

    cfg, root, _, exported = workdir
    logged = json.loads((exported / "mlflow.json").read_text())
    name, version = logged["registered_model_name"], logged["registered_model_version"]
    assert name == cfg.tracking.registered_model_name and version is not None
    client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    mv = client.get_model_version(name, str(version))
    run_ref = json.loads((root / cfg.train.member_dir(0) / "mlflow_run.json").read_text())
    assert mv.run_id == run_ref["run_id"] == logged["run_id"], "registered from the pipeline's own run"

    uri = f"models:/{name}/{version}"
    x = _example_input(workdir, val_case)
    reference = OnnxNet(exported / "model.onnx")(torch.from_numpy(x)).numpy()  # ONNX Runtime on the shipped file

    proto = mlflow.onnx.load_model(uri)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (from_registry,) = session.run(None, {"image": x})
    assert from_registry.shape == (2, 3, 48, 48)
    np.testing.assert_allclose(from_registry, reference, atol=1e-5)

    pyfunc = mlflow.pyfunc.load_model(uri)
    out = pyfunc.predict({"image": x})
    logits = out["logits"] if isinstance(out, dict) else np.asarray(out)
    np.testing.assert_allclose(np.asarray(logits), reference, atol=1e-5)

    net, _ = load_trained_net(root / cfg.train.member_dir(0) / "best.pt", "cpu")
    with torch.no_grad():
        eager = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(reference, eager, atol=cfg.export.tolerance)

    # the TorchScript model logged to the same run loads and agrees too
    import warnings

    import mlflow.pytorch

    from pipeline.model.jit import quiet_jit

    with quiet_jit(), warnings.catch_warnings():  # MLflow's torch.load notes that it got a TorchScript archive
        warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive", category=UserWarning)
        ts = mlflow.pytorch.load_model(logged["torchscript_model_uri"])
    with torch.no_grad():
        np.testing.assert_allclose(ts(torch.from_numpy(x)).numpy(), reference, atol=1e-4)

    artifacts = {Path(a.path).name for a in client.list_artifacts(run_ref["run_id"], "bundle/configs")}
    assert artifacts == {"metadata.json", "inference.json"}


def _bundle_run(exported: Path, image: Path, out_dir: Path, pattern: str = "*.nii.gz") -> Path:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(exported / "configs/inference.json"),
        "--meta_file",
        str(exported / "configs/metadata.json"),
        "--bundle_root",
        str(exported),
        "--input_image",
        str(image),
        "--output_dir",
        str(out_dir),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=out_dir.parent,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = list(out_dir.glob(pattern))
    return out


def test_bundle_run_equals_predictor_on_3d_same_lps_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3D same-padding model (MONAI's SlidingWindowInferer in the bundle) on an LPS, anisotropic case
    that the recorded spec reorients to RAS and resamples: bundle mask == predictor mask, in the
    source geometry."""
    import SimpleITK as sitk
    from helpers_export import run_stage

    from pipeline.predict.predictor import predict_file

    monkeypatch.chdir(tmp_path)  # MLflow artifacts (./mlruns) of this workspace's own sqlite store
    info = run_stage(tmp_path / "ws", "3d-same", registered_model_name="unet-test-3d")
    exported, image = info["exported"], info["val_image"]
    config = json.loads((exported / "configs/inference.json").read_text())
    assert config["inferer"]["_target_"] == "SlidingWindowInferer"
    assert config["preprocessing_spec"]["orientation"] == "RAS" and config["preprocessing_spec"]["spacing"]

    bundle_mask, bundle_affine = _mask(_bundle_run(exported, image, tmp_path / "bundle_out"))
    pred_path = predict_file(exported / "model.onnx", image, tmp_path / "pred.nii.gz")
    pred_mask, pred_affine = _mask(pred_path)
    source, source_affine = _mask(image)
    assert bundle_mask.shape == pred_mask.shape == source.shape
    np.testing.assert_allclose(bundle_affine, source_affine, atol=1e-5)
    np.testing.assert_allclose(pred_affine, source_affine, atol=1e-5)
    assert int((bundle_mask != pred_mask).sum()) == 0
    src, pred = sitk.ReadImage(str(image)), sitk.ReadImage(str(pred_path))
    assert pred.GetSize() == src.GetSize()
    np.testing.assert_allclose(pred.GetDirection(), src.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(pred.GetOrigin(), src.GetOrigin(), atol=1e-5)


def test_bundle_inferer_mirrors_only_the_training_flip_axes() -> None:
    """Settings from a config with train.augment.flip_axes=[0] and TTA on: the bundle's inferer, as
    MONAI's ConfigParser builds it from inference.json, averages over identity + axis-0 flips only."""
    import torch
    from helpers_eval import RampNet, ramp_tta
    from helpers_train import make_config
    from monai.bundle import ConfigParser

    from pipeline.export.inference_config import inference_config
    from pipeline.inference import InferenceSettings
    from pipeline.model.args import ModelArgs
    from pipeline.predict.metadata import PipelineSection

    cfg = make_config(
        2,
        "same",
        model={"features": [4, 8]},
        inference={"tta": True, "tile_size": [8, 12]},
        train={"patch_size": [8, 12], "augment": {"flip_axes": [0]}},
    )
    settings = InferenceSettings.from_config(cfg)
    assert settings.tta and settings.tta_axes == (0,)
    assert InferenceSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    section = PipelineSection(
        model_args=ModelArgs(2, 1, 2, (4, 8), "same", "batch", 0.0, "transpose"),
        labels=("background", "object"),
        preprocessing={},
        inference=settings.to_dict(),
        models={},
    )
    parser = ConfigParser(inference_config(section))
    inferer = parser.get_parsed_content("inferer")
    assert parser.get("inferer")["_target_"] == "pipeline.predict.inferer.UNetInferer"
    # RampNet ignores its input and answers a ramp over both axes; its TTA over axis 0 alone has a
    # closed form that differs from the all-axes one
    image = torch.zeros(1, 1, 8, 12, dtype=torch.float64)
    got = inferer(image, RampNet())[0, 0].numpy()
    np.testing.assert_allclose(got, ramp_tta((8, 12), [0]), atol=1e-6)
    assert not np.allclose(got, ramp_tta((8, 12), [0, 1]), atol=1e-3)
