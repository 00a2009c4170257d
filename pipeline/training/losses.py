"""Training losses: MONAI Dice+CE (default), the U-Net paper's pixel-weighted cross-entropy, and
MONAI Dice + that weighted cross-entropy.

Both take raw logits (B, K, *spatial), an integer label (B, 1, *spatial) and an optional weight
map (B, 1, *spatial); voxels labelled `ignore_label` contribute nothing to either loss.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.config import Config, ConfigError


class WeightedCrossEntropy(nn.Module):
    """E = sum_x w(x) * CE(x) / sum_x [x not ignored] -- Ronneberger et al. (2015), eq. 1.

    w is the border weight map computed once per case by the preprocess stage (class balance +
    w0 * exp(-(d1 + d2)^2 / 2 sigma^2)), so touching objects get separated.
    """

    def __init__(self, ignore_label: int | None = None) -> None:
        super().__init__()
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()  # bf16 autocast: the loss in float32
        target = label[:, 0].long()
        valid = torch.ones_like(target, dtype=logits.dtype)
        if self.ignore_label is not None:
            valid = (target != self.ignore_label).to(logits.dtype)
            target = torch.where(target == self.ignore_label, torch.zeros_like(target), target)
        ce = F.cross_entropy(logits, target, reduction="none")
        w = valid if weight is None else weight[:, 0].to(logits.dtype) * valid
        return (ce * w).sum() / valid.sum().clamp_min(1.0)


def _dice_inputs(
    logits: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_label: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(softmax probabilities, one-hot target, integer target, keep mask), the ignored voxels zeroed
    in both, so that MONAI's DiceLoss sees them in neither."""
    target = label[:, 0].long()
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    target = torch.where(keep, target, torch.zeros_like(target))
    mask = keep.unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1) * mask
    onehot = F.one_hot(target, num_classes).movedim(-1, 1).to(logits.dtype) * mask
    return probs, onehot, target, keep


class MaskedDiceCE(nn.Module):
    """MONAI DiceLoss + cross-entropy, with an ignore label masked out of both terms.

    Without an ignore label this is MONAI's `DiceCELoss(to_onehot_y=True, softmax=True, batch=True)`.
    """

    def __init__(self, num_classes: int, ignore_label: int | None = None) -> None:
        super().__init__()
        from monai.losses import DiceCELoss, DiceLoss

        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.plain = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.dice = DiceLoss(batch=True)

    def forward(self, logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()  # bf16 autocast: the loss in float32
        if self.ignore_label is None:
            return self.plain(logits, label.long())
        probs, onehot, target, keep = _dice_inputs(logits, label, self.num_classes, self.ignore_label)
        ce = F.cross_entropy(logits, target, reduction="none")
        ce = (ce * keep).sum() / keep.sum().clamp_min(1)
        return self.dice(probs, onehot) + ce


class DiceWeightedCE(nn.Module):
    """MONAI DiceLoss + the paper's border-weighted cross-entropy: Dice balances the classes, the
    weight map makes the thin borders between touching objects count."""

    def __init__(self, num_classes: int, ignore_label: int | None = None) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.dice = DiceLoss(batch=True)
        self.weighted_ce = WeightedCrossEntropy(ignore_label)

    def forward(self, logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()  # bf16 autocast: the loss in float32
        probs, onehot, _, _ = _dice_inputs(logits, label, self.num_classes, self.ignore_label)
        return self.dice(probs, onehot) + self.weighted_ce(logits, label, weight)


def build_loss(cfg: Config, num_classes: int) -> nn.Module:
    """The loss named by cfg.train.loss; call it as loss(logits, label, weight_or_None), where
    logits is a list of every decoder level's logits (finest first) under train.deep_supervision."""
    if cfg.train.ignore_label is not None and not 0 <= cfg.train.ignore_label < 256:
        raise ConfigError(f"train.ignore_label={cfg.train.ignore_label} must be a label value in 0..255")
    if cfg.train.loss == "weighted_ce":
        base: nn.Module = WeightedCrossEntropy(cfg.train.ignore_label)
    elif cfg.train.loss == "dice_weighted_ce":
        base = DiceWeightedCE(num_classes, cfg.train.ignore_label)
    else:
        base = MaskedDiceCE(num_classes, cfg.train.ignore_label)
    if cfg.train.deep_supervision:
        from pipeline.training.deep_supervision import DeepSupervisionLoss

        return DeepSupervisionLoss(base)
    return base
