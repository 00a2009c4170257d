"""`preprocessed/manifest.json`: the one reader the train, evaluate and export stages share.

The preprocess stage writes it (docs/ARCHITECTURE.md); a stage that finds it missing, unreadable
or lacking an entry it needs says so, naming the file and the stage to re-run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class ManifestError(ValueError):
    """`preprocessed/manifest.json` is missing, unreadable or does not fit the config."""


def load_manifest(
    pre_dir: str | Path, required: Sequence[str] = ("labels", "preprocessing", "splits", "cases")
) -> dict[str, Any]:
    """The parsed manifest, with every key in `required` present."""
    path = Path(pre_dir) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path} not found: run the preprocess stage first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-run the preprocess stage") from None
    missing = [key for key in required if key not in manifest]
    if missing:
        raise ManifestError(f"{path} has no {', '.join(map(repr, missing))} entry; re-run the preprocess stage")
    return manifest
