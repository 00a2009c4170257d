"""Writes that ran out of room: a full disk or quota, or a file past the process's file-size limit.

`pipeline.io.atomic` asks this module, after a writer failed and after one returned, whether the
file it staged ran out of room, and turns the answer into one `DiskFullError` naming the output file.
Python writers say so with errno EFBIG / ENOSPC / EDQUOT. Writers in C++ lose the errno (torch.save:
"iostream error") or ignore it (SimpleITK's NIfTI writer returns after a short write), so the staged
file is also measured: one that reached `RLIMIT_FSIZE` (`ulimit -f`), or a filesystem left without
space, tells the same story.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pipeline.errors import DiskFullError

NO_ROOM = (errno.EFBIG, errno.ENOSPC, errno.EDQUOT)
# after an I/O error, a filesystem with less than this left counts as full (the failed write needed more)
NEARLY_FULL_BYTES = 1 << 20

# errno -> (what happened, what to do)
_WHY = {
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or ask for more quota"),
}


def file_size_limit() -> int | None:
    """This process's file-size limit in bytes (`ulimit -f`), or None when there is none."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def room_left(folder: Path) -> int | None:
    """Bytes this process may still write on the filesystem of `folder` (root may use the reserve)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def disk_full_error(path: str | Path, code: int) -> DiskFullError:
    """The one-line error for output `path` that could not be written for lack of room (`code`: errno)."""
    if code == errno.EFBIG:
        limit = file_size_limit()
        why, fix = (
            (f"it reached this process's file-size limit of {limit} bytes", "raise the limit (`ulimit -f`)")
            if limit is not None
            else ("it is larger than the filesystem allows", "write it to another filesystem")
        )
    else:
        why, fix = _WHY.get(code, _WHY[errno.ENOSPC])
    err = DiskFullError(
        f"cannot write {path}: file too large or disk full ({why}); {fix} and run again "
        "(nothing was replaced: the previous output is unchanged)"
    )
    err.path, err.code = Path(path), code  # type: ignore[attr-defined]
    return err


def _chain(exc: BaseException | None) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during, outermost first."""
    out: list[BaseException] = []
    while exc is not None and all(exc is not e for e in out):
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _files(staged: Path) -> list[Path]:
    if staged.is_dir():
        return [p for p in staged.rglob("*") if p.is_file() and not p.is_symlink()]
    return [staged] if staged.is_file() else []


def _at_limit(staged: Path) -> Path | None:
    """The first staged file that grew to the file-size limit: its writer was stopped there."""
    limit = file_size_limit()
    if limit is None:
        return None
    return next((f for f in _files(staged) if f.stat().st_size >= limit), None)


def _newest(files: list[Path]) -> Path | None:
    """The file written last: the one being written when the disk filled up."""
    return max(files, key=lambda f: f.stat().st_mtime_ns, default=None)


def no_room(staged: Path, exc: BaseException | None = None) -> tuple[Path | None, int] | None:
    """Why writing the staged file (or folder of files) `staged` ran out of room, if it did.

    Args:
        staged: the temp file or temp folder an atomic writer filled.
        exc: what the writer raised, or None when it returned (a writer that ignores a short write).

    Returns:
        (the staged file that ran out of room, or None when none can be told; the errno), or None
        when nothing says that room ran out (then `exc` is some other failure).
    """
    chain = _chain(exc)
    code = next((e.errno for e in chain if isinstance(e, OSError) and e.errno in NO_ROOM), None)
    culprit = _at_limit(staged)
    if culprit is not None:
        return culprit, code or errno.EFBIG
    left = room_left(staged.parent)
    if exc is None:  # the writer returned: only an exhausted filesystem says its file is short
        full = left == 0
    else:  # an I/O error on a filesystem with (next to) nothing left
        io_error = any(isinstance(e, OSError | RuntimeError) for e in chain)
        full = code is not None or (io_error and left is not None and left < NEARLY_FULL_BYTES)
    if not full:
        return None
    return _newest(_files(staged)), code or errno.ENOSPC
