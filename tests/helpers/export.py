"""Tiny trained U-Nets, synthetic images and exported copies shared by the export and predict tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.model import UNet, legal_input_size, output_size

REPO_ROOT = Path(__file__).resolve().parents[2]
MONAI_ONLY = Path(__file__).resolve().parent / "monai_only"  # its sitecustomize hides this project

# id -> (spatial_dims, padding, features): small enough to export in seconds
CONFIGS: dict[str, tuple[int, str, list[int]]] = {
    "2d-valid": (2, "valid", [4, 8]),
    "2d-same": (2, "same", [4, 8, 16]),
    "3d-valid": (3, "valid", [4, 8]),
    "3d-same": (3, "same", [4, 8]),
}


def blob_image(spatial_dims: int, size: int, channels: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(z-scored image (C, *spatial) float32, label (*spatial) uint8 with classes 0..2): two noisy balls."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * spatial_dims, indexing="ij"), axis=0).astype(np.float32)
    label = np.zeros((size,) * spatial_dims, np.uint8)
    for k, (c, r) in enumerate([(0.35, 0.2), (0.7, 0.15)], start=1):
        centre = np.full(spatial_dims, c * size, np.float32)[:, None]
        dist = np.sqrt(((grid.reshape(spatial_dims, -1) - centre) ** 2).sum(0)).reshape(label.shape)
        label[dist < r * size] = k
    image = label.astype(np.float32)[None].repeat(channels, 0) + rng.normal(0, 0.3, (channels, *label.shape)).astype(
        np.float32
    )
    image = (image - image.mean()) / image.std()
    return image.astype(np.float32), label


def tiny_trained_unet(
    spatial_dims: int,
    padding: str,
    features: list[int],
    in_channels: int = 1,
    out_channels: int = 3,
    steps: int = 4,
    seed: int = 0,
) -> UNet:
    """A U-Net given a few optimiser steps on a synthetic case, so its weights are not the init's."""
    torch.manual_seed(seed)
    net = UNet(spatial_dims, in_channels, out_channels, features, padding=padding)
    depth = len(features) - 1
    size = legal_input_size((12,) * spatial_dims, depth, padding)[0]
    image, label = blob_image(spatial_dims, size, in_channels, seed)
    out = output_size((size,) * spatial_dims, depth, padding)[0]
    lo = (size - out) // 2
    target = torch.from_numpy(label[tuple(slice(lo, lo + out) for _ in range(spatial_dims))].astype(np.int64))[None]
    x = torch.from_numpy(image)[None]
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), target)
        loss.backward()
        opt.step()
    return net.eval()


def export_both(net: UNet, out: Path, opset: int = 18) -> dict[str, Any]:
    """Export `net` to out/model.onnx and out/model.ts; returns paths and shape facts."""
    from pipeline.export import export_onnx, export_torchscript

    out.mkdir(parents=True, exist_ok=True)
    dims, depth, padding = net.spatial_dims, net.depth, net.padding
    in_ch = net.encoders[0][0].in_channels
    onnx_path = export_onnx(net, out / "model.onnx", dims, in_ch, depth, padding, opset=opset)
    ts_path = export_torchscript(net, out / "model.ts")
    return {"net": net, "onnx": onnx_path, "ts": ts_path, "dims": dims, "depth": depth, "padding": padding}


# --- a small pipeline workspace: raw NIfTI cases, preprocessed/, a checkpoint, a config --------------------------

WORKSPACES: dict[str, dict[str, Any]] = {
    # name -> spatial_dims, padding, features, raw size, raw spacing, spec orientation/spacing, tile
    "2d-valid": {
        "dims": 2,
        "padding": "valid",
        "features": [4, 8],
        "size": (30, 26),
        "spacing": (0.8, 1.2),
        "orientation": "RA",
        "target": [1.0, 1.0],
        "tile": [12, 12],
    },
    "3d-same": {
        "dims": 3,
        "padding": "same",
        "features": [4, 8],
        "size": (18, 20, 14),
        "spacing": (1.0, 0.9, 1.5),
        "orientation": "RAS",
        "target": [1.2, 1.2, 1.2],
        "tile": [8, 8, 8],
    },
}


def _raw_affine(spacing: tuple[float, ...]) -> np.ndarray:
    """An LPS-flipped, anisotropic affine, so orientation and resampling really have to be inverted."""
    d = len(spacing)
    aff = np.eye(4)
    aff[0, 0], aff[1, 1] = -spacing[0], -spacing[1]
    if d == 3:
        aff[2, 2] = spacing[2]
    aff[:3, 3] = [12.0, -7.0, 3.0]
    return aff


def write_raw_case(
    path: Path, dims: int, size: tuple[int, ...], spacing: tuple[float, ...], seed: int, label_path: Path | None = None
) -> Path:
    """A raw NIfTI image (and optionally its label) with the workspace's geometry."""
    import nibabel as nib

    image, label = blob_image(dims, max(size), seed=seed)
    crop = tuple(slice(0, s) for s in size)
    raw = (image[0][crop] * 40.0 + 100.0).astype(np.float32)  # raw units, not normalised
    aff = _raw_affine(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(raw, aff), str(path))
    if label_path is not None:
        label_path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(label[crop].astype(np.uint8), aff), str(label_path))
    return path


def make_workspace(
    root: Path,
    name: str,
    *,
    n_cases: int = 2,
    registered_model_name: str = "unet-test",
    label_codes: dict[str, Any] | None = None,
    train_steps: int = 4,
    evaluate: dict[str, Any] | None = None,
) -> Any:
    """data/ with raw NIfTI cases (the canonical layout), preprocessed/ written by the real preprocess
    stage, a checkpoint from `tiny_trained_unet` saved like the train stage does, and the Config."""
    from pipeline.config import parse_config
    from pipeline.data.canonical import build_dataset_json, dumps
    from pipeline.model import model_args as make_model_args
    from pipeline.stages import preprocess
    from pipeline.training.checkpoint import save_checkpoint

    w = WORKSPACES[name]
    dims = w["dims"]
    ids = [f"case{i:02d}" for i in range(n_cases)]
    for i, cid in enumerate(ids):
        label_path = root / "data" / "labelsTr" / f"{cid}.nii.gz"
        write_raw_case(root / "data" / "imagesTr" / f"{cid}_0000.nii.gz", dims, w["size"], w["spacing"], i, label_path)
    labels = ["background", "a", "b"]
    dataset = build_dataset_json(
        name=name,
        description="export test",
        spatial_dims=dims,
        modality="mr",
        channel_names={"0": "MR"},
        labels=labels,
        label_mapping=None,
        source="tests/helpers/export.py",
        case_ids=ids,
    )
    (root / "data" / "dataset.json").write_text(dumps(dataset))
    raw = {
        "name": f"export-test-{name}",
        "data": {"root": str(root / "data"), "spatial_dims": dims, "modality": "mr", "labels": labels},
        "preprocess": {
            "output_dir": str(root / "preprocessed"),
            "orientation": w["orientation"],
            "target_spacing": w["target"],
            "normalization": "zscore",
            "num_workers": 0,
            "split": {"train": ids[:-1], "val": ids[-1:]},
        },
        "model": {"features": w["features"], "padding": w["padding"]},
        "train": {"output_dir": str(root / "checkpoints"), "patch_size": w["tile"]},
        "inference": {"tile_size": w["tile"], "batch_size": 2, "overlap": 0.25},
        "evaluate": {
            "predictions_dir": str(root / "predictions"),
            "reports_dir": str(root / "reports"),
            **(evaluate or {}),
        },
        "tracking": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "experiment": "export-test",
            "registered_model_name": registered_model_name,
        },
        "export": {"output_dir": str(root / "exported")},
        "labels": label_codes or {},
    }
    cfg = parse_config(raw)
    preprocess.run(cfg)
    net = tiny_trained_unet(dims, w["padding"], w["features"], steps=train_steps)
    args = make_model_args(cfg.model, dims, 1, len(labels))
    save_checkpoint(
        {"model": net.state_dict(), "model_args": args, "epoch": 1, "best_metric": 0.5},
        root / "checkpoints" / "fold_0" / "best.pt",
    )
    return cfg


def run_stage(root: Path, name: str, **kwargs: Any) -> dict[str, Any]:
    """Build the workspace and run the export stage in it; returns what the tests need."""
    from pipeline.stages import export

    cfg = make_workspace(root, name, **kwargs)
    export.run(cfg)
    return {
        "cfg": cfg,
        "root": root,
        "exported": Path(cfg.export.output_dir),
        "name": name,
        "val_image": root / "data" / "imagesTr" / "case01_0000.nii.gz",
    }


def bundle_run(
    exported: Path,
    image: Path,
    out_dir: Path,
    pattern: str = "*.nii.gz",
    extra: tuple[str, ...] = (),
    stdout: list[str] | None = None,
) -> Path:
    """`python -m monai.bundle run` of an exported bundle on one image, as MONAI Label / Deploy would
    start it, in an interpreter where this project (and any package outside MONAI's own set) cannot be
    imported; returns the one output file matching `pattern` in `out_dir`. `extra`: more arguments
    (config overrides such as `--explain decoders.-1`); `stdout`: gets what the run printed."""
    env = {**os.environ, "PYTHONPATH": str(MONAI_ONLY)}  # the bundle must not need this project
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
        *extra,
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
    if stdout is not None:
        stdout.append(proc.stdout)
    (out,) = list(out_dir.glob(pattern))
    return out
