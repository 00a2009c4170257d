"""Small nets and arrays shared by the inference, metrics and evaluate tests."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.model import UNet


def small_unet(
    spatial_dims: int,
    padding: str = "valid",
    features=(4, 8, 16),
    out_channels: int = 3,
    seed: int = 0,
    in_channels: int = 1,
    dtype=torch.float64,
) -> UNet:
    """A tiny random U-Net in eval mode (float64 so equality checks can be tight)."""
    torch.manual_seed(seed)
    return UNet(spatial_dims, in_channels, out_channels, list(features), padding=padding).to(dtype).eval()


def reflect_pad_np(image: np.ndarray, low: int, high: list[int]) -> np.ndarray:
    """numpy's mirror padding of the spatial axes of (C, *spatial): an independent reference."""
    return np.pad(image, [(0, 0)] + [(low, h) for h in high], mode="reflect")


class PointwiseNet(torch.nn.Module):
    """A 1x1(x1) convolution with constant weights: no context, so any correct tiling must reproduce
    its whole-image output exactly, whatever the window weights."""

    def __init__(
        self, spatial_dims: int, in_channels: int = 1, out_channels: int = 2, weight: float = 0.5, bias: float = 0.1
    ):
        super().__init__()
        conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
        self.conv = conv(in_channels, out_channels, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.fill_(weight)
            for k in range(out_channels):
                self.conv.bias[k] = bias * (k + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class RampNet(torch.nn.Module):
    """Ignores its input: logits (ramp, 0) with ramp = i + 2 j over the 2D grid it is given. Its
    flip-TTA answer is known in closed form (`ramp_tta`), without running any inference code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = torch.arange(x.shape[2], dtype=x.dtype)[:, None]
        j = torch.arange(x.shape[3], dtype=x.dtype)[None, :]
        ramp = (i + 2 * j).expand(x.shape[0], 1, -1, -1) / 8
        return torch.cat([ramp, torch.zeros_like(ramp)], 1)


def ramp_tta(shape: tuple[int, int], axes: list[int]) -> np.ndarray:
    """p(class 0) of RampNet on one window of `shape`, averaged over the flips of `axes` (numpy)."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ramp = (i + 2 * j) / 8.0
    maps = []
    for r in range(len(axes) + 1):
        for combo in __import__("itertools").combinations(axes, r):
            maps.append(np.flip(1 / (1 + np.exp(-ramp)), combo) if combo else 1 / (1 + np.exp(-ramp)))
    return np.mean(maps, axis=0)


# --- one trained pipeline workdir (synth -> preprocess -> train -> evaluate [-> export]) -------------------------
# Built once per test session and shared by stages/test_evaluate.py, export/test_bundle.py and
# tracking/test_registry.py (and the `exported_model` fixture): training and the dynamo
# ONNX export are the slow parts, and every check on their outputs is read-only.

PIPELINE_CONFIG: dict = {
    "name": "test-synthetic-2d",
    "seed": 0,
    "data": {"root": "data", "spatial_dims": 2, "modality": "other", "in_channels": 1},
    "preprocess": {"normalization": "zscore", "folds": 3, "fold": 0, "num_workers": 0},
    "model": {"features": [8, 16], "padding": "valid", "norm": "batch"},
    "train": {
        "epochs": 2,
        "iterations_per_epoch": 6,
        "batch_size": 4,
        "patch_size": [32, 32],
        "lr": 0.01,
        "augment": {"elastic": False, "rotate": False},
    },
    "inference": {"tile_size": [48, 48], "batch_size": 4},
    "tracking": {"experiment": "test-pipeline", "registered_model_name": "unet-test-pipeline"},
}

_WORKDIRS: dict = {}


def _pipeline_env(root):
    """chdir into the workdir (MLflow puts artifacts under ./mlruns) and point MLflow at its sqlite store."""
    import pytest

    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    return mp


def pipeline_workdir(tmp_path_factory, export: bool = False):
    """(Config, workdir) with data/, preprocessed/, checkpoints/, predictions/, reports/ and, with
    `export`, exported/; built once per session. Callers enter `pipeline_env(root)` while using it."""
    from pipeline.config import parse_config
    from pipeline.data.synth import synthesize
    from pipeline.stages import evaluate, preprocess, train

    if "root" not in _WORKDIRS:
        root = tmp_path_factory.mktemp("pipeline")
        cfg = parse_config(PIPELINE_CONFIG)
        mp = _pipeline_env(root)
        try:
            synthesize(root / "data", dims=2, cases=6, seed=0)
            preprocess.run(cfg)
            train.run(cfg)
            evaluate.run(cfg, device="cpu")
        finally:
            mp.undo()
        _WORKDIRS.update(root=root, cfg=cfg)
    root, cfg = _WORKDIRS["root"], _WORKDIRS["cfg"]
    if export and not _WORKDIRS.get("exported"):
        from pipeline.stages import export as export_stage

        mp = _pipeline_env(root)
        try:
            export_stage.run(cfg)
        finally:
            mp.undo()
        _WORKDIRS["exported"] = True
    return cfg, root


def pipeline_env(root):
    """Context for tests that read the workdir: cwd and MLFLOW_TRACKING_URI as the stages saw them."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        mp = _pipeline_env(root)
        try:
            yield
        finally:
            mp.undo()

    return ctx()
