"""Which MLflow tracking store to use.

Order: `tracking.tracking_uri` in the config, else $MLFLOW_TRACKING_URI (a team server works
unchanged), else `sqlite:///<cwd>/mlflow.db` -- the store `mlflow ui` opens when started with no
flags in the same directory (MLflow >= 3 defaults to it; its artifacts go to `./mlruns/`).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(configured: str | None = None, cwd: Path | None = None) -> str:
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(cwd) if cwd else Path.cwd()).resolve() / DEFAULT_DB}"
