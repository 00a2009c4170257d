"""Whole-image prediction: dispatch on padding, softmax, flip TTA, largest-component clean-up.

One path for training validation, the evaluate stage and the exported predictor. `net` is any
callable (B, C, *spatial) -> (B, K, *spatial'): a torch module, a TorchScript module or an ONNX
Runtime wrapper. The caller puts a torch module in eval mode; here everything runs under
`torch.no_grad()` (not `inference_mode`, whose tensors refuse later in-place edits, e.g. by MONAI's
inverse transforms) on the net's device.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from pipeline.errors import InputError
from pipeline.inference.layout import channels_last
from pipeline.inference.settings import InferenceSettings
from pipeline.inference.tiles import Net, overlap_tile
from pipeline.inference.windows import sliding_window


def predict_logits(
    image: torch.Tensor, net: Net, settings: InferenceSettings, *, progress: bool = False
) -> torch.Tensor:
    """Logits for an image (C, *spatial) -> (K, *spatial), or a batch (B, C, *spatial) -> (B, K, *spatial).

    The number of spatial axes is len(settings.tile_size), which tells a 3D image (C, x, y, z) from
    a 2D batch (B, C, x, y). 'valid' padding uses overlap-tile (tile_size = output tile), 'same'
    uses a sliding window (tile_size = ROI; overlap and blend apply). TTA does not apply here.
    """
    s = settings
    nd = len(s.tile_size)
    if image.dim() not in (nd + 1, nd + 2):
        raise InputError(
            f"image of shape {tuple(image.shape)} does not fit a {nd}D tile size {tuple(s.tile_size)}: "
            f"expected (C, *spatial) or (B, C, *spatial) with {nd} spatial axes"
        )

    def one(x: torch.Tensor, run: Net) -> torch.Tensor:
        if s.padding == "valid":
            return overlap_tile(x, run, s.depth, s.output_tile(x.shape[1:]), s.batch_size, progress=progress)
        return sliding_window(x, run, s.tile_size, s.overlap, s.blend, s.batch_size, s.depth, progress=progress)

    with torch.no_grad(), channels_last(net, nd, s.channels_last) as run:
        if image.dim() == nd + 1:
            return one(image, run)
        return torch.stack([one(x, run) for x in image])


def flip_axes_combinations(spatial_dims: int, axes: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Every subset of `axes` (default: all spatial axes; identity included): 4 flips in 2D, 8 in 3D,
    as nnU-Net mirrors. Restricted to the axes training mirrored, the net never sees a flip it did not learn."""
    axes = tuple(range(spatial_dims)) if axes is None else tuple(axes)
    if any(not 0 <= a < spatial_dims for a in axes):
        raise InputError(f"flip axes {axes} out of range for {spatial_dims} spatial dims")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def predict_probabilities(
    image: torch.Tensor, net: Net, settings: InferenceSettings, *, progress: bool = False
) -> torch.Tensor:
    """Softmax probabilities, same shapes as `predict_logits`.

    With `settings.tta`, the mean of the softmax over the image flipped along every combination
    of `settings.tta_axes` (default: all spatial axes; 2**len(axes) passes, each flipped back
    before averaging).
    """
    nd = len(settings.tile_size)
    first_spatial = image.dim() - nd
    flips = flip_axes_combinations(nd, settings.tta_axes) if settings.tta else [()]
    total: torch.Tensor | None = None
    # the net's weights go channels-last once for every flip (predict_logits finds them so)
    with torch.no_grad(), channels_last(net, nd, settings.channels_last):
        for axes in flips:
            dims = [first_spatial + a for a in axes]
            x = torch.flip(image, dims) if dims else image
            prob = torch.softmax(predict_logits(x, net, settings, progress=progress).float(), dim=first_spatial - 1)
            prob = torch.flip(prob, dims) if dims else prob
            total = prob if total is None else total + prob
    assert total is not None
    return total / len(flips)


def keep_largest(labels: torch.Tensor, num_classes: int, connectivity: int | None = None) -> torch.Tensor:
    """Keep only the largest connected component of every foreground class (1..K-1), per class.

    `labels` holds class indices, shape (1, *spatial); removed voxels become background (0).
    MONAI's KeepLargestConnectedComponent; full connectivity by default.
    """
    from monai.transforms import KeepLargestConnectedComponent

    if num_classes < 2:
        return labels
    if labels.dim() < 3 or labels.shape[0] != 1:
        raise InputError(f"keep_largest expects class indices of shape (1, *spatial), got {tuple(labels.shape)}")
    transform = KeepLargestConnectedComponent(
        applied_labels=list(range(1, num_classes)), is_onehot=False, independent=True, connectivity=connectivity
    )
    return transform(labels)
