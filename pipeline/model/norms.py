"""Instance normalisation that keeps a channels-last tensor channels-last.

Channels-last is the layout oneDNN's CPU convolutions run fastest in (`inference.channels_last`,
benchmarks/README.md). torch's `instance_norm` breaks it: it views its input as (1, N*C, *spatial),
which a channels-last tensor can only do by copying there and back, and on a 220^3 3D tile those
copies cost more than the faster convolutions save. torch's channels-last `batch_norm` kernel
(the same statistics when N = 1) sums each channel in one float32 accumulator: 2e-2 off on 10M voxels.

So without autograd (inference) a channels-last input is normalised here, in its own layout: the
statistics come from the (N, voxels, C) view in two passes -- the mean, then the centred sum of
squares in cache-sized chunks (as accurate as torch's kernel, ~1e-6) -- and one `addcmul` applies
them. Everything else (training, export, TorchScript with plain inputs) is torch's `instance_norm`.
Parameters and state-dict keys are those of `nn.InstanceNorm{2,3}d(affine=True)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.layout import is_channels_last


def channels_last_instance_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, chunk_values: int = 1 << 20
) -> torch.Tensor:
    """Instance norm of a channels-last x (N, C, *spatial); the result is channels-last too.
    The centred pass runs over `chunk_values` values at a time (4 MiB of float32: stays in cache)."""
    n, c = x.shape[0], x.shape[1]
    rows = x.movedim(1, -1).reshape(n, -1, c)  # a view: channels-last stores (N, *spatial, C)
    count = rows.shape[1]
    mean = rows.sum(1) / count
    centred_sq = torch.zeros_like(mean)
    for part in rows.split(max(1, chunk_values // (n * c)), dim=1):
        d = part - mean.unsqueeze(1)
        centred_sq += (d * d).sum(1)
    scale = torch.rsqrt(centred_sq / count + eps) * weight
    shift = bias - mean * scale
    shape = [n, c] + [1] * (x.dim() - 2)
    return torch.addcmul(shift.view(shape), x, scale.view(shape))


class InstanceNorm(nn.Module):
    """`nn.InstanceNorm{2,3}d(num_features, affine=True)`, with the channels-last inference path above."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full_precision = x.dtype == torch.float32 or x.dtype == torch.float64  # bf16 sums go to torch
        if full_precision and not torch.is_grad_enabled() and is_channels_last(x):
            return channels_last_instance_norm(x, self.weight, self.bias, self.eps)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine=True"
