"""Whole-image inference shared by training validation, the evaluate stage and the exported predictor.

`overlap_tile` (valid padding, the paper's Fig. 2) and `sliding_window` (same padding, MONAI) turn
a net that sees patches into a whole-image predictor; `predict_logits` / `predict_probabilities`
dispatch on the padding mode (with optional flip TTA); `keep_largest` cleans up the label map.
`pipeline.inference.case.predict_case` goes from a raw image file to a mask in source geometry.
Every entry point takes an `InferenceSettings` whole.
"""

from pipeline._lazy import lazy_getattr

_EXPORTS = {
    "InferenceSettings": "pipeline.inference.settings",
    "Net": "pipeline.inference.tiles",
    "TilePlan": "pipeline.inference.tile_plan",
    "flip_axes_combinations": "pipeline.inference.whole_image",
    "keep_largest": "pipeline.inference.whole_image",
    "mirror_pad": "pipeline.inference.tiles",
    "overlap_tile": "pipeline.inference.tiles",
    "plan_tiles": "pipeline.inference.tile_plan",
    "predict_logits": "pipeline.inference.whole_image",
    "predict_probabilities": "pipeline.inference.whole_image",
    "sliding_window": "pipeline.inference.windows",
    "window_size": "pipeline.inference.windows",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
