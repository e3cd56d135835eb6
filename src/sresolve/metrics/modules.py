"""torchmetrics wrappers of the evaluation protocol that give the data-set mean of per-image scores.

The SR literature reports, per test set, the **mean of the per-image PSNR / SSIM** (RCAN ``Evaluate_PSNR_SSIM.m``,
BasicSR ``validation``), not the PSNR of the pooled MSE that ``torchmetrics.image.PeakSignalNoiseRatio`` computes
with its default ``dim=None``. The metrics here keep two states, the float64 sum of the per-image values and the
int64 number of images, both reduced with ``"sum"`` across processes; ``compute`` returns ``total / count``.
Under DDP with a sharding sampler that does not pad (every image scored on exactly one rank) this is the exact
data-set mean whatever the number of ranks; a padding ``DistributedSampler`` would count repeated images twice.

Per-image scores come from :mod:`sresolve.metrics.protocol` (quantise to 8 bit, shave ``crop_border``, BT.601
studio-range Y, float64). An image whose PSNR is ``+inf`` (SR identical to HR) makes the mean ``+inf``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from sresolve.metrics.protocol import EvalProtocol

__all__ = ["PSNRY", "SSIMY", "ImageQualityMetric"]


class ImageQualityMetric(Metric):
    """Base class: accumulate the sum and count of a per-image score; ``compute`` = mean of per-image values.

    Args:
        crop_border: pixels shaved from every edge (normally the scale factor).
        y_channel: score BT.601 studio-range Y (the paper protocol) or RGB.
        quantize: round SR and HR to 8-bit levels first (the paper protocol).
        **kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``, ...).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    total: Tensor
    count: Tensor

    def __init__(self, crop_border: int, y_channel: bool = True, quantize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.protocol = EvalProtocol(crop_border=crop_border, y_channel=y_channel, quantize=quantize)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def per_image(self, sr: Tensor, hr: Tensor) -> Tensor:
        """The per-image score ``[B]`` (float64) that this metric averages; subclasses implement it."""
        raise NotImplementedError

    def update(self, sr: Tensor, hr: Tensor) -> None:
        """Score a batch (``B×3×H×W`` or ``3×H×W`` in [0, 1]) and add its per-image values to the running sum."""
        values = self.per_image(sr, hr)
        self.total += values.sum().to(self.total.device)
        self.count += values.numel()

    def compute(self) -> Tensor:
        """Mean of the per-image values seen so far (float64 scalar; ``nan`` before any update)."""
        return self.total / self.count

    def extra_repr(self) -> str:
        p = self.protocol
        return f"crop_border={p.crop_border}, y_channel={p.y_channel}, quantize={p.quantize}"


class PSNRY(ImageQualityMetric):
    """Data-set PSNR (dB): mean of per-image ``10 log10(255² / MSE)`` on studio-range Y (or RGB), see
    :func:`sresolve.metrics.protocol.psnr_y`."""

    plot_lower_bound = 0.0

    def per_image(self, sr: Tensor, hr: Tensor) -> Tensor:
        return self.protocol.psnr(sr, hr)


class SSIMY(ImageQualityMetric):
    """Data-set SSIM: mean of per-image SSIM (Wang et al. 2004, 11×11 Gaussian σ=1.5, 'valid') on studio-range Y
    (or the per-channel mean on RGB), see :func:`sresolve.metrics.protocol.ssim_y`."""

    plot_upper_bound = 1.0

    def per_image(self, sr: Tensor, hr: Tensor) -> Tensor:
        return self.protocol.ssim(sr, hr)
