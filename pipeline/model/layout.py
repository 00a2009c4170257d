"""Memory layouts: the channels-last formats oneDNN's CPU convolutions run fastest in.

One place for the training step (`train.channels_last`), inference (`inference.channels_last`) and
the layout-keeping instance norm (`pipeline.model.norms`).
"""

from __future__ import annotations

import torch


def memory_format(spatial_dims: int, channels_last: bool) -> torch.memory_format:
    """channels_last (2D) / channels_last_3d (3D) when asked for, else torch's default layout."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether x (N, C, *spatial) is stored channels-last and not also plainly contiguous (C = 1 or
    1-voxel images are both, and then torch's default path is just as good)."""
    if x.dim() == 4:
        return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if x.dim() == 5:
        return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    return False
