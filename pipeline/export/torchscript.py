"""TorchScript export: still what MONAI bundles, MONAI Label and MONAI Deploy load.

torch 2.13 marks `torch.jit` deprecated; we keep it for those consumers and silence only that
one DeprecationWarning where we call it (TOOLCHAIN.md); loading is `pipeline.model.jit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.model.jit import quiet_jit


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
