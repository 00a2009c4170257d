"""Export of the trained U-Net: TorchScript, ONNX (dynamic axes), a MONAI Bundle, parity checks.

`pipeline.stages.export` runs it all; `pipeline.predict` is the standalone predictor that needs
only the exported folder.
"""

from pipeline.export.runtime import OnnxNet, TorchScriptNet, load_net
from pipeline.export.to_onnx import check_onnx, dynamic_shapes, export_onnx, legal_size_expression, size_rule
from pipeline.export.torchscript import export_torchscript, load_torchscript, quiet_jit
from pipeline.export.verify import ExportVerificationError, fit_to_size, verification_sizes, verify_exports

__all__ = [
    "ExportVerificationError",
    "OnnxNet",
    "TorchScriptNet",
    "check_onnx",
    "dynamic_shapes",
    "export_onnx",
    "export_torchscript",
    "fit_to_size",
    "legal_size_expression",
    "load_net",
    "load_torchscript",
    "quiet_jit",
    "size_rule",
    "verification_sizes",
    "verify_exports",
]
