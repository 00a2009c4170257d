"""Export of the trained U-Net: TorchScript, ONNX (dynamic axes), a MONAI Bundle, parity checks.

`pipeline.stages.export` runs it all; `pipeline.export.predictor` is the standalone predictor that
needs only the exported folder.
"""

from pipeline._lazy import lazy_getattr

_EXPORTS = {
    "ExportVerificationError": "pipeline.export.verify",
    "OnnxNet": "pipeline.export.runtime",
    "TorchScriptNet": "pipeline.export.runtime",
    "check_onnx": "pipeline.export.to_onnx",
    "dynamic_shapes": "pipeline.export.to_onnx",
    "export_onnx": "pipeline.export.to_onnx",
    "export_torchscript": "pipeline.export.torchscript",
    "fit_to_size": "pipeline.export.verify",
    "legal_size_expression": "pipeline.export.to_onnx",
    "load_net": "pipeline.export.runtime",
    "load_torchscript": "pipeline.export.torchscript",
    "quiet_jit": "pipeline.export.torchscript",
    "size_rule": "pipeline.export.to_onnx",
    "verification_sizes": "pipeline.export.verify",
    "verify_exports": "pipeline.export.verify",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
