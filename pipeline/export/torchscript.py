"""TorchScript export: still what MONAI bundles, MONAI Label and MONAI Deploy load.

torch 2.13 marks `torch.jit` deprecated; we keep it for those consumers and silence only that
one DeprecationWarning where we call it (TOOLCHAIN.md).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch.jit's own deprecation notice, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript.* deprecated", category=DeprecationWarning)
        yield


def export_torchscript(net: Any, path: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Script `net` (eval mode, CPU) and save it to `path`.

    Scripting (not tracing) keeps the crop-and-concatenate arithmetic symbolic, so the saved
    module accepts every legal input size, not just the example's.
    """
    import torch

    path = Path(path)
    net = net.eval().cpu()
    with quiet_jit():
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, str(path), _extra_files=extra_files or {})
    return path


def load_torchscript(path: str | Path, device: str = "cpu") -> Any:
    """Load a saved TorchScript model in eval mode on `device`."""
    import torch

    with quiet_jit():
        module = torch.jit.load(str(path), map_location=device)
    return module.eval()
