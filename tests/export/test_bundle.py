"""The export stage's MONAI bundle (pipeline.export.bundle) on a small trained workdir, used the way a
clinic would use it.

One export per session (dynamo ONNX export is the slow part), shared with the predictor tests:
exported/ holds the models and the MONAI bundle with honest metadata; `python -m monai.bundle run`,
`unet-pipeline predict` with model.onnx and with model.ts, and the evaluate stage all give the same
mask for the same case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.evaluation import pipeline_env, pipeline_workdir
from helpers.export import bundle_run


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
    assert config["inferer"]["_target_"] == "scripts.unet_pipeline.predict.inferer.UNetInferer"
    assert not any("pipeline." in line and "unet_pipeline" not in line for line in config["imports"])
    assert (exported / "scripts/unet_pipeline/inference/whole_image.py").is_file()
    assert config["inferer"]["settings"]["padding"] == "valid"


def test_bundle_run_predict_onnx_ts_and_evaluate_give_one_mask(workdir, val_case, tmp_path: Path) -> None:
    from pipeline.cli import main

    cfg, root, _, exported = workdir
    image = (root / val_case["source_images"][0]).resolve()  # the manifest's path is relative to the workdir

    # MONAI's own runner on the bundle, as MONAI Label / Deploy would start it
    bundle_mask, bundle_affine = _mask(bundle_run(exported, image, tmp_path / "bundle_out"))

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


def test_bundle_run_equals_predictor_on_3d_same_lps_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3D same-padding model on an LPS, anisotropic case that the recorded spec reorients to RAS and
    resamples: bundle mask == predictor mask, in the source geometry, and the probabilities behind
    them the same (the entropy maps of `--uncertainty`: MONAI's SlidingWindowInferer, which tiles an
    image the predictor runs whole, moved them by up to 0.5 and a trained model's mask with them)."""
    import SimpleITK as sitk
    from helpers.export import run_stage

    from pipeline.predict.predictor import Predictor

    monkeypatch.chdir(tmp_path)  # MLflow artifacts (./mlruns) of this workspace's own sqlite store
    info = run_stage(tmp_path / "ws", "3d-same", registered_model_name="unet-test-3d")
    exported, image = info["exported"], info["val_image"]
    config = json.loads((exported / "configs/inference.json").read_text())
    assert config["inferer"]["_target_"] == "scripts.unet_pipeline.predict.inferer.UNetInferer"
    assert config["preprocessing_spec"]["orientation"] == "RAS" and config["preprocessing_spec"]["spacing"]

    bundle_out = tmp_path / "bundle_out"
    extra = ("--uncertainty", "true")
    bundle_mask, bundle_affine = _mask(bundle_run(exported, image, bundle_out, "*_seg.nii.gz", extra))
    pred_path = Predictor(exported / "model.onnx", uncertainty=True).predict(image, tmp_path / "pred.nii.gz")
    bundle_map = _mask(next(bundle_out.glob("*_uncertainty.nii.gz")))[0]
    np.testing.assert_allclose(bundle_map, _mask(tmp_path / "pred_uncertainty.nii.gz")[0], atol=1e-4)
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


def test_model_ts_carries_both_configs_for_monai_deploy(workdir) -> None:
    """MONAI Deploy's `-m model.ts` reads the configs MONAI embeds in the TorchScript file; ours are
    the bundle's own metadata.json (less the file hashes, which a file cannot hold of itself) and
    inference.json, read with MONAI's own loader."""
    import zipfile

    import torch
    from monai.data import load_net_with_metadata

    _, _, _, exported = workdir
    on_disk = json.loads((exported / "configs/metadata.json").read_text())
    config = json.loads((exported / "configs/inference.json").read_text())
    for rel in ("model.ts", "models/model.ts"):
        net, meta, extra = load_net_with_metadata(str(exported / rel), more_extra_files=("inference.json",))
        assert isinstance(net, torch.jit.ScriptModule), rel
        assert json.loads(extra["inference.json"]) == config, rel
        assert meta["network_data_format"] == on_disk["network_data_format"], rel
        expected = {k: v for k, v in on_disk["unet_pipeline"].items() if k != "models"}
        assert meta["unet_pipeline"] == expected, rel
        assert "models" not in meta["unet_pipeline"], rel
        with zipfile.ZipFile(exported / rel) as archive:  # MONAI Deploy looks under <file stem>/extra/
            assert "model/extra/inference.json" in archive.namelist(), rel
