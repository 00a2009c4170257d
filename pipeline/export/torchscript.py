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


EMBEDDED_CONFIGS = ("metadata.json", "inference.json")  # what MONAI Deploy's `-m model.ts` reads


def embed_configs(path: str | Path, metadata: dict[str, Any], inference: dict[str, Any]) -> Path:
    """Re-save the TorchScript file at `path` with the bundle's configs inside, as MONAI's
    `save_net_with_metadata` writes them (`metadata.json` from `meta_values`, `inference.json` as a
    further extra file), so `monai.data.load_net_with_metadata` and MONAI Deploy's
    `MonaiBundleInferenceOperator` read them from the file alone. The module itself (code and
    weights) is the one already saved and verified there.

    Args:
        path: the saved `.ts` file; replaced in place (temp file, then rename).
        metadata: metadata.json's content. A file cannot carry its own hash, so the caller leaves
            out the model hashes.
        inference: inference.json's content.

    Returns:
        `path`.
    """
    import json

    from monai.data import save_net_with_metadata

    from pipeline.io.atomic import atomic_write
    from pipeline.model.jit import load_torchscript

    path = Path(path)
    module = load_torchscript(path)
    with atomic_write(path) as tmp, quiet_jit():
        save_net_with_metadata(
            module,
            str(tmp),
            include_config_vals=False,
            meta_values=metadata,
            more_extra_files={"inference.json": json.dumps(inference, indent=2).encode()},
        )
    return path


def read_embedded_configs(path: str | Path) -> dict[str, dict[str, Any]]:
    """The configs inside a TorchScript file, read as MONAI reads them (`load_net_with_metadata`).

    Returns:
        `{"metadata.json": {...}, "inference.json": {...}}`; a config the file lacks is `{}`.
    """
    import json

    from monai.data import load_net_with_metadata

    with quiet_jit():
        _, metadata, extra = load_net_with_metadata(str(path), more_extra_files=("inference.json",))
    raw = extra.get("inference.json") or "{}"
    return {"metadata.json": metadata, "inference.json": json.loads(raw)}
