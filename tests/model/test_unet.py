"""The U-Net (pipeline.model.unet): shapes and parameter count against the papers, options, scripting
and initialisation."""

import pytest
import torch

from pipeline.model import UNet, legal_input_size, margin, output_size


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
