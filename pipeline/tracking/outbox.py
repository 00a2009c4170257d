"""Calls to a tracking server that went away mid-run, kept until it is back.

Training must not stop, or stall for minutes, because the tracking server restarted. Each client
call of a run on a remote store goes through `Outbox.call`: when the server does not answer, the
call is queued (one warning line), and every later call first tries to deliver the queue, in order,
once a quick probe says the server is back. `flush` at the end of the run delivers what is left,
or returns it for the caller to keep in the local store.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.tracking.availability import is_remote, offline_uri, probe

PENDING_FOR_TAG = "unet_pipeline.pending_for"  # a local run holding calls a server run could not take

Call = tuple[str, Callable[..., Any], tuple[Any, ...]]  # (what, client method, its arguments)
PROBE_WHILE_AWAY_S = 2.0  # a quick look before each delivery attempt, so an absent server costs little


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` says the server could not be reached (as opposed to a refused request)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with mlflow
        requests = None  # type: ignore[assignment]
    if requests is not None and isinstance(exc, requests.exceptions.RequestException):
        return True
    text = str(exc)
    return "Max retries exceeded" in text or "Connection refused" in text or "Failed to establish" in text


@dataclass
class Outbox:
    """The queued calls of one run, in the order they were made.

    Args:
        uri: the run's tracking URI; calls to a local store are made directly, never queued.
        what: names the run in the warning.
    """

    uri: str
    what: str
    pending: list[Call] = field(default_factory=list)

    def call(self, label: str, fn: Callable[..., Any], *args: Any) -> None:
        """Make the call, or queue it (with everything after it) while the server is away."""
        if not is_remote(self.uri):
            fn(*args)
            return
        if self.pending and not self._deliver():
            self.pending.append((label, fn, args))
            return
        try:
            fn(*args)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            self._went_away(label, exc)
            self.pending.append((label, fn, args))

    def _went_away(self, label: str, exc: BaseException) -> None:
        print(
            f"warning: MLflow tracking server {self.uri} stopped answering at {label} ({str(exc)[:120]}); "
            f"training goes on and {self.what}'s tracking calls are kept until it is back",
            file=sys.stderr,
            flush=True,
        )

    def _deliver(self) -> bool:
        """Send the queue in order; True when it is empty afterwards."""
        if probe(self.uri, timeout=PROBE_WHILE_AWAY_S) is not None:
            return False
        while self.pending:
            _, fn, args = self.pending[0]
            try:
                fn(*args)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                return False
            self.pending.pop(0)
        print(f"MLflow tracking server {self.uri} is back; the queued calls were delivered", file=sys.stderr)
        return True

    def flush(self) -> list[Call]:
        """Deliver what is queued; returns what could not be (the server is still away)."""
        if self.pending:
            self._deliver()
        return list(self.pending)


def keep_locally(
    uri: str, run_id: str, experiment: str, calls: Iterable[tuple[str, Callable[..., Any], tuple[Any, ...]]]
) -> str:
    """Replay the undelivered calls of run `run_id` on server `uri` into a run of the local store
    (experiment `experiment`), tagged with the server run's id.

    Returns:
        The local run's id.
    """
    from mlflow.tracking import MlflowClient

    local = MlflowClient(tracking_uri=offline_uri())
    exp = local.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else local.create_experiment(experiment)
    kept = local.create_run(exp_id, tags={PENDING_FOR_TAG: run_id, "unet_pipeline.pending_uri": uri})
    for _, fn, args in calls:
        getattr(local, fn.__name__)(kept.info.run_id, *args[1:])  # the same client call, on the local run
    print(
        f"warning: MLflow tracking server {uri} is still away; run {run_id}'s last calls are kept "
        f"in {offline_uri()} (run {kept.info.run_id}); upload: unet-pipeline tracking sync --to {uri}",
        file=sys.stderr,
    )
    return kept.info.run_id
