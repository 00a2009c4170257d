"""Export verification (pipeline.export.verify) of small trained 2D/3D U-Nets (valid and same padding):
parity of ONNX and TorchScript with PyTorch eager at two input sizes and batch sizes, and a
verification that fails when the runtimes disagree or the ONNX file is invalid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.export import CONFIGS, blob_image, tiny_trained_unet

from pipeline.export import ExportVerificationError, verification_sizes, verify_exports
from pipeline.model import legal_input_size


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_at_two_sizes(exported: dict, name: str) -> None:
    e = exported[name]
    dims, depth, padding = e["dims"], e["depth"], e["padding"]
    image, _ = blob_image(dims, 40, seed=1)
    tile = legal_input_size((12,) * dims, depth, padding)
    sizes = verification_sizes(tile, depth, padding)
    assert sizes[0] != sizes[1]
    report = verify_exports(e["net"], image, sizes, 1e-4, e["onnx"], e["ts"])
    assert report["passed"] and report["onnx_checker"] == "passed"
    shapes = {tuple(c["input_shape"]) for c in report["checks"]}
    assert shapes == {(1, 1, *sizes[0]), (2, 1, *sizes[1])}
    assert {c["runtime"] for c in report["checks"]} == {"onnxruntime", "torchscript"}
    assert all(c["max_abs_diff"] <= 1e-4 for c in report["checks"])


def test_verification_fails_when_eager_and_exports_disagree(exported: dict) -> None:
    e = exported["2d-valid"]
    net = tiny_trained_unet(2, "valid", [4, 8])
    with torch.no_grad():
        net.head.bias.add_(1e-2)  # the exported files keep the old bias
    image, _ = blob_image(2, 40)
    sizes = verification_sizes(legal_input_size((12, 12), 1, "valid"), 1, "valid")
    with pytest.raises(ExportVerificationError, match=r"onnxruntime differs from eager by .* > 0\.0001"):
        verify_exports(net, image, sizes, 1e-4, e["onnx"], e["ts"])


def test_verification_rejects_invalid_onnx(tmp_path: Path, exported: dict) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(Path(exported["2d-valid"]["onnx"]).read_bytes()[:200])
    image, _ = blob_image(2, 40)
    with pytest.raises(ExportVerificationError, match="onnx.checker rejected"):
        verify_exports(exported["2d-valid"]["net"], image, [(28, 28)], 1e-4, bad, None)
