"""A real `mlflow server` process on a free local port, for the REST and tracking-outage tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, NoReturn

from helpers.ports import free_port


class MlflowServer:
    """`mlflow server` with a sqlite backend and proxied artifacts under `root`; `start`/`stop` may be
    called again, on the same port and store, to take it away and bring it back."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log(self) -> Path:
        """The server's stdout and stderr, kept across restarts: what a failed start shows."""
        return self.root / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        """Where the server stores what clients upload over HTTP."""
        return self.root / "artifacts"

    def start(self, timeout: float = 90.0) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        mlflow = str(Path(sys.executable).parent / "mlflow")
        cmd = [mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        cmd += ["--backend-store-uri", f"sqlite:///{self.root / 'server.db'}"]
        # clients upload artifacts over HTTP (mlflow-artifacts:/ URIs); the server stores them here
        cmd += ["--serve-artifacts", "--artifacts-destination", str(self.artifacts)]
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job-runner workers beside the one server
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        env.pop("MLFLOW_TRACKING_URI", None)  # a test's client URI is not the server's own store
        self._log = open(self.log, "ab")  # noqa: SIM115 - the server's lifetime, closed by stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail("mlflow server exited")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self._fail(f"mlflow server did not answer within {timeout} s")

    def _fail(self, what: str) -> NoReturn:
        """Stop the server and raise with the tail of its log, which says why it did not come up."""
        self.stop()
        raise RuntimeError(f"{what}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)  # uvicorn's workers too
            self.proc.wait(timeout=30)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
