"""The export tests' tiny trained U-Nets, each exported to ONNX and TorchScript once per session."""

from __future__ import annotations

import pytest
from helpers.export import CONFIGS, export_both, tiny_trained_unet


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each config trained a few steps and exported once for the session (dynamo export is slow)."""
    out = {}
    for name, (dims, padding, features) in CONFIGS.items():
        net = tiny_trained_unet(dims, padding, features)
        out[name] = export_both(net, tmp_path_factory.mktemp(name))
    return out
