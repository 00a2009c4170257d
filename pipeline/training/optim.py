"""Optimiser and per-iteration learning-rate schedule from the config.

The schedule spans the *planned* run (train.epochs x iterations_per_epoch), never the number of
epochs one invocation happens to run (`--max-epochs`), so an interrupted run resumed later follows
exactly the same learning rates as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from pipeline.config import Config

POLY_EXPONENT = 0.9  # nnU-Net's polynomial decay


def build_optimizer(cfg: Config, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        # the paper: SGD with high momentum (0.99), so many past samples drive each update
        return torch.optim.SGD(
            params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.momentum > 0
        )
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


def lr_factor(kind: str, step: int, total: int) -> float:
    """Multiplier of the base LR after `step` of `total` optimiser steps."""
    frac = min(step, total) / max(total, 1)
    if kind == "poly":
        return (1.0 - frac) ** POLY_EXPONENT
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    return 1.0


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration; its state_dict holds only numbers (weights_only-safe)."""
    total = cfg.train.epochs * cfg.train.iterations_per_epoch
    kind = cfg.train.scheduler
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(kind, step, total))
