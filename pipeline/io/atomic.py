"""Atomic outputs: write beside the target, rename at the end.

A stage that fails half-way must leave the previous outputs as they were, so every output
directory or file is first written under a temporary name in the same folder (same filesystem,
so the final `rename` is atomic) and only moved into place once complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_dir(final_path: str | Path) -> Iterator[Path]:
    """Yield an empty temp dir beside `final_path`; on success it replaces `final_path`.

    On an exception the temp dir is deleted and `final_path` is untouched.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{_token()}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists() or final.is_symlink():
        old = final.parent / f".{final.name}.old-{_token()}"
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


@contextmanager
def atomic_write(final_path: str | Path) -> Iterator[Path]:
    """Yield a temp file path beside `final_path` (same extension); on success it replaces it.

    The temp name keeps the full suffix (e.g. `.nii.gz`) so writers that pick the format from
    the extension (SimpleITK, `np.save`) behave as for the final name.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{_token()}-{final.name}"
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a small text file (JSON, YAML) atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
