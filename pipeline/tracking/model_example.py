"""The input example MLflow stores beside a logged model: a small legal crop of a real image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.model.args import ModelArgs
from pipeline.model.shapes import fit_to_size, legal_input_size


def mlflow_example(image: np.ndarray, model_args: ModelArgs, tile_size: Sequence[int]) -> np.ndarray:
    """A crop of `image` at the smallest legal size near 4 steps of the net, as (1, C, *spatial).

    Args:
        image: a preprocessed (C, *spatial) image (the export's held-out case).
        model_args: the network's arguments (depth and padding decide the legal sizes).
        tile_size: the inference tile; the example is no larger.

    Returns:
        The float32 example, batch axis first.
    """
    depth, padding = model_args.depth, model_args.padding
    size = legal_input_size([min(t, 2**depth * 4) for t in tile_size], depth, padding)
    return fit_to_size(image, size)[None]
