"""Whole-image inference shared by training validation, the evaluate stage and the exported predictor.

`overlap_tile` (valid padding, the paper's Fig. 2) and `sliding_window` (same padding, MONAI) turn
a net that sees patches into a whole-image predictor; `predict_logits` / `predict_probabilities`
dispatch on the padding mode (with optional flip TTA); `keep_largest` cleans up the label map.
`pipeline.inference.predict.predict_case` goes from a raw image file to a mask in source geometry.
"""

from pipeline.inference.api import flip_axes_combinations, keep_largest, predict_logits, predict_probabilities
from pipeline.inference.overlap_tile import TilePlan, mirror_pad, overlap_tile, plan_tiles
from pipeline.inference.settings import InferenceSettings
from pipeline.inference.sliding_window import sliding_window, window_size

__all__ = [
    "InferenceSettings",
    "TilePlan",
    "flip_axes_combinations",
    "keep_largest",
    "mirror_pad",
    "overlap_tile",
    "plan_tiles",
    "predict_logits",
    "predict_probabilities",
    "sliding_window",
    "window_size",
]
