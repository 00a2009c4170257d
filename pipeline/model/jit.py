"""The network's TorchScript form: loading it, and the one deprecation notice torch.jit prints.

torch 2.13 marks `torch.jit` deprecated; we keep TorchScript for MONAI bundles, MONAI Label and
MONAI Deploy, and silence only that notice where we call it (TOOLCHAIN.md). Exporting lives in
`pipeline.export.torchscript`; loading is here so that the runtimes and the tracker need not reach
up into the export package.
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


def load_torchscript(path: str | Path, device: str = "cpu") -> Any:
    """Load a saved TorchScript model in eval mode.

    Args:
        path: the `.ts` file.
        device: where its tensors go (`map_location`).

    Returns:
        The `torch.jit.ScriptModule`, in eval mode.
    """
    import torch

    with quiet_jit():
        module = torch.jit.load(str(path), map_location=device)
    return module.eval()
