"""Test-only: log every file a `unet-pipeline <command>` process opens for reading.

tests/test_pipeline_dvc.py puts this folder on PYTHONPATH and sets UNET_FILE_AUDIT_LOG for the
`dvc repro` it runs; Python imports `sitecustomize` at start-up, so each stage process that DVC
spawns (and its forked workers) appends `<command>\t<absolute path>` lines for Python-level opens
(files read by C libraries such as SimpleITK are not seen). Any other process ignores it.
"""

import os
import sys

_LOG = os.environ.get("UNET_FILE_AUDIT_LOG")

if _LOG and len(sys.argv) > 1 and os.path.basename(sys.argv[0]) == "unet-pipeline":
    _COMMAND = sys.argv[1]
    _busy = [False]

    def _hook(event: str, args: tuple) -> None:
        if event != "open" or _busy[0]:
            return
        path, mode, flags = args
        if not isinstance(path, (str, bytes, os.PathLike)):
            return
        if mode is not None:
            reading = not any(c in str(mode) for c in "wax")
        else:
            reading = (int(flags or 0) & (os.O_WRONLY | os.O_RDWR)) == 0
        if not reading:
            return
        _busy[0] = True
        try:
            with open(_LOG, "a", encoding="utf-8") as f:
                f.write(f"{_COMMAND}\t{os.path.abspath(os.fsdecode(path))}\n")
        finally:
            _busy[0] = False

    sys.addaudithook(_hook)
