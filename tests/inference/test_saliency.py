"""Grad-CAM for segmentation (pipeline.inference.saliency) on a U-Net trained here on one-object images:
the model-randomisation sanity check (Adebayo et al. 2018), the map's concentration on the object,
the layer choice, ensembles, and the foreground crop for images over the memory budget."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation
from scipy.stats import spearmanr

from pipeline.errors import InputError
from pipeline.inference.saliency import GRAD_COST, SegGradCAM, layer_level, resolve_layer
from pipeline.inference.settings import InferenceSettings
from pipeline.model import FoldEnsemble, UNet
from pipeline.model.shapes import forward_bytes_per_voxel

FEATURES = [8, 16, 32]
SIZE = 64


def one_object(centre: tuple[float, float], radius: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(z-scored image (1, SIZE, SIZE) float32, label (SIZE, SIZE) int64): one noisy disc."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij"))
    label = (((grid[0] - centre[0]) ** 2 + (grid[1] - centre[1]) ** 2) < radius**2).astype(np.int64)
    image = label + rng.normal(0, 0.3, label.shape)
    return ((image - image.mean()) / image.std()).astype(np.float32)[None], label


def fresh(seed: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(2, 1, 2, FEATURES, padding="same", norm="batch")


@pytest.fixture(scope="module")
def trained() -> UNet:
    """A 'same'-padding U-Net with batch norm given 60 Adam steps on discs at random places (about 2 s
    on a CPU). Without normalisation, some seeds give a net whose last decoder block signals only the
    background (its Grad-CAM, the positive part, is then a few pixels); batch norm avoids that here."""
    net = fresh(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(60):
        image, label = one_object(tuple(np.random.default_rng(step).uniform(16, 48, 2)), 10, step)
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(image)[None]), torch.from_numpy(label)[None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def copy_of(net: UNet) -> UNet:
    """SegGradCAM hooks its net and freezes its weights: each test takes its own copy."""
    out = fresh(0)
    out.load_state_dict(net.state_dict())
    return out.eval()


TEST_IMAGE, TEST_LABEL = one_object((22, 40), 10, seed=999)


def cam_map(net: torch.nn.Module, layer: str = "decoders.-1", image: np.ndarray = TEST_IMAGE) -> np.ndarray:
    return SegGradCAM(net, layer).maps(torch.from_numpy(image), [1])[0].numpy()


def test_randomised_weights_change_the_map(trained: UNet) -> None:
    """The model-randomisation check: the trained net's map against the same architecture with
    re-initialised weights ranks the pixels differently (Spearman < 0.5); the trained net's map of
    the same scene under new noise ranks them alike (> 0.8), so the statistic can tell."""
    reference = cam_map(copy_of(trained))
    assert reference.max() == pytest.approx(1.0)
    renoised, _ = one_object((22, 40), 10, seed=1000)
    rho_same = spearmanr(reference.ravel(), cam_map(copy_of(trained), image=renoised).ravel())[0]
    assert rho_same > 0.8, rho_same
    for seed in (1, 2, 3):
        rho = spearmanr(reference.ravel(), cam_map(fresh(seed)).ravel())[0]
        assert np.isnan(rho) or rho < 0.5, (seed, rho)  # nan: the random net predicts no region at all


@pytest.mark.parametrize("layer", ["decoders.-1", "decoders.0"])
def test_map_concentrates_on_the_object(trained: UNet, layer: str) -> None:
    """On an image with one disc (the net never saw this place or noise), at the default layer and
    the coarser decoder block: mean map inside the disc dilated by 3 px > 2x the mean outside, and
    >= 50 % of the map's mass in it."""
    cam = cam_map(copy_of(trained), layer)
    assert cam.shape == (SIZE, SIZE) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    inside = binary_dilation(TEST_LABEL > 0, iterations=3)
    assert cam[inside].mean() > 2 * cam[~inside].mean()
    assert cam[inside].sum() >= 0.5 * cam.sum()


def test_valid_padding_maps_sit_on_the_image_grid() -> None:
    """A 'valid' net (output smaller than its input): the map covers the image exactly, and a coarser
    layer's map, scaled and centre-cropped, lands on the same grid."""
    torch.manual_seed(0)
    net = UNet(2, 1, 3, [4, 8, 16], padding="valid").eval()
    image = torch.randn(1, 37, 29)
    for layer in ("decoders.-1", "decoders.0", "bottleneck"):
        cam = SegGradCAM(copy_net(net), layer).maps(image, [1, 2])
        assert cam.shape == (2, 37, 29) and cam.min() >= 0 and cam.max() <= 1


def copy_net(net: UNet) -> UNet:
    out = UNet(2, 1, 3, [4, 8, 16], padding="valid")
    out.load_state_dict(net.state_dict())
    return out.eval()


def test_layer_names() -> None:
    net = fresh(0)
    assert resolve_layer(net, "decoders.-1") == "decoders.1"
    assert [layer_level(resolve_layer(net, n), 2) for n in ("decoders.-1", "decoders.0", "bottleneck")] == [0, 1, 2]
    assert layer_level(resolve_layer(net, "encoders.1.0"), 2) == 1
    with pytest.raises(InputError, match=r"'decoder\.1'.*choose from encoders\.0, encoders\.1, bottleneck"):
        resolve_layer(net, "decoder.1")
    with pytest.raises(InputError, match="index 5 out of range"):
        resolve_layer(net, "decoders.5")
    with pytest.raises(InputError, match="no such U-Net module"):
        resolve_layer(net, "pool")


def test_ensemble_averages_its_members_maps(trained: UNet) -> None:
    """A FoldEnsemble's map (one Grad-CAM per member, averaged) still concentrates on the object."""
    cam = cam_map(FoldEnsemble([copy_of(trained), copy_of(trained)]))
    inside = binary_dilation(TEST_LABEL > 0, iterations=3)
    assert cam[inside].mean() > 2 * cam[~inside].mean()
    rho = spearmanr(cam.ravel(), cam_map(copy_of(trained)).ravel())[0]
    assert rho > 0.8


def test_image_over_the_budget_is_cropped_to_its_foreground(trained: UNet) -> None:
    """With a budget below the whole image, the map is computed on the predicted foreground's box
    (plus the receptive margin) and is zero outside it; inside, it ranks pixels like the whole-image map."""
    settings = InferenceSettings(padding="same", depth=2, tile_size=(32, 32), blend="constant")
    whole = cam_map(copy_of(trained))
    per_voxel = GRAD_COST * forward_bytes_per_voxel([FEATURES[0]], 2)
    cropper = SegGradCAM(copy_of(trained), budget_mb=3000 * per_voxel / 2**20)  # the box (52 x 52) fits
    assert cropper.budget_voxels < SIZE * SIZE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning that the box is over the budget too
        cam = cropper.explain(torch.from_numpy(TEST_IMAGE), [1], settings)[0].numpy()
    assert cam.shape == (SIZE, SIZE) and (cam == 0).sum() > 0
    ys, xs = np.nonzero(cam)
    assert ys.min() >= 22 - 10 - 20 and ys.max() <= 22 + 10 + 20  # disc +- radius +- margin(2)
    inside = binary_dilation(TEST_LABEL > 0, iterations=3)
    assert cam[inside].sum() >= 0.5 * cam.sum()
    assert spearmanr(cam[inside], whole[inside])[0] > 0.8
