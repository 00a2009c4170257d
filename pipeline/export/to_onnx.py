"""ONNX export with dynamic batch and spatial sizes (torch.onnx dynamo exporter).

A U-Net accepts only some spatial sizes: multiples of 2**depth ('same'), or 2**depth * k + offset
('valid', where every max-pool must see an even size). Dynamo needs the dynamic dims written in
exactly that form, so each spatial dim is `step * k_i + offset` with its own symbol `k_i`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipeline.model import legal_input_size

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# ONNX protobufs cap at 2 GiB; below this the weights are embedded so the .onnx is self-contained
EMBED_LIMIT_BYTES = 1 << 30


def size_rule(depth: int, padding: str) -> tuple[int, int, int]:
    """(step, offset, smallest) such that the legal sizes are step*k + offset, k >= smallest // step."""
    step = 2**depth
    smallest = legal_input_size((1,), depth, padding)[0]
    return step, smallest % step, smallest


def legal_size_expression(depth: int, padding: str) -> str:
    """The legal sizes as a MONAI bundle shape expression in `n` (n=1 gives the smallest)."""
    step, _, smallest = size_rule(depth, padding)
    base = smallest - step
    return f"{step}*n" if base == 0 else f"{step}*n+{base}"


def dynamic_shapes(spatial_dims: int, depth: int, padding: str, max_size: int = 4096) -> dict[str, dict[int, Any]]:
    """Dynamo `dynamic_shapes` for the input: free batch, each spatial dim step*k_i + offset."""
    import torch

    step, offset, smallest = size_rule(depth, padding)
    spec: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1024)}
    names = ("x", "y", "z")
    for i in range(spatial_dims):
        k = torch.export.Dim(f"k_{names[i]}", min=max(1, smallest // step), max=max_size // step)
        spec[2 + i] = step * k + offset if offset else step * k
    return {"x": spec}


def example_size(spatial_dims: int, depth: int, padding: str) -> tuple[int, ...]:
    """An example input size away from the 0/1 specialisation and the minimum (both pin dims)."""
    step, _, smallest = size_rule(depth, padding)
    return tuple(smallest + 2 * step + i * step for i in range(spatial_dims))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Torch-internal noise: a logged warning per missing torchvision op (we never use torchvision)
    and a FutureWarning torch.export raises about its own pytree API."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            yield
    finally:
        log.setLevel(old)


def export_onnx(
    net: Any,
    path: str | Path,
    spatial_dims: int,
    in_channels: int,
    depth: int,
    padding: str,
    opset: int = 18,
    size: Sequence[int] | None = None,
) -> Path:
    """Export `net` (normalised image -> logits) to a single .onnx file with dynamic axes.

    Weights are embedded when small enough (one file to ship); larger models keep the
    exporter's `<name>.data` side file, which must then travel with the .onnx.
    """
    import torch

    path = Path(path)
    net = net.eval().cpu()
    size = tuple(size) if size is not None else example_size(spatial_dims, depth, padding)
    x = torch.randn(1, in_channels, *size)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            net,
            (x,),
            dynamo=True,
            dynamic_shapes=dynamic_shapes(spatial_dims, depth, padding),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            verbose=False,
        )
    n_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    program.save(str(path), external_data=n_bytes >= EMBED_LIMIT_BYTES)
    return path


def check_onnx(path: str | Path) -> None:
    """`onnx.checker` on the saved file (path-based, so external data is checked too)."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
