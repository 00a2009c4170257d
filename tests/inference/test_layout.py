"""Channels-last inference (pipeline.inference.layout): the default layout's answer, `auto` for torch
modules on the CPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pipeline.errors import InputError
from pipeline.inference import InferenceSettings, predict_logits
from pipeline.inference.layout import wants_channels_last
from pipeline.model import UNet
from pipeline.model.layout import is_channels_last


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_channels_last_inference_gives_the_default_layout_answer(padding):
    """`inference.channels_last` runs the net channels-last (its first convolution sees a
    channels-last input) with the default layout's answer up to float rounding, and hands the net
    back with its weights as they were: a net under training leaves validation as it entered."""
    torch.manual_seed(0)
    net = UNet(3, 2, 3, (4, 8, 16), padding=padding, norm="instance").eval()
    image = torch.randn(2, 27, 22, 30)  # two channels: the input itself must be made channels-last
    settings = InferenceSettings(padding=padding, depth=2, tile_size=(16, 16, 16), channels_last=False)
    seen: list[bool] = []
    net.encoders[0][0].register_forward_pre_hook(lambda _m, args: seen.append(is_channels_last(args[0])))

    plain = predict_logits(image, net, settings)
    assert seen and not any(seen)
    seen.clear()
    fast = predict_logits(image, net, replace(settings, channels_last=True))
    assert seen and all(seen)
    assert torch.allclose(fast, plain, atol=1e-4)
    assert torch.equal(fast.argmax(0), plain.argmax(0))
    assert all(p.is_contiguous() for p in net.parameters())

    net.to(memory_format=torch.channels_last_3d)  # train.channels_last: the weights stay channels-last
    predict_logits(image, net, replace(settings, channels_last="auto"))
    assert is_channels_last(net.encoders[0][0].weight)


def test_channels_last_auto_is_for_torch_modules_on_the_cpu():
    net = UNet(2, 1, 2, (4, 8))
    assert wants_channels_last(net, "auto") and not wants_channels_last(net, False)
    assert not wants_channels_last(lambda x: x, "auto") and not wants_channels_last(lambda x: x, True)
    with pytest.raises(InputError, match="channels_last"):
        InferenceSettings(padding="valid", depth=1, tile_size=(8, 8), channels_last="yes")
