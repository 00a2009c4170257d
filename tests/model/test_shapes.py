"""The shape helpers (pipeline.model.shapes) against the network: legal sizes, margins, the errors that
name the nearest legal sizes, and `fit_to_size`."""

import itertools

import numpy as np
import pytest
import torch

from pipeline.model import IllegalInputSize, UNet, check_input_size, legal_input_size, margin, output_size


def _forward_shape(net: UNet, size: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(net(torch.zeros(1, 1, *size)).shape[2:])


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


def test_fit_to_size_crops_and_mirror_pads() -> None:
    from pipeline.export import fit_to_size

    image = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    out = fit_to_size(image, (9, 4))
    assert out.shape == (2, 9, 4)
    np.testing.assert_array_equal(out[:, 2:7], image[:, :, 1:5])
    np.testing.assert_array_equal(out[:, 1], image[:, 1, 1:5])  # mirrored, edge not repeated
