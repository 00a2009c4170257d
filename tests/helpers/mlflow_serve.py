"""`mlflow models serve` of a registered scan-in model, and what a client sends it and checks.

Shared by tests/predict/test_served.py (models trained for seconds) and
benchmarks/clinical_tools.py (a trained workdir), so both start, query and stop the server the
same way.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from helpers.ports import free_port

SERVE_START_TIMEOUT_S = 120  # measured: about 4 s to the first /ping on 2 CPU cores


def b64(path: Path) -> str:
    """The file's bytes as one base64 line (the served model's `image` cell)."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


def assert_same_mask(encoded: str, reference: Path, scratch: Path) -> None:
    """The base64 mask equals the reference file voxel for voxel, on the same grid."""
    import nibabel as nib

    scratch.mkdir(parents=True, exist_ok=True)
    got = scratch / f"got_{len(list(scratch.iterdir()))}.nii.gz"
    got.write_bytes(base64.b64decode(encoded))
    a, b = nib.load(str(got)), nib.load(str(reference))
    assert a.shape == b.shape and a.get_data_dtype() == b.get_data_dtype()
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)


def post(port: int, cell: str) -> tuple[int, dict]:
    """POST one `image` cell to /invocations; (HTTP status, the JSON answer)."""
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[cell]]}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@contextmanager
def serving(uri: str, log: Path) -> Iterator[tuple[int, float]]:
    """`mlflow models serve -m uri` on a free local port, its output in `log`; yields (port, seconds
    to the first /ping) and stops the server's whole process group on exit.

    Raises:
        AssertionError: the server exited or did not answer /ping within `SERVE_START_TIMEOUT_S`
            (the message holds the end of its log).
    """
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)  # uvicorn, which `mlflow models serve` runs, lives here
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: the uvicorn child goes down with it
        )
    try:
        yield port, _wait_for_ping(proc, port, log)
    finally:
        _stop(proc)


def _wait_for_ping(proc: subprocess.Popen, port: int, log: Path) -> float:
    start = time.monotonic()
    while time.monotonic() - start < SERVE_START_TIMEOUT_S:
        assert proc.poll() is None, f"mlflow models serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:  # not listening yet
            pass
        time.sleep(0.25)
    raise AssertionError(f"mlflow models serve: no /ping within {SERVE_START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
