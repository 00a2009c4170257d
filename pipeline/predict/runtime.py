"""Callables that make an exported model look like the torch network to the inference code.

`pipeline.inference` takes any `net: Tensor (B, C, *spatial) -> Tensor (B, K, *spatial')`, so
the exported predictor runs ONNX Runtime or TorchScript through the very code the evaluate stage
uses with the eager network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import InputError, MissingInputError
from pipeline.model.jit import load_torchscript


class OnnxNet:
    """An ONNX Runtime session wrapped as `Tensor -> Tensor` (float32 logits on the input's device)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: Any) -> Any:
        import numpy as np
        import torch

        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        (out,) = self.session.run([self.output_name], {self.input_name: arr})
        return torch.from_numpy(out).to(x.device)

    # the inference code may call these on a torch module; they are no-ops for a session
    def eval(self) -> OnnxNet:
        return self

    def to(self, *_: Any, **__: Any) -> OnnxNet:
        return self


class TorchScriptNet:
    """A TorchScript module run without autograd, moving each input batch to the model's device."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.path = Path(path)
        self.device = device
        self.module = load_torchscript(self.path, device)

    def __call__(self, x: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.module(x.to(self.device, dtype=torch.float32)).to(x.device)

    def eval(self) -> TorchScriptNet:
        return self

    def to(self, *_: Any, **__: Any) -> TorchScriptNet:
        return self


def load_net(path: str | Path, device: str = "cpu") -> OnnxNet | TorchScriptNet:
    """Pick the runtime by file suffix: .onnx -> ONNX Runtime, .ts/.pt -> TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"model file {path} does not exist")
    if path.suffix == ".onnx":
        return OnnxNet(path, device)
    if path.suffix in (".ts", ".pt", ".pth"):
        return TorchScriptNet(path, device)
    raise InputError(f"model file {path}: unknown format {path.suffix!r}; expected .onnx or .ts")
