"""The model the export stage registers in MLflow (pipeline.tracking.registry), on the session's small
trained and exported workdir: it loads back from the registry and predicts the logits of the shipped
ONNX file, the eager net and the TorchScript model logged to the same run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.evaluation import pipeline_env, pipeline_workdir


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
