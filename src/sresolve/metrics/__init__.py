"""Evaluation protocol of the SR literature (8-bit, shave, BT.601 studio Y, Wang-2004 SSIM) and its torchmetrics.

Functional API in :mod:`sresolve.metrics.protocol`; data-set means (sum / count, DDP-exact) in
:mod:`sresolve.metrics.modules`; the perceptual metrics LPIPS (Zhang et al. 2018, :mod:`sresolve.metrics.lpips`) and
NIQE (Mittal et al. 2013, :mod:`sresolve.metrics.niqe`), both lower-is-better, with their configuration and data-set
means in :mod:`sresolve.metrics.perceptual`.
"""

from __future__ import annotations

from sresolve.metrics.lpips import (
    LPIPS,
    LPIPSBackboneError,
    LPIPSBackboneNotFoundError,
    load_lpips,
)
from sresolve.metrics.modules import PSNRY, SSIMY, ImageQualityMetric
from sresolve.metrics.perceptual import LPIPSMetric, NIQEMetric, PerceptualMetrics, perceptual_from_config
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
    "LPIPS",
    "PSNRY",
    "SSIMY",
    "SSIM_C1",
    "SSIM_C2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "EvalProtocol",
    "ImageQualityMetric",
    "LPIPSBackboneError",
    "LPIPSBackboneNotFoundError",
    "LPIPSMetric",
    "NIQEMetric",
    "PerceptualMetrics",
    "gaussian_window",
    "load_lpips",
    "perceptual_from_config",
    "psnr_rgb",
    "psnr_y",
    "quantize",
    "rgb_to_y",
    "shave",
    "ssim_rgb",
    "ssim_y",
]
