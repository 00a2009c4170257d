"""Atomic outputs: write beside the target, rename at the end.

A stage that fails half-way must leave the previous outputs as they were, so every output
directory or file is first written under a temporary name in the same folder (same filesystem,
so the final `rename` is atomic) and only moved into place once complete.

A SIGKILL cannot clean up: it leaves a temp beside the output. The temp names carry the writer's
pid (`.tmp-<pid>-<hex>`, `.<name>.tmp-<pid>-<hex>`, `.<name>.old-<pid>-<hex>`), and the first atomic
write into a folder in a process deletes those of writers no longer alive on this machine
(`sweep_stale`), so a re-run leaves no temp behind, not even in a folder DVC keeps (`persist`).

A write that runs out of room (disk or quota full, or past the process's file-size limit) raises
`pipeline.errors.DiskFullError` naming the output file, for every writer, also one that lost the
errno or ignored the short write (`pipeline.io.disk_full`); the temp is deleted, the old output kept.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import DiskFullError
from pipeline.io.disk_full import NO_ROOM, disk_full_error, no_room


def _token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


# the temps of atomic_write (`.tmp-<token>`) and atomic_dir (`.<name>.tmp-<token>`, `.<name>.old-<token>`)
_TEMP = re.compile(r"^\.(?:tmp-(\d+)-[0-9a-f]{8}|.+\.(?:tmp|old)-(\d+)-[0-9a-f]{8})$")
_swept: set[Path] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale(folder: str | Path) -> list[Path]:
    """Delete the temps in `folder` that writers killed before their rename left behind (their pid
    is no longer alive); return what was deleted. Writers on other machines sharing the folder are
    not seen: do not run two writers of one output folder on different hosts."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or _alive(int(m.group(1) or m.group(2))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _sweep_once(folder: Path) -> None:
    """`sweep_stale(folder)` on this process's first write into it."""
    key = folder.resolve()
    if key not in _swept:
        sweep_stale(key)
        _swept.add(key)


def _make_temp_dir(tmp: Path, final: Path) -> None:
    try:
        tmp.mkdir()
    except OSError as exc:
        if exc.errno in NO_ROOM:
            raise disk_full_error(final, exc.errno) from exc
        raise


def _raise_if_short(staged: Path, final: Path) -> None:
    """A writer that returned although it ran out of room (SimpleITK's NIfTI writer does) left a short file."""
    found = no_room(staged)
    if found is not None:
        raise _disk_full_at(found, staged, final)


def _disk_full_at(found: tuple[Path | None, int], staged: Path, final: Path) -> DiskFullError:
    """The error for `no_room`'s answer, naming the output file: `final`, or the file of the output
    folder `final` that the staged file within the temp folder `staged` becomes."""
    path, code = found
    if path is not None and staged.is_dir() and path.is_relative_to(staged):
        return disk_full_error(final / path.relative_to(staged), code)
    return disk_full_error(final, code)


def _as_disk_full(exc: BaseException, staged: Path, final: Path) -> DiskFullError | None:
    """`exc` as the `DiskFullError` of output `final` when the write of `staged` ran out of room, else None."""
    if isinstance(exc, DiskFullError):  # from a writer nested in this one: name the output's file
        inner = getattr(exc, "path", None)
        if inner is not None and staged.is_dir() and inner.is_relative_to(staged):
            return disk_full_error(final / inner.relative_to(staged), exc.code)  # type: ignore[attr-defined]
        return exc
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not a write failure
        return None
    found = no_room(staged, exc)
    return None if found is None else _disk_full_at(found, staged, final)


@contextmanager
def atomic_dir(final_path: str | Path) -> Iterator[Path]:
    """Yield an empty temp dir beside `final_path`; on success it replaces `final_path`.

    On an exception the temp dir is deleted and `final_path` is untouched.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{_token()}"
    _make_temp_dir(tmp, final)
    try:
        yield tmp
        _raise_if_short(tmp, final)
    except BaseException as exc:
        full = _as_disk_full(exc, tmp, final)
        shutil.rmtree(tmp, ignore_errors=True)
        if full is None or full is exc:
            raise
        raise full from exc
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
    """Yield a temp file path beside `final_path`; on success it replaces it.

    The temp file has the final name, inside a private temp folder beside it (`.tmp-<pid>-<hex>/`),
    so writers that pick the format from the extension (SimpleITK, `np.save`) behave as for the
    final name, and writers that record the file's name inside it (`torch.save` and
    `torch.jit.save` name their zip archive's folder after it) write the same bytes on every run.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(final.parent)
    tmp_dir = final.parent / f".tmp-{_token()}"
    _make_temp_dir(tmp_dir, final)
    tmp = tmp_dir / final.name
    try:
        yield tmp
        _raise_if_short(tmp, final)
        os.replace(tmp, final)
    except BaseException as exc:
        full = _as_disk_full(exc, tmp, final)
        if full is None or full is exc:
            raise
        raise full from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a small text file (JSON, YAML) atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
