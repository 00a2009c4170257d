"""The `nnunet` augmentation recipe (pipeline.training.recipes), each transform on a known input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def _always(t):  # noqa: ANN001, ANN202 - a MONAI random transform, made to fire every time
    t.prob = 1.0
    return t


def _by_name(chain: list, name: str, **attrs: object) -> list:
    return [t for t in chain if type(t).__name__ == name and all(getattr(t, k, None) == v for k, v in attrs.items())]


def test_rotation_moves_a_marker_along_its_circle_up_to_30_degrees() -> None:
    """A marker 20 px from the centre stays 20 px from it, turned by at most 30 degrees, and the
    turns reach past the `light` recipe's 15."""
    from pipeline.training.recipes import NNUNET_ROTATE, nnunet_spatial

    rotate, _ = (_always(t) for t in nnunet_spatial(["image"], ("bilinear",), 2))
    image = torch.zeros(1, 65, 65)
    image[0, 32 - 20, 32] = 1.0  # 20 px from the centre along axis 0
    rotate.set_random_state(3)
    turns = []
    for _ in range(30):
        out = torch.as_tensor(rotate({"image": image})["image"])[0]
        moved = np.array(np.unravel_index(int(out.argmax()), out.shape), float) - 32
        assert np.linalg.norm(moved) == pytest.approx(20, abs=1.5), "a rotation keeps the distance to the centre"
        turns.append(math.degrees(math.atan2(moved[1], -moved[0])))  # from "up" (axis 0 negative)
    assert max(abs(t) for t in turns) <= math.degrees(NNUNET_ROTATE) + 3
    assert max(turns) > 20 and min(turns) < -20


def test_scaling_moves_a_marker_by_0_7_to_1_4() -> None:
    """MONAI's affine maps output to input coordinates: a factor f shows a marker 12 px out at 12 / f."""
    from pipeline.training.recipes import nnunet_spatial

    _, scale = (_always(t) for t in nnunet_spatial(["image"], ("bilinear",), 2))
    image = torch.zeros(1, 65, 65)
    image[0, 32 - 12, 32] = 1.0
    scale.set_random_state(0)
    seen = []
    for _ in range(30):
        out = torch.as_tensor(scale({"image": image})["image"])[0]
        moved = np.array(np.unravel_index(int(out.argmax()), out.shape), float) - 32
        seen.append(float(np.linalg.norm(moved)))
    assert min(seen) >= 12 / 1.4 - 1.5 and max(seen) <= 12 / 0.7 + 1.5
    assert max(seen) - min(seen) > 4, "the factors spread over the range"


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_is_monotone_keeps_mean_and_std_and_inversion_restores_the_orientation(invert: bool) -> None:
    from pipeline.training.recipes import nnunet_intensity

    (gamma,) = _by_name(nnunet_intensity(3), "RandAdjustContrastd", invert_image=invert)
    gamma = _always(gamma)
    gamma.set_random_state(1)
    ramp = torch.linspace(0, 1, 4 * 5 * 6).reshape(1, 4, 5, 6)
    out = torch.as_tensor(gamma({"image": ramp})["image"]).flatten()
    assert torch.all(out[1:] >= out[:-1]), "gamma on [0, 1] is monotone (the inverted one is not flipped)"
    assert float(out.mean()) == pytest.approx(float(ramp.mean()), abs=1e-4)
    assert float(out.std()) == pytest.approx(float(ramp.std()), rel=1e-3)
    assert not torch.allclose(out, ramp.flatten(), atol=1e-3), "a gamma other than 1 changed something"


def test_intensity_transforms_on_known_inputs() -> None:
    from pipeline.training.recipes import nnunet_intensity

    chain = [_always(t) for t in nnunet_intensity(2)]
    for t in chain:
        t.set_random_state(0)
    ones = torch.ones(1, 16, 16)
    (brightness,) = _by_name(chain, "RandScaleIntensityd")
    factor = float(torch.as_tensor(brightness({"image": ones})["image"]).mean())
    assert 0.75 - 1e-6 <= factor <= 1.25 + 1e-6
    ramp = torch.linspace(-1, 1, 256).reshape(1, 16, 16)
    (contrast,) = _by_name(chain, "RandScaleIntensityFixedMeand")
    out = torch.as_tensor(contrast({"image": ramp})["image"])
    assert float(out.min()) >= -1 - 1e-6 and float(out.max()) <= 1 + 1e-6, "contrast stays within the range"
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    checker = checker.float()[None]
    (blur,) = _by_name(chain, "RandGaussianSmoothd")
    assert float(torch.as_tensor(blur({"image": checker})["image"]).std()) < float(checker.std())
    (lowres,) = _by_name(chain, "RandSimulateLowResolutiond")
    assert torch.as_tensor(lowres({"image": checker})["image"]).shape == checker.shape
    (noise,) = _by_name(chain, "RandGaussianNoised")
    zeros = torch.zeros(1, 64, 64)
    assert 0 < float(torch.as_tensor(noise({"image": zeros})["image"]).std()) <= math.sqrt(0.1) + 0.02


def test_the_light_recipe_is_todays_chain() -> None:
    """`light` (the default) keeps the transforms, parameters and order the pipeline had."""
    from pipeline.config import AugmentConfig
    from pipeline.training.recipes import RECIPES

    chain = RECIPES["light"](["image", "label"], ("bilinear", "nearest"), AugmentConfig(), 3)
    names = [type(t).__name__ for t in chain]
    expected = ["RandElasticd", "RandAffined", "RandFlipd", "RandFlipd", "RandFlipd"]
    expected += ["RandScaleIntensityd", "RandShiftIntensityd", "RandGaussianNoised"]
    assert names == expected
