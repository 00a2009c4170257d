"""The one IO module the pipeline and the exported predictor share (SimpleITK underneath).

Names resolve lazily so `from pipeline.io import atomic_dir` does not import MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_image": "pipeline.io.readers",
    "read_sitk": "pipeline.io.readers",
    "read_tiff_stack": "pipeline.io.readers",
    "SimpleITKReader": "pipeline.io.readers",
    "SUPPORTED_SUFFIXES": "pipeline.io.readers",
    "write_image": "pipeline.io.writers",
    "to_sitk": "pipeline.io.writers",
    "WRITABLE_SUFFIXES": "pipeline.io.writers",
    "ImageReadError": "pipeline.io.integrity",
    "full_suffix": "pipeline.io.integrity",
    "atomic_dir": "pipeline.io.atomic",
    "atomic_write": "pipeline.io.atomic",
    "write_text_atomic": "pipeline.io.atomic",
    "Geometry": "pipeline.io.geometry",
    "geometry_from_ras_affine": "pipeline.io.geometry",
    "spacing_from_affine": "pipeline.io.geometry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.io' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
