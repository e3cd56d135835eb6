"""Evaluation protocol of the SR literature (8-bit, shave, BT.601 studio Y, Wang-2004 SSIM) and its torchmetrics.

Functional API in :mod:`sresolve.metrics.protocol`; data-set means (sum / count, DDP-exact) in
:mod:`sresolve.metrics.modules`.
"""

from __future__ import annotations

from sresolve.metrics.modules import PSNRY, SSIMY, ImageQualityMetric
from sresolve.metrics.protocol import (
    SSIM_C1,
    SSIM_C2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    EvalProtocol,
    gaussian_window,
    psnr_rgb,
    psnr_y,
    quantize,
    rgb_to_y,
    shave,
    ssim_rgb,
    ssim_y,
)

__all__ = [
    "PSNRY",
    "SSIMY",
    "SSIM_C1",
    "SSIM_C2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "EvalProtocol",
    "ImageQualityMetric",
    "gaussian_window",
    "psnr_rgb",
    "psnr_y",
    "quantize",
    "rgb_to_y",
    "shave",
    "ssim_rgb",
    "ssim_y",
]
