"""The U-Net's shapes and parameter count against the papers, and the shape helpers against the network."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model import IllegalInputSize, UNet, check_input_size, legal_input_size, margin, output_size
from pipeline.model.layout import is_channels_last, memory_format
from pipeline.model.norms import InstanceNorm


def _forward_shape(net: UNet, size: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(net(torch.zeros(1, 1, *size)).shape[2:])


def test_paper_2d_configuration():
    net = UNet(2, 1, 2, (64, 128, 256, 512, 1024)).eval()
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    assert output_size((572, 572), 4) == (388, 388)
    assert _forward_shape(net, (572, 572)) == (388, 388)
    assert margin(4) == 92


def test_cicek_3d_configuration():
    net = UNet(3, 1, 3, (32, 64, 128, 256)).eval()
    assert output_size((132, 132, 116), 3) == (44, 44, 28)
    assert _forward_shape(net, (132, 132, 116)) == (44, 44, 28)


@pytest.mark.parametrize("dims", [2, 3])
def test_same_padding_keeps_size_and_rejects_non_divisible(dims):
    net = UNet(dims, 1, 2, (4, 8, 16), padding="same").eval()
    size = (16, 24, 32)[:dims]
    assert _forward_shape(net, size) == size
    assert output_size(size, 2, "same") == size
    with pytest.raises(IllegalInputSize, match=r"nearest legal: 16 or 20"):
        check_input_size((18,) * dims, 2, "same")


def test_illegal_valid_size_names_nearest_legal_sizes():
    with pytest.raises(IllegalInputSize, match=r"axis 0: 570 \(nearest legal: 556 or 572\)"):
        output_size((570, 572), 4)


@pytest.mark.parametrize("dims,depth", list(itertools.product([2, 3], [2, 3, 4, 5])))
def test_shape_helpers_agree_with_network(dims, depth):
    feats = [2 * (i + 1) for i in range(depth + 1)]
    torch.manual_seed(0)
    for padding in ("valid", "same"):
        net = UNet(dims, 1, 2, feats, padding=padding).eval()
        sizes = [1, 7] if dims == 3 and depth >= 4 else [1, 9, 20]
        for min_out in sizes:
            inp = legal_input_size((min_out,) * dims, depth, padding)
            out = output_size(inp, depth, padding)
            assert all(o >= min_out for o in out)
            assert _forward_shape(net, inp) == out
            if padding == "valid":
                assert (inp[0] - out[0]) // 2 == margin(depth)
                # one step smaller is illegal or gives a smaller output: the helper returned the smallest
                smaller = inp[0] - 2**depth
                try:
                    assert output_size((smaller,) * dims, depth)[0] < min_out
                except IllegalInputSize:
                    pass


@pytest.mark.parametrize("norm,upsample", [("batch", "interpolate"), ("instance", "transpose")])
def test_options_keep_shapes(norm, upsample):
    net = UNet(2, 3, 4, (4, 8, 16), norm=norm, dropout=0.5, upsample=upsample).eval()
    inp = legal_input_size((10, 10), 2)
    with torch.no_grad():
        y = net(torch.randn(2, 3, *inp))
    assert y.shape == (2, 4, *output_size(inp, 2))


def test_scripts_and_traces_to_same_output():
    net = UNet(2, 1, 2, (4, 8, 16)).eval()
    x = torch.randn(1, 1, *legal_input_size((12, 20), 2))
    scripted = torch.jit.script(net)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net(x), atol=1e-6)


def test_initialisation_keeps_activations_at_scale_through_depth():
    """The paper's He initialisation: a unit-variance input keeps every level's ReLU activations at
    about unit scale (PyTorch's default init shrinks them about 4x per level, to ~0.01 at level 4)."""
    torch.manual_seed(0)
    net = UNet(2, 1, 2, (16, 32, 64, 128, 256), padding="same", norm="none").eval()
    scales: list[float] = []
    for level in net.encoders:
        level.register_forward_hook(lambda m, i, out: scales.append(float(out.pow(2).mean().sqrt())))
    with torch.no_grad():
        net(torch.randn(2, 1, 64, 64))
    assert len(scales) == len(net.encoders) and all(0.3 < s < 5 for s in scales), scales


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
