"""TorchScript export: still what MONAI bundles, MONAI Label and MONAI Deploy load.

torch 2.13 marks `torch.jit` deprecated; we keep it for those consumers and silence only that
one DeprecationWarning where we call it (TOOLCHAIN.md); loading is `pipeline.model.jit`.

`torch.jit.save` serialises into memory and Python writes the bytes: its own C++ file writer, when
the disk fills up, throws from a destructor and aborts the whole process (`std::terminate`), where
a Python write raises the OSError that `pipeline.io.atomic` reports as a full disk.
"""

from __future__ import annotations

import io
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
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files=extra_files or {})
    path.write_bytes(buffer.getvalue())
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
    import tempfile

    from pipeline.io.atomic import atomic_write
    from pipeline.model.jit import load_torchscript

    path = Path(path)
    module = load_torchscript(path)
    extra = {"inference.json": json.dumps(inference, indent=2).encode()}
    size = len(_save_with_configs(module, io.BytesIO(), metadata, extra).getvalue())
    _check_room(path, size)
    # saved under the name `model.ts`: the archive's folder is named after the file, and MONAI Deploy
    # reads embedded configs only from `<stem>/extra/` with stem "model" (a buffer gives "archive")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        named = Path(tmp) / "model.ts"
        _save_with_configs(module, str(named), metadata, extra)
        data = named.read_bytes()
    with atomic_write(path) as staged:
        staged.write_bytes(data)
    return path


def _save_with_configs(module: Any, target: Any, metadata: dict[str, Any], extra: dict[str, bytes]) -> Any:
    from monai.data import save_net_with_metadata

    with quiet_jit():
        save_net_with_metadata(module, target, include_config_vals=False, meta_values=metadata, more_extra_files=extra)
    return target


def _check_room(path: Path, size: int) -> None:
    """torch's own file writer aborts the process on a full disk: refuse first, as one clear error."""
    import errno

    from pipeline.io.disk_full import disk_full_error, file_size_limit, room_left

    limit, room = file_size_limit(), room_left(path.parent)
    if limit is not None and size > limit:
        raise disk_full_error(path, errno.EFBIG)
    if room is not None and 2 * size + (1 << 20) > room:  # the named copy and the final file
        raise disk_full_error(path, errno.ENOSPC)


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
