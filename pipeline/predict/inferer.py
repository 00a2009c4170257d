"""A MONAI `Inferer` around the pipeline's own whole-image inference, for bundle configs.

MONAI has no overlap-tile inferer for valid-padding networks (whose output is smaller than their
input), so the exported `inference.json` names this class by `_target_`, with the exported
inference settings. It calls `pipeline.inference.predict_probabilities`, the code the evaluate
stage and the standalone predictor run, so a bundle run gives the same mask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from monai.inferers import Inferer

from pipeline.inference.settings import InferenceSettings


class UNetInferer(Inferer):
    """Softmax probabilities (B, K, *spatial) of a batch (B, C, *spatial): overlap-tile for a
    'valid' net, sliding window for a 'same' one, flip TTA when the settings ask for it."""

    def __init__(self, settings: Mapping[str, Any] | InferenceSettings) -> None:
        super().__init__()
        self.settings = (
            settings if isinstance(settings, InferenceSettings) else InferenceSettings.from_dict(dict(settings))
        )

    def __call__(self, inputs: Any, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import torch

        from pipeline.inference.whole_image import predict_probabilities

        return predict_probabilities(torch.as_tensor(inputs), lambda t: network(t, *args, **kwargs), self.settings)
