"""The custom U-Net and its shape arithmetic."""

from pipeline.model.shapes import IllegalInputSize, check_input_size, legal_input_size, margin, output_size
from pipeline.model.unet import UNet, build_model, center_crop_like, model_args

__all__ = [
    "IllegalInputSize",
    "UNet",
    "build_model",
    "center_crop_like",
    "check_input_size",
    "legal_input_size",
    "margin",
    "model_args",
    "output_size",
]
