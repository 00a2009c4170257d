"""Sliding-window inference for 'same' padding, via MONAI's `sliding_window_inference`.

A same-padding net sees zero padding at every window border, so windows overlap and their
predictions are blended (Gaussian importance weighting down-weights the borders by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pipeline.errors import InputError
from pipeline.inference.tiles import Net, net_device_dtype


def window_size(image_size: Sequence[int], roi_size: Sequence[int], depth: int) -> tuple[int, ...]:
    """ROI per axis: the requested size, shrunk to the image where it is smaller, rounded up to a
    multiple of 2**depth (a legal same-padding input). MONAI pads an image smaller than the ROI."""
    if len(roi_size) != len(image_size):
        raise InputError(
            f"window size {tuple(roi_size)} has {len(roi_size)} axes, image {tuple(image_size)} has {len(image_size)}"
        )
    step = 2**depth
    return tuple(max(step, math.ceil(min(int(r), int(n)) / step) * step) for r, n in zip(roi_size, image_size))


@torch.no_grad()
def sliding_window(
    image: torch.Tensor,
    net: Net,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    depth: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Logits (K, *spatial) for one image (C, *spatial) with a same-padding net.

    `roi_size` is rounded to a legal window for a depth-`depth` U-Net (see `window_size`);
    `blend` is MONAI's mode, "gaussian" or "constant". An image smaller than the window is
    zero-padded (the same value the net's own convolution padding uses) and cropped back.
    """
    from monai.inferers import sliding_window_inference

    if image.dim() < 3:
        raise InputError(f"expected an image (C, *spatial) with 2 or 3 spatial axes, got shape {tuple(image.shape)}")
    if blend not in ("gaussian", "constant"):
        raise InputError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    image = torch.as_tensor(image)
    device, dtype = net_device_dtype(net, image)
    image = image.to(device=device, dtype=dtype)
    roi = window_size(image.shape[1:], roi_size, depth)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        y = net(torch.as_tensor(x))
        return torch.as_tensor(y[0] if isinstance(y, (tuple, list)) else y)

    out = sliding_window_inference(
        image[None],
        roi_size=roi,
        sw_batch_size=batch_size,
        predictor=predictor,
        overlap=overlap,
        mode=blend,
        padding_mode="constant",
        cval=0.0,
        progress=progress,
    )
    return torch.as_tensor(out)[0]
