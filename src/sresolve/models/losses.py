"""Pixel losses used by the SR recipes.

``FFTLoss`` is the frequency term of SAFMN (Sun et al., ICCV 2023, Sec. 3.4 "Loss function"): the L1 distance
between the real and imaginary parts of the 2-D real FFT of prediction and target, added to the L1 pixel loss
with weight 0.05 in the official recipes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class L1Loss(nn.Module):
    """Mean absolute error (BasicSR ``L1Loss`` with ``reduction='mean'``)."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(pred, target)


class FFTLoss(nn.Module):
    """L1 between ``rfft2`` spectra (real and imaginary parts stacked), default 'backward' normalisation."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred_f = torch.fft.rfft2(pred.float())
        target_f = torch.fft.rfft2(target.float())
        return F.l1_loss(torch.view_as_real(pred_f), torch.view_as_real(target_f))


LOSSES: dict[str, type[nn.Module]] = {"l1": L1Loss, "fft": FFTLoss}


class WeightedLoss(nn.Module):
    """Weighted sum of named losses, e.g. ``{"l1": 1.0, "fft": 0.05}``; returns the total and each weighted term."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(LOSSES))
        if unknown:
            raise ValueError(f"model.loss: unknown loss name(s) {unknown}; allowed: {sorted(LOSSES)}")
        active = {k: float(v) for k, v in weights.items() if float(v) != 0.0}
        if not active:
            raise ValueError(f"model.loss: at least one loss needs a non-zero weight, got {dict(weights)}")
        self.weights = active
        self.terms = nn.ModuleDict({k: LOSSES[k]() for k in active})

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {k: self.weights[k] * self.terms[k](pred, target) for k in self.weights}
        return torch.stack(list(parts.values())).sum(), parts
