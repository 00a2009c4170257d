"""A MONAI `Inferer` around the pipeline's own whole-image inference, for bundle configs.

MONAI has no overlap-tile inferer for valid-padding networks (whose output is smaller than their
input), so the exported `inference.json` names this class by `_target_`. It calls
`pipeline.inference.predict_logits` / `predict_probabilities`, the code the evaluate stage and the
standalone predictor run, so a bundle run gives the same mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.inferers import Inferer


class UNetInferer(Inferer):
    """Overlap-tile ('valid') or sliding-window ('same') inference on a batch (B, C, *spatial).

    Returns logits (B, K, *spatial), or softmax probabilities when `probabilities` (always the
    case with flip TTA, which averages probabilities).
    """

    def __init__(
        self,
        padding: str,
        depth: int,
        tile_size: Sequence[int],
        overlap: float = 0.5,
        blend: str = "gaussian",
        batch_size: int = 4,
        tta: bool = False,
        probabilities: bool = False,
        tta_axes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.kwargs = dict(
            padding=padding,
            depth=int(depth),
            tile_size=tuple(int(t) for t in tile_size),
            overlap=float(overlap),
            blend=blend,
            batch_size=int(batch_size),
        )
        self.tta = bool(tta)
        self.tta_axes = None if tta_axes is None else tuple(int(a) for a in tta_axes)
        self.probabilities = bool(probabilities) or self.tta

    def __call__(self, inputs: Any, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import torch

        from pipeline.inference import predict_logits, predict_probabilities

        x = torch.as_tensor(inputs)

        def net(t: torch.Tensor) -> torch.Tensor:
            return network(t, *args, **kwargs)

        if self.probabilities:
            return predict_probabilities(x, net, tta=self.tta, tta_axes=self.tta_axes, **self.kwargs)
        return predict_logits(x, net, **self.kwargs)


class OverlapTileInferer(UNetInferer):
    """`UNetInferer` fixed to valid padding: the U-Net paper's overlap-tile strategy."""

    def __init__(
        self,
        depth: int,
        tile_size: Sequence[int],
        batch_size: int = 4,
        tta: bool = False,
        probabilities: bool = False,
        tta_axes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            "valid", depth, tile_size, batch_size=batch_size, tta=tta, probabilities=probabilities, tta_axes=tta_axes
        )
