"""Package-level names that load their module on first use (the one `__init__.py` style).

A package lists `_EXPORTS = {"name": "module", ...}` and sets `__getattr__ = lazy_getattr(__name__,
_EXPORTS)`, so `from pipeline.inference import InferenceSettings` imports only the module that
defines it: the CLI's `--help` and the light stages never pay for torch or MONAI they do not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
