"""The custom U-Net and its shape arithmetic."""

from pipeline._lazy import lazy_getattr

_EXPORTS = {
    "FoldEnsemble": "pipeline.model.ensemble",
    "IllegalInputSize": "pipeline.model.shapes",
    "ModelArgs": "pipeline.model.args",
    "fit_to_size": "pipeline.model.shapes",
    "load_torchscript": "pipeline.model.jit",
    "quiet_jit": "pipeline.model.jit",
    "UNet": "pipeline.model.unet",
    "build_model": "pipeline.model.unet",
    "center_crop_like": "pipeline.model.unet",
    "check_input_size": "pipeline.model.shapes",
    "legal_input_size": "pipeline.model.shapes",
    "margin": "pipeline.model.shapes",
    "model_args": "pipeline.model.unet",
    "output_size": "pipeline.model.shapes",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
