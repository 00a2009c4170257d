"""Training losses (pipeline.training.losses): the weighted cross-entropy by hand, Dice + weighted CE,
the ignore label, and the border-weighted loss training through the train stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.training import make_config, prepare_data, read_history


@pytest.mark.parametrize("loss", ["weighted_ce", "dice_weighted_ce"])
def test_weighted_ce_with_border_weights_trains(workdir: Path, data_cache: Path, loss: str) -> None:
    """The preprocess stage's weight maps feed the paper's weighted cross-entropy (alone, or beside Dice)."""
    from pipeline.stages.train import run

    root = prepare_data(workdir, data_cache, dims=2, border_weights=True)
    w = np.load(next((root / "cases").glob("*_weight.npy")))
    assert w.max() > 5.0  # gaps between touching objects carry the w0 term
    cfg = make_config(2, "valid", train={"epochs": 2, "iterations_per_epoch": 4, "loss": loss, "ignore_label": 255})
    run(cfg)
    rows = read_history(workdir / "checkpoints" / "fold_0" / "train_history.csv")
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_weighted_cross_entropy_by_hand() -> None:
    from pipeline.training.losses import WeightedCrossEntropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).T.reshape(1, 2, 3, 1)  # 3 pixels, 2 classes
    label = torch.tensor([0, 1, 1]).reshape(1, 1, 3, 1)
    weight = torch.tensor([1.0, 3.0, 10.0]).reshape(1, 1, 3, 1)
    ce = -torch.log_softmax(logits, 1).gather(1, label)[0, 0, :, 0]
    loss = WeightedCrossEntropy()(logits, label, weight)
    assert loss.item() == pytest.approx(float((ce * weight[0, 0, :, 0]).sum() / 3), rel=1e-6)
    # the ignored pixel (label 255) drops out of numerator and denominator
    ignored = WeightedCrossEntropy(ignore_label=255)(logits, torch.tensor([0, 1, 255]).reshape(1, 1, 3, 1), weight)
    assert ignored.item() == pytest.approx(float((ce[:2] * weight[0, 0, :2, 0]).sum() / 2), rel=1e-6)


def test_dice_weighted_ce_is_monai_dice_plus_the_weighted_ce() -> None:
    from monai.losses import DiceLoss

    from pipeline.training.losses import DiceWeightedCE, WeightedCrossEntropy

    torch.manual_seed(0)
    logits, label = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))
    weight = 1.0 + 9.0 * torch.rand(2, 1, 8, 8)
    want = DiceLoss(to_onehot_y=True, softmax=True, batch=True)(logits, label) + WeightedCrossEntropy()(
        logits, label, weight
    )
    assert DiceWeightedCE(3)(logits, label, weight).item() == pytest.approx(want.item(), rel=1e-5)
    heavier = DiceWeightedCE(3)(logits, label, weight * 2)  # the weight map reaches the CE term
    assert heavier.item() > DiceWeightedCE(3)(logits, label, weight).item()


def test_dice_ce_ignore_label_masks_voxels() -> None:
    from pipeline.training.losses import MaskedDiceCE

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8))
    plain = MaskedDiceCE(3)(logits, label)
    masked = label.clone()
    masked[:, :, :, 4:] = 255
    other = torch.randn(2, 3, 8, 8)
    other[..., :4] = logits[..., :4]  # differs only where the label is ignored
    a = MaskedDiceCE(3, ignore_label=255)(logits, masked)
    b = MaskedDiceCE(3, ignore_label=255)(other, masked)
    assert torch.isfinite(plain) and a.item() == pytest.approx(b.item(), rel=1e-6)
    # with nothing ignored the masked path equals MONAI's DiceCELoss
    assert MaskedDiceCE(3, ignore_label=7)(logits, label).item() == pytest.approx(plain.item(), rel=1e-5)
