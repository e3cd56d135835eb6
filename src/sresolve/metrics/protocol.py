"""The PSNR / SSIM evaluation protocol of the super-resolution literature, as pure torch functions.

This is the protocol of RCAN's ``Evaluate_PSNR_SSIM.m`` and BasicSR's ``psnr_ssim.py`` (used to report the HAT,
HMANet, SAFMN, EQSR and AMRSR numbers):

1. The SR output is quantised to 8-bit levels (clip to [0, 1], ``round(255 x) / 255``), as it is when written to PNG;
   the ground truth is 8-bit already (:func:`quantize`).
2. ``crop_border`` pixels (normally the scale factor) are shaved from every edge (:func:`shave`).
3. The scores are computed on the luma channel of ITU-R BT.601 *studio range* YCbCr on the [0, 255] scale,
   ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with RGB in [0, 1], unrounded (:func:`rgb_to_y`).
4. PSNR per image: ``10 log10(255² / MSE)`` in float64 (:func:`psnr_y`).
5. SSIM per image: Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error visibility to structural
   similarity", IEEE TIP 13(4), 2004, eq. (13) with ``C1 = (K1 L)²``, ``C2 = (K2 L)²``, ``K1 = 0.01``, ``K2 = 0.03``,
   ``L = 255``, local statistics under an 11×11 circular-symmetric Gaussian window with σ = 1.5 normalised to unit
   sum (Sec. III-C), evaluated only where the window lies inside the image ('valid' filtering, the map is
   ``(H - 10) × (W - 10)``), and the mean of the map (MSSIM, eq. (17)); no automatic down-sampling (:func:`ssim_y`).
6. A data set's score is the mean of the per-image values (see :mod:`sresolve.metrics.modules`).

Everything is computed in float64 on the device of the inputs. The RGB variants (:func:`psnr_rgb`, :func:`ssim_rgb`)
are BasicSR's ``test_y_channel: false`` setting (PSNR over all three channels; SSIM = mean of the per-channel SSIM),
used for example by SAFMN's training-time validation.

Well-known libraries deviate from this protocol by default (reflect padding in torchmetrics' SSIM, full-range luma in
kornia and pyiqa, pooled MSE in torchmetrics' PSNR module); ``tests/test_metrics.py`` pins the differences.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SSIM_C1",
    "SSIM_C2",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "EvalProtocol",
    "gaussian_window",
    "psnr_rgb",
    "psnr_y",
    "quantize",
    "rgb_to_y",
    "shave",
    "ssim_rgb",
    "ssim_y",
]

#: Peak value of the [0, 255] scale the scores are computed on.
PIXEL_MAX: float = 255.0
#: SSIM window side (pixels) and Gaussian standard deviation (Wang et al. 2004, Sec. III-C).
SSIM_WINDOW: int = 11
SSIM_SIGMA: float = 1.5
#: SSIM stabilising constants ``(K1 L)²`` and ``(K2 L)²`` with ``L = 255`` (Wang et al. 2004, eq. (7) and (9)).
SSIM_C1: float = (0.01 * PIXEL_MAX) ** 2
SSIM_C2: float = (0.03 * PIXEL_MAX) ** 2
#: BT.601 studio-range luma coefficients for RGB in [0, 1] giving Y on the [0, 255] scale (MATLAB ``rgb2ycbcr``).
_Y_OFFSET: float = 16.0
_Y_WEIGHTS: tuple[float, float, float] = (65.481, 128.553, 24.966)


def quantize(x: Tensor) -> Tensor:
    """Round an image in [0, 1] to 8-bit levels: ``round(clamp(x, 0, 1) · 255) / 255``, same dtype as ``x``.

    This is the uint8 round trip an SR output goes through when it is saved as PNG (BasicSR ``tensor2img``:
    clamp, ``·255``, ``round`` (half to even, like numpy) then ``uint8``). Integer tensors (``uint8``) are
    taken as 8-bit levels already and returned as float64 ``x / 255``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"quantize expects a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8:
        return x.to(torch.float64) / PIXEL_MAX
    if not x.is_floating_point():
        raise ValueError(f"quantize expects a floating-point image in [0, 1] or uint8, got dtype {x.dtype}")
    return x.clamp(0.0, 1.0).mul(PIXEL_MAX).round().div(PIXEL_MAX)


def rgb_to_y(x: Tensor) -> Tensor:
    """Luma of ITU-R BT.601 studio-range YCbCr, ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``, in float64.

    Args:
        x: RGB image(s) in [0, 1], shape ``(..., 3, H, W)`` (channel order R, G, B), any float dtype or uint8
            (8-bit levels, divided by 255 first).

    Returns:
        float64 tensor of shape ``(..., 1, H, W)`` on the [0, 255] scale; [0, 1] inputs map to [16, 235].
        Not rounded (MATLAB ``rgb2ycbcr`` on a double image, BasicSR ``to_y_channel``).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"rgb_to_y expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects an RGB image of shape (..., 3, H, W), got shape {tuple(x.shape)}")
    x = _to_float64(x, "x")
    r, g, b = x.unbind(dim=-3)
    wr, wg, wb = _Y_WEIGHTS
    return (_Y_OFFSET + wr * r + wg * g + wb * b).unsqueeze(-3)


def shave(x: Tensor, border: int) -> Tensor:
    """Remove ``border`` pixels from each of the four edges of ``x`` (shape ``(..., H, W)``); a view, not a copy.

    Raises:
        ValueError: if ``border`` is negative or leaves no pixel.
    """
    border = _check_border(border)
    h, w = x.shape[-2:]
    if h - 2 * border < 1 or w - 2 * border < 1:
        raise ValueError(
            f"shave: border={border} removes the whole {h}×{w} image (shape {tuple(x.shape)}); "
            f"need H and W > {2 * border}"
        )
    if border == 0:
        return x
    return x[..., border : h - border, border : w - border]


def gaussian_window(
    size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """1-D Gaussian ``exp(-d² / 2σ²)`` on the ``size`` pixel centres around the middle, normalised to sum 1.

    The outer product with itself is MATLAB ``fspecial('gaussian', size, sigma)`` (the normalisation of the 2-D
    window factorises), so SSIM can filter separably.
    """
    d = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def psnr_y(sr: Tensor, hr: Tensor, crop_border: int, *, quantize_inputs: bool = True) -> Tensor:
    """Per-image PSNR on the BT.601 studio-range Y channel (the SR-paper protocol, see module docstring).

    Args:
        sr: super-resolved image(s), ``B×3×H×W`` or ``3×H×W``, float in [0, 1] (or uint8).
        hr: ground truth of the same shape.
        crop_border: pixels shaved from every edge before scoring (normally the scale factor).
        quantize_inputs: round both images to 8-bit levels first (protocol step 1). Turn off only to log a
            float-output PSNR during training, and label it as such.

    Returns:
        float64 tensor ``[B]`` of ``10 log10(255² / MSE)`` on the device of ``sr``. Identical images
        (``MSE = 0``) give ``+inf`` (no epsilon is added, unlike BasicSR's ``calculate_psnr_pt``).
    """
    return _psnr(sr, hr, crop_border, y_channel=True, quantize_inputs=quantize_inputs)


def psnr_rgb(sr: Tensor, hr: Tensor, crop_border: int, *, quantize_inputs: bool = True) -> Tensor:
    """Per-image PSNR over all three RGB channels on the [0, 255] scale (BasicSR ``test_y_channel: false``).

    Same arguments and return value as :func:`psnr_y`; the MSE is the mean over channels and pixels.
    """
    return _psnr(sr, hr, crop_border, y_channel=False, quantize_inputs=quantize_inputs)


def ssim_y(sr: Tensor, hr: Tensor, crop_border: int, *, quantize_inputs: bool = True) -> Tensor:
    """Per-image SSIM (Wang et al. 2004, 11×11 Gaussian σ=1.5, 'valid') on the BT.601 studio-range Y channel.

    Args:
        sr: super-resolved image(s), ``B×3×H×W`` or ``3×H×W``, float in [0, 1] (or uint8).
        hr: ground truth of the same shape.
        crop_border: pixels shaved from every edge first; at least 11×11 pixels must remain.
        quantize_inputs: round both images to 8-bit levels first (protocol step 1).

    Returns:
        float64 tensor ``[B]``: the mean of each image's SSIM map, on the device of ``sr``.
    """
    return _ssim(sr, hr, crop_border, y_channel=True, quantize_inputs=quantize_inputs)


def ssim_rgb(sr: Tensor, hr: Tensor, crop_border: int, *, quantize_inputs: bool = True) -> Tensor:
    """Per-image SSIM on RGB: the mean of the three per-channel SSIM values (BasicSR ``test_y_channel: false``).

    Same arguments and return value as :func:`ssim_y`.
    """
    return _ssim(sr, hr, crop_border, y_channel=False, quantize_inputs=quantize_inputs)


@dataclass(frozen=True)
class EvalProtocol:
    """An evaluation protocol: which pixels and which channel the PSNR / SSIM are computed on.

    Attributes:
        crop_border: pixels shaved from every edge (normally the scale factor).
        y_channel: score the BT.601 studio-range Y channel (``True``, the paper protocol) or RGB.
        quantize: round SR and HR to 8-bit levels before scoring (``True``, the paper protocol).
    """

    crop_border: int
    y_channel: bool = True
    quantize: bool = True

    def __post_init__(self) -> None:
        _check_border(self.crop_border)
        for name in ("y_channel", "quantize"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EvalProtocol.{name} must be a bool, got {getattr(self, name)!r}")

    def describe(self) -> str:
        """One line that states the protocol; printed with every results table."""
        channel = "Y (BT.601 studio)" if self.y_channel else "RGB (SSIM: mean of per-channel values)"
        rounding = "8-bit rounded" if self.quantize else "float (not rounded to 8 bit)"
        return f"PSNR/SSIM on {channel}, {rounding}, shave {self.crop_border} px, mean of per-image values"

    def psnr(self, sr: Tensor, hr: Tensor) -> Tensor:
        """Per-image PSNR ``[B]`` (float64) under this protocol."""
        return _psnr(sr, hr, self.crop_border, y_channel=self.y_channel, quantize_inputs=self.quantize)

    def ssim(self, sr: Tensor, hr: Tensor) -> Tensor:
        """Per-image SSIM ``[B]`` (float64) under this protocol."""
        return _ssim(sr, hr, self.crop_border, y_channel=self.y_channel, quantize_inputs=self.quantize)

    def score(self, sr: Tensor, hr: Tensor) -> dict[str, Tensor]:
        """Both scores: ``{"psnr": Tensor[B], "ssim": Tensor[B]}`` (float64, per image)."""
        x, y = _prepare(sr, hr, self.crop_border, self.y_channel, self.quantize, SSIM_WINDOW)
        return {"psnr": _psnr_prepared(x, y), "ssim": _ssim_prepared(x, y)}


# ----------------------------------------------------------------------------------------------------------------
# internals


def _check_border(border: object) -> int:
    if isinstance(border, bool):
        raise ValueError(f"crop_border must be a non-negative int, got {border!r}")
    try:
        value = operator.index(border)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"crop_border must be a non-negative int, got {border!r}") from None
    if value < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {value}")
    return value


def _to_float64(x: Tensor, name: str) -> Tensor:
    if x.dtype == torch.uint8:
        return x.to(torch.float64) / PIXEL_MAX
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float image in [0, 1] or uint8, got dtype {x.dtype}")
    return x.to(torch.float64)


def _prepare(
    sr: Tensor, hr: Tensor, crop_border: int, y_channel: bool, quantize_inputs: bool, min_size: int
) -> tuple[Tensor, Tensor]:
    """Validate, quantise, shave and convert: float64 ``B×C×h×w`` tensors on the [0, 255] scale."""
    for name, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr must have the same shape, got sr {tuple(sr.shape)} and hr {tuple(hr.shape)}")
    if sr.dim() not in (3, 4) or sr.shape[-3] != 3:
        raise ValueError(
            f"expected RGB images of shape B×3×H×W or 3×H×W, got sr {tuple(sr.shape)} and hr {tuple(hr.shape)}"
        )
    border = _check_border(crop_border)
    h, w = sr.shape[-2:]
    if h - 2 * border < min_size or w - 2 * border < min_size:
        what = f"SSIM needs at least {SSIM_WINDOW}×{SSIM_WINDOW}" if min_size > 1 else "PSNR needs at least 1×1"
        raise ValueError(
            f"crop_border={border} leaves {max(h - 2 * border, 0)}×{max(w - 2 * border, 0)} px of the {h}×{w} "
            f"images (sr {tuple(sr.shape)}, hr {tuple(hr.shape)}); {what} px after shaving"
        )
    if sr.dim() == 3:
        sr, hr = sr.unsqueeze(0), hr.unsqueeze(0)
    hr = hr.to(sr.device)
    x, y = _to_float64(sr, "sr"), _to_float64(hr, "hr")
    if quantize_inputs:
        x, y = quantize(x), quantize(y)
    x, y = shave(x, border), shave(y, border)
    if y_channel:
        return rgb_to_y(x), rgb_to_y(y)
    return x * PIXEL_MAX, y * PIXEL_MAX


def _psnr_prepared(x: Tensor, y: Tensor) -> Tensor:
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(PIXEL_MAX**2 / mse)  # MSE 0 -> 255²/0 = inf -> +inf


def _ssim_prepared(x: Tensor, y: Tensor) -> Tensor:
    c = x.shape[1]
    g = gaussian_window(dtype=x.dtype, device=x.device)
    k = 5 * c
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    # separable 'valid' Gaussian filtering: rows then columns, no padding
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).repeat(k, 1, 1, 1), groups=k)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).repeat(k, 1, 1, 1), groups=k)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y, cov_xy = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    ssim_map = ((2.0 * mu_xy + SSIM_C1) * (2.0 * cov_xy + SSIM_C2)) / (
        (mu_xx + mu_yy + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )
    return ssim_map.mean(dim=(1, 2, 3))


def _psnr(sr: Tensor, hr: Tensor, crop_border: int, *, y_channel: bool, quantize_inputs: bool) -> Tensor:
    x, y = _prepare(sr, hr, crop_border, y_channel, quantize_inputs, 1)
    return _psnr_prepared(x, y)


def _ssim(sr: Tensor, hr: Tensor, crop_border: int, *, y_channel: bool, quantize_inputs: bool) -> Tensor:
    x, y = _prepare(sr, hr, crop_border, y_channel, quantize_inputs, SSIM_WINDOW)
    return _ssim_prepared(x, y)
