"""TorchScript export (pipeline.export.torchscript)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from helpers.export import tiny_trained_unet


def test_torchscript_export_raises_no_deprecation_warning(tmp_path: Path) -> None:
    from pipeline.export import export_torchscript, load_torchscript

    net = tiny_trained_unet(2, "same", [4, 8], steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        path = export_torchscript(net, tmp_path / "m.ts")
        module = load_torchscript(path)
    x = torch.randn(1, 1, 16, 24)
    assert torch.equal(module(x), net(x))
