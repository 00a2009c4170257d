"""Normalisation layers (pipeline.model.norms): the channels-last instance norm."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.layout import is_channels_last, memory_format
from pipeline.model.norms import InstanceNorm


@pytest.mark.parametrize("dims", [2, 3])
def test_instance_norm_keeps_channels_last_and_torchs_answer(dims):
    """Without autograd a channels-last input is normalised in its own layout (torch's kernel copies it
    out and back) to torch's answer; with autograd torch's kernel runs. The state dict is
    `nn.InstanceNorm{2,3}d(affine=True)`'s, so checkpoints from before load unchanged."""
    torch.manual_seed(0)
    norm = InstanceNorm(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    # two samples, means far from zero: what a one-pass float32 sum of squares gets wrong
    x = torch.randn(2, 6, *([24] * dims)) * 3 + torch.arange(6.0).view(1, 6, *([1] * dims)) * 20
    expected = F.instance_norm(x.double(), weight=norm.weight.double(), bias=norm.bias.double(), eps=norm.eps)
    x_cl = x.contiguous(memory_format=memory_format(dims, True))
    assert is_channels_last(x_cl)
    with torch.no_grad():
        y = norm(x_cl)
    assert is_channels_last(y)
    assert torch.allclose(y.double(), expected, atol=2e-5)

    x_grad = x_cl.clone().requires_grad_()
    norm(x_grad).square().sum().backward()
    assert x_grad.grad is not None and norm.weight.grad is not None and norm.bias.grad is not None

    torch_norm = (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(6, affine=True)
    assert list(norm.state_dict()) == list(torch_norm.state_dict())
    norm.load_state_dict(torch_norm.state_dict())
