"""An exponential moving average of the trained weights, batch-norm statistics included.

Why: with batch 1 and batch norm (the ISBI preset) the weights and, more so, the running
statistics of the last few steps decide what one validation sees, so the validation Dice swings
by 0.1 from one check to the next and best.pt is a noisy pick. The average over the last
~1/(1 - decay) steps is what gets validated, kept as best.pt's `model` and exported; the raw
weights keep training underneath (the checkpoint's `training_model`).

Early on the average would be mostly the random initial weights, so the decay warms up as
(1 + n) / (10 + n) after n updates (as timm's ModelEmaV2 and TensorFlow's ExponentialMovingAverage
with num_updates do) until it reaches `train.ema_decay`.

Measured (benchmarks/README.md): on ISBI the averaged Dice stops swinging and drifts down from
epoch 5-25, and the cells score no better; on hippocampus it rises smoothly to the plateau the raw weights
swing around (0.8766 against 0.8775 at 30 minutes). So the presets leave it off (`null`).
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(decay: float, updates: torch.Tensor) -> torch.Tensor:
    """The decay of the update after `updates` earlier ones: warmed up, capped at `decay`.

    Args:
        decay: the configured decay (`train.ema_decay`), in (0, 1).
        updates: how many updates the average already holds (a 0-dim tensor).

    Returns:
        A 0-dim float tensor on `updates`' device.
    """
    n = updates.to(torch.float64)
    return torch.clamp((1.0 + n) / (10.0 + n), max=decay)


def build_ema(net: torch.nn.Module, decay: float) -> AveragedModel:
    """torch's `AveragedModel` of `net` (a copy; parameters and buffers) with the warmed-up decay.

    Args:
        net: the network being trained (not a DDP or compiled wrapper: the average holds a plain copy).
        decay: `train.ema_decay`.

    Returns:
        The average, to be updated with `update_parameters(net)` after each optimiser step.
    """

    def average(avg: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not avg.is_floating_point():  # batch norm's step counter: the net's own
            return current
        return torch.lerp(avg, current, (1.0 - ema_decay_at(decay, updates)).to(avg.dtype))

    ema = AveragedModel(net, avg_fn=average, use_buffers=True)
    return ema.eval()


def restore_ema(ema: AveragedModel, weights: dict[str, torch.Tensor], updates: int) -> None:
    """Put a checkpointed average back: its weights (the checkpoint's `model`) and update count."""
    ema.module.load_state_dict(weights)
    ema.n_averaged.fill_(updates)
