"""Parity checks the export stage must pass before anything is published.

ONNX Runtime and TorchScript are compared with PyTorch eager on crops of a real held-out case at
two different legal sizes and batch sizes, so a dynamic axis that silently got pinned fails here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.export.to_onnx import check_onnx, size_rule
from pipeline.model.args import ModelArgs
from pipeline.model.shapes import fit_to_size


class ExportVerificationError(PipelineError, RuntimeError):
    """An exported model disagrees with the eager network (or is not valid ONNX)."""


def verification_sizes(tile_input: Sequence[int], depth: int, padding: str) -> list[tuple[int, ...]]:
    """Two distinct legal sizes: the inference tile, and one step smaller (or larger) per axis."""
    step, _, smallest = size_rule(depth, padding)
    first = tuple(int(s) for s in tile_input)
    second = tuple(s - step if s - step >= smallest else s + step for s in first)
    # make the second size anisotropic too: the last axis moves one more step
    second = second[:-1] + (second[-1] + step,)
    return [first, second]


def verify_exports(
    net: Any,
    image: np.ndarray,
    sizes: Sequence[Sequence[int]],
    tolerance: float,
    onnx_path: str | Path | None = None,
    ts_path: str | Path | None = None,
) -> dict[str, Any]:
    """Compare each exported runtime with `net` on crops of `image`; raise if any check fails.

    Returns a JSON-able report: max abs logit difference per runtime and size, and the checks.
    """
    import torch

    from pipeline.predict.runtime import OnnxNet, TorchScriptNet

    report: dict[str, Any] = {"tolerance": tolerance, "checks": []}
    failures: list[str] = []
    if onnx_path is not None:
        try:
            check_onnx(onnx_path)
            report["onnx_checker"] = "passed"
        except Exception as exc:  # onnx raises several checker error types
            report["onnx_checker"] = f"failed: {exc}"
            failures.append(f"onnx.checker rejected {onnx_path}: {exc}")
    runtimes: dict[str, Any] = {}
    if onnx_path is not None and not failures:
        runtimes["onnxruntime"] = OnnxNet(onnx_path)
    if ts_path is not None:
        runtimes["torchscript"] = TorchScriptNet(ts_path)
    net = net.eval().cpu()
    for batch, size in enumerate(sizes, start=1):
        crop = torch.from_numpy(fit_to_size(image, size))
        # batch 1 then 2 (the second sample mirrored), so the batch axis is exercised too
        x = torch.stack([crop if i % 2 == 0 else crop.flip(-1) for i in range(batch)])
        with torch.no_grad():
            ref = net(x)
        for name, runtime in runtimes.items():
            try:
                out = runtime(x)
            except Exception as exc:  # a pinned axis shows up as a runtime shape error
                failures.append(f"{name} failed on input {tuple(x.shape)}: {exc}")
                continue
            if tuple(out.shape) != tuple(ref.shape):
                failures.append(f"{name} output shape {tuple(out.shape)} != eager {tuple(ref.shape)}")
                continue
            diff = float((out - ref).abs().max())
            ok = diff <= tolerance
            report["checks"].append({"runtime": name, "input_shape": list(x.shape), "max_abs_diff": diff, "passed": ok})
            if not ok:
                failures.append(f"{name} differs from eager by {diff:.3g} > {tolerance:g} on input {tuple(x.shape)}")
    report["passed"] = not failures
    if failures:
        raise ExportVerificationError("export verification failed:\n  " + "\n  ".join(failures))
    return report


def verified_onnx(
    net: Any, model_args: ModelArgs, image: np.ndarray, tile_size: Sequence[int], tolerance: float, path: Path
) -> Any:
    """`net` exported to `path` (dynamic axes) and checked against eager on `image` as the export
    stage checks its model.onnx; returns the ONNX Runtime session wrapped as a net."""
    from pipeline.export.to_onnx import export_onnx
    from pipeline.model import legal_input_size
    from pipeline.predict.runtime import OnnxNet

    m = model_args
    export_onnx(net, path, m.spatial_dims, m.in_channels, m.depth, m.padding)
    sizes = verification_sizes(legal_input_size(tile_size, m.depth, m.padding), m.depth, m.padding)
    verify_exports(net, image, sizes, tolerance, onnx_path=path)
    return OnnxNet(path)
