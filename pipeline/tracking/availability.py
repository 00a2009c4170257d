"""Is the tracking server there? Asked once, quickly, before a stage logs anything.

MLflow's own client retries a refused connection for minutes with exponential backoff (7 retries,
factor 2) before it raises, so a server that is down made training sit silent for 8.5 minutes and
then die. A remote (http/https) store is probed here with a short timeout; when it does not answer,
one line says so and `tracking.on_unavailable` decides: `fail` (exit 2) or `local`, which logs to a
local store (`mlflow-offline.db` in the working directory, artifacts under `./mlruns`) that
`unet-pipeline tracking sync` uploads later. The decision is made once per process, so the train,
evaluate and export of one run all log to the same place.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError
from pipeline.tracking.uri import resolve_tracking_uri

if TYPE_CHECKING:
    from pipeline.config import Config

OFFLINE_DB = "mlflow-offline.db"
PROBE_TIMEOUT_S = 5.0
# a server that goes away mid-run costs each call a few seconds, not minutes (the user may override)
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}

_DECIDED: dict[str, str] = {}  # configured URI -> the URI this process logs to


class TrackingUnavailableError(PipelineError, ConnectionError):
    """The tracking server does not answer and `tracking.on_unavailable` is `fail`."""


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def offline_uri(cwd: Path | None = None) -> str:
    """The local store a run falls back to when its server is away."""
    return f"sqlite:///{(Path(cwd) if cwd else Path.cwd()).resolve() / OFFLINE_DB}"


def probe(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the store at `uri` cannot be reached, or None when it answers (local stores always do).

    Args:
        uri: a tracking URI.
        timeout: seconds to wait for the server's `/health` answer.

    Returns:
        None, or a short reason such as "Connection refused".
    """
    if not is_remote(uri):
        return None
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:  # the server answered: reachable, whatever it thinks of /health
        return None if exc.code < 500 else f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return getattr(reason, "strerror", None) or str(reason)


def tracking_uri_for(cfg: Config) -> str:
    """The URI this process logs to: the configured store, or the local fallback when the configured
    server does not answer and `tracking.on_unavailable` is `local` (one line on stderr says so).

    Args:
        cfg: the pipeline config (`tracking.tracking_uri`, `tracking.on_unavailable`).

    Returns:
        A tracking URI.

    Raises:
        TrackingUnavailableError: the server does not answer and `on_unavailable` is `fail`.
    """
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    if uri in _DECIDED:
        return _DECIDED[uri]
    if is_remote(uri):
        for key, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)
    reason = probe(uri)
    if reason is None:
        _DECIDED[uri] = uri
        return uri
    where = f"MLflow tracking server {uri} is not reachable ({reason})"
    if cfg.tracking.on_unavailable == "fail":
        raise TrackingUnavailableError(
            f"{where}: start it, fix tracking.tracking_uri / MLFLOW_TRACKING_URI, "
            "or set tracking.on_unavailable: local to train now and upload later"
        )
    local = offline_uri()
    print(
        f"warning: {where}; logging to the local store {local} instead "
        f"(upload it later: unet-pipeline tracking sync --to {uri})",
        file=sys.stderr,
        flush=True,
    )
    _DECIDED[uri] = local
    return local
