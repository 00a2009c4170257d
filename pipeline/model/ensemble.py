"""A K-fold ensemble as one network: what evaluate scores, export saves and the predictor runs.

The members' softmax probabilities are averaged (nnU-Net's ensembling) and returned as their
logarithm. The softmax of log(p) is p again, so everything downstream that treats the output as
logits -- argmax, softmax, TTA averaging, the bundle's `Activationsd` -- sees the ensemble, and the
TorchScript and ONNX files are one model with the usual input and output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FoldEnsemble(nn.Module):
    """log(mean_k softmax(member_k(x))) over the class axis; members share one architecture."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.n_members = len(members)
        self.tiny = 1e-30  # log(0) would put -inf into the parity checks; softmax reads exp(log 1e-30) as 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(0)
        first = True
        for member in self.members:
            p = torch.softmax(member(x), dim=1)
            total = p if first else total + p
            first = False
        return torch.log((total / self.n_members).clamp_min(self.tiny))
