"""What writes a model: TorchScript, ONNX (dynamic axes), the MONAI Bundle, parity checks.

`pipeline.stages.export` runs it all. What *runs* an exported model (the standalone predictor, the
runtimes, the bundle's inferer) is `pipeline.predict`, one layer below: export verifies its files
with those runtimes.
"""

from pipeline._lazy import lazy_getattr

_EXPORTS = {
    "ExportVerificationError": "pipeline.export.verify",
    "check_onnx": "pipeline.export.to_onnx",
    "dynamic_shapes": "pipeline.export.to_onnx",
    "export_onnx": "pipeline.export.to_onnx",
    "export_torchscript": "pipeline.export.torchscript",
    "fit_to_size": "pipeline.model.shapes",
    "legal_size_expression": "pipeline.export.to_onnx",
    "load_torchscript": "pipeline.model.jit",
    "quiet_jit": "pipeline.model.jit",
    "size_rule": "pipeline.export.to_onnx",
    "verification_sizes": "pipeline.export.verify",
    "verify_exports": "pipeline.export.verify",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
