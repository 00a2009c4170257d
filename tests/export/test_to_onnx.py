"""ONNX export (pipeline.export.to_onnx): the graph's batch and spatial axes are symbolic, and the
exported runtimes take sizes other than the export example (dynamic axes really work)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.export import CONFIGS

from pipeline.export import size_rule
from pipeline.model import output_size
from pipeline.predict import OnnxNet, TorchScriptNet, load_net


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
