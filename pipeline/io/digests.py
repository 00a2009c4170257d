"""SHA-256 digests: of a file (what metadata.json records per model) and of a network's weights."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks: what metadata.json records for each exported model."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weights_digest(named_tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """SHA-256 over (name, bytes) of the parameters, in name order: equal iff the weights are equal.

    DDP ranks print it when they finish, so identical replicas can be checked across machines
    (buffers such as batch-norm running statistics are per rank and left out); the export records
    it as the algorithm version of a DICOM SEG.

    Args:
        named_tensors: `net.named_parameters()`, or a name -> tensor mapping.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    for name, tensor in sorted((str(k), v) for k, v in dict(named_tensors).items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()
