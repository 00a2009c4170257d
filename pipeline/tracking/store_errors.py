"""A local sqlite tracking store that ran out of room, as one clear line.

sqlite reports a write the disk, the quota or the process's file-size limit refused as
`disk I/O error` or `database or disk is full`, and MLflow passes it up as a SQLAlchemy
`OperationalError` with a page of traceback. The store's transaction is rolled back, so the runs
already logged are intact; the user needs to know which file and what to do.
"""

from __future__ import annotations

import errno
from pathlib import Path

from pipeline.errors import DiskFullError

# sqlite's messages for a write refused for lack of room -> the errno they stand for
_NO_ROOM = {"database or disk is full": errno.ENOSPC, "disk I/O error": errno.EFBIG}


def _store_file(uri: str | None) -> Path | None:
    if uri and uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return None


def store_full_error(exc: BaseException, uri: str | None) -> DiskFullError | None:
    """`exc` as the `DiskFullError` naming the tracking store's file, when somewhere in its chain
    sqlite said it could not write for lack of room; else None.

    Args:
        exc: what a command raised.
        uri: the tracking URI in use (`mlflow.get_tracking_uri()`); only a `sqlite:///` one has a file.

    Returns:
        The one-line error, or None when `exc` is something else.
    """
    from pipeline.io.disk_full import disk_full_error, file_size_limit

    path = _store_file(uri)
    seen: BaseException | None = exc
    while seen is not None and path is not None:
        if type(seen).__name__ == "OperationalError":
            for message, code in _NO_ROOM.items():
                if message in str(seen):
                    if code == errno.EFBIG and file_size_limit() is None:
                        code = errno.ENOSPC
                    return disk_full_error(path, code)
        seen = seen.__cause__ or seen.__context__
    return None
