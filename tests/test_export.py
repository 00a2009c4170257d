"""Export of small trained 2D/3D U-Nets (valid and same padding) to ONNX and TorchScript: parity
with PyTorch eager at two input sizes and batch sizes (dynamic axes really work), graph facts,
and a verification that fails when the runtimes disagree."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_export import CONFIGS, blob_image, export_both, tiny_trained_unet

from pipeline.export import ExportVerificationError, size_rule, verification_sizes, verify_exports
from pipeline.model import legal_input_size, output_size
from pipeline.predict import OnnxNet, TorchScriptNet, load_net


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each config trained a few steps and exported once for the whole module (dynamo export is slow)."""
    out = {}
    for name, (dims, padding, features) in CONFIGS.items():
        net = tiny_trained_unet(dims, padding, features)
        out[name] = export_both(net, tmp_path_factory.mktemp(name))
    return out


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


@pytest.mark.parametrize("name", list(CONFIGS))
def test_runtimes_take_sizes_other_than_the_export_example(exported: dict, name: str) -> None:
    """Independent of verify_exports: a third, anisotropic legal size and batch 3 through both runtimes."""
    e = exported[name]
    dims, depth, padding = e["dims"], e["depth"], e["padding"]
    step, _, smallest = size_rule(depth, padding)
    size = tuple(smallest + step * (i % 3) for i in range(dims))
    x = torch.randn(3, 1, *size)
    with torch.no_grad():
        ref = e["net"](x)
    assert tuple(ref.shape[2:]) == output_size(size, depth, padding)
    for runtime in (OnnxNet(e["onnx"]), TorchScriptNet(e["ts"]), load_net(e["onnx"]), load_net(e["ts"])):
        out = runtime(x)
        assert out.shape == ref.shape
        assert float((out - ref).abs().max()) <= 1e-4


@pytest.mark.parametrize("name", ["2d-valid", "3d-same"])
def test_onnx_graph_has_symbolic_batch_and_spatial_axes(exported: dict, name: str) -> None:
    import onnx

    e = exported[name]
    model = onnx.load(str(e["onnx"]))
    assert not Path(str(e["onnx"]) + ".data").exists(), "small models embed their weights"
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert (inp.name, out.name) == ("image", "logits")
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[1].dim_value == 1
    symbolic = [d.dim_param for i, d in enumerate(in_dims) if i != 1]
    assert all(symbolic), f"batch and spatial axes must be symbolic, got {in_dims}"
    assert model.opset_import[0].version == 18 or any(o.version == 18 for o in model.opset_import if o.domain == "")


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


def test_torchscript_export_raises_no_deprecation_warning(tmp_path: Path) -> None:
    from pipeline.export import export_torchscript, load_torchscript

    net = tiny_trained_unet(2, "same", [4, 8], steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        path = export_torchscript(net, tmp_path / "m.ts")
        module = load_torchscript(path)
    x = torch.randn(1, 1, 16, 24)
    assert torch.equal(module(x), net(x))


def test_load_net_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        load_net(tmp_path / "nope.onnx")
    other = tmp_path / "model.pkl"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model\.pkl.*\.onnx or \.ts"):
        load_net(other)


def test_fit_to_size_crops_and_mirror_pads() -> None:
    from pipeline.export import fit_to_size

    image = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    out = fit_to_size(image, (9, 4))
    assert out.shape == (2, 9, 4)
    np.testing.assert_array_equal(out[:, 2:7], image[:, :, 1:5])
    np.testing.assert_array_equal(out[:, 1], image[:, 1, 1:5])  # mirrored, edge not repeated
