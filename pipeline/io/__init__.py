"""The one IO module the pipeline and the exported predictor share (SimpleITK underneath).

Names resolve lazily so `from pipeline.io import atomic_dir` does not import MONAI.
"""

from __future__ import annotations

from pipeline._lazy import lazy_getattr

_EXPORTS = {
    "read_image": "pipeline.io.readers",
    "read_sitk": "pipeline.io.sitk_arrays",
    "read_array": "pipeline.io.sitk_arrays",
    "ArrayImage": "pipeline.io.sitk_arrays",
    "read_tiff_stack": "pipeline.io.readers",
    "dicom_series_files": "pipeline.io.sitk_arrays",
    "SimpleITKReader": "pipeline.io.readers",
    "SUPPORTED_SUFFIXES": "pipeline.io.suffixes",
    "SEG_SUFFIX": "pipeline.io.suffixes",
    "strip_image_suffix": "pipeline.io.suffixes",
    "write_image": "pipeline.io.writers",
    "to_sitk": "pipeline.io.writers",
    "WRITABLE_SUFFIXES": "pipeline.io.suffixes",
    "ImageReadError": "pipeline.io.integrity",
    "full_suffix": "pipeline.io.suffixes",
    "sha256_file": "pipeline.io.digests",
    "weights_digest": "pipeline.io.digests",
    "atomic_dir": "pipeline.io.atomic",
    "atomic_write": "pipeline.io.atomic",
    "write_text_atomic": "pipeline.io.atomic",
    "csv_text": "pipeline.io.tables",
    "write_csv": "pipeline.io.tables",
    "Geometry": "pipeline.io.geometry",
    "geometry_from_ras_affine": "pipeline.io.geometry",
    "spacing_from_affine": "pipeline.io.geometry",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
