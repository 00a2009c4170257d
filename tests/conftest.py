"""Suite-wide settings: no telemetry, no analytics, a headless plotting backend, and import paths.

`tests/` goes on sys.path so `import helpers...` works from every test folder, and the repo's
`tools/` so the DVC test can `import stage_deps`.
"""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.pop("MLFLOW_TRACKING_URI", None)

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = REPO_ROOT / "tests"

for _path in (REPO_ROOT / "tools", TESTS_DIR):  # tests/ ends up first
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the repo; tests that need them skip when absent."""
    path = Path(os.environ.get("UNET_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set UNET_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """exported/model.onnx of the session's trained 2D workdir (`helpers.evaluation.pipeline_workdir`)."""
    from helpers.evaluation import pipeline_workdir

    cfg, root = pipeline_workdir(tmp_path_factory, export=True)
    return root / cfg.export.output_dir / "model.onnx"
