"""Local Attribution Maps (LAM) and the Diffusion Index (DI): ``sresolve-analyze lam``.

Gu & Dong, "Interpreting Super-Resolution Networks with Local Attribution Maps", CVPR 2021 (arXiv 2011.11036), §3;
defaults and discretisation follow the authors' release (``LAM_Demo``: ``SaliencyModel/BackProp.py``,
``attributes.py``, ``utils.py`` and the demo notebook). Notation of the paper:

* SR network ``F``, LR input ``I``; the *local feature detector* ``D`` is the summed gradient magnitude of the SR
  output in an ``l x l`` HR window at ``(x, y)``: ``D_xy(I) = sum_{i in [x, x+l], j in [y, y+l]} |grad_ij I|``
  (:func:`gradient_detector`).
* Baseline ``I' = w(sigma) (x) I``: the input blurred by a Gaussian kernel ``w(sigma)``; the *progressive blurring
  path* ``gamma_pb(alpha) = w(sigma - alpha sigma) (x) I``, ``alpha in [0, 1]``, so ``gamma_pb(0) = I'`` and
  ``gamma_pb(1) = I`` (:func:`blur_path`).
* LAM is the path-integrated gradient along it,
  ``LAM_{F,D}(gamma_pb)_i = int_0^1 dD(F(gamma_pb(alpha)))/dgamma_pb(alpha)_i * dgamma_pb(alpha)_i/dalpha dalpha``,
  computed with ``m`` steps as the release does: ``sum_{k=1..m} grad D(F(gamma(k/m)))_i * (gamma(k/m) -
  gamma((k-1)/m))_i`` (right-endpoint Riemann sum with the exact path increments; the release's
  ``(K_{k} - K_{k-1}) * m`` derivative kernels averaged over ``m`` steps are the same sum). The map has one value per
  LR pixel and channel; its completeness error ``sum_i LAM_i - (D(F(I)) - D(F(I')))`` vanishes as ``m`` grows.
* Shown and measured: ``|sum_c LAM_c| / max`` (the release's ``grad_abs_norm``); the Diffusion Index
  ``DI = (1 - G) * 100`` with ``G`` the Gini coefficient of that map,
  ``G = sum_i sum_j |g_i - g_j| / (2 n^2 mean(g))`` (as defined in the paper): a small DI means few LR pixels are used,
  a large one means information from a wide range (:func:`gini`, :func:`diffusion_index`).

Defaults are the settings of the release's demo: window ``l = 16`` HR pixels, ``sigma = 1.2``, Gaussian kernel
``9 x 9``, ``m = 50`` steps; the blur is applied per channel with reflect-101 borders (``cv2.filter2D``'s default);
overlays blend the map (``seismic`` colormap on ``0.5 + 0.5 * map``, nearest upsampled to the HR size) with the
upscaled LR at ``alpha = 0.5``; the "area of contribution" is a weighted Gaussian KDE of the map.

Here the path steps run in batches of ``batch`` images per forward/backward pass (the release runs one at a time;
``benchmarks/bench_lam.py`` compares the two). Everything is deterministic: no randomness, a fixed order of steps
and of the float64 accumulation; the same call gives bitwise the same map on the CPU (on CUDA, bitwise repeatability
additionally needs ``torch.use_deterministic_algorithms(True)``). For the call the network is in eval mode and its
parameters do not require gradients (only input gradients are needed: less memory, no weight gradients computed).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_KERNEL_SIZE",
    "DEFAULT_SIGMA",
    "DEFAULT_STEPS",
    "DEFAULT_WINDOW",
    "GINI_EPS",
    "Box",
    "LamResult",
    "abs_normalised",
    "blur",
    "blur_path",
    "check_box",
    "contribution_area",
    "diffusion_index",
    "gaussian_kernel",
    "gini",
    "gradient_detector",
    "lam",
    "lam_compare_figure",
    "lam_figure",
    "lam_overlay",
    "main",
    "parse_box",
]

#: ``(top, left, height, width)`` of the HR window, in pixels of the SR output.
Box = tuple[int, int, int, int]
#: A detector ``D``: SR batch ``(B, C, H, W)`` and the box -> one value per image ``(B,)``.
Detector = Callable[[Tensor, Box], Tensor]

DEFAULT_STEPS = 50  # release: fold = 50
DEFAULT_SIGMA = 1.2  # release: sigma = 1.2 (of the baseline blur w(sigma))
DEFAULT_KERNEL_SIZE = 9  # release: l = 9 (size of the Gaussian kernel)
DEFAULT_WINDOW = 16  # release: window_size = 16 (HR side of the detector window)
DEFAULT_BATCH = 5  # ours: path steps per forward/backward pass (HAT-S, 64x64 LR, CPU: ~2 GB per step)
DEFAULT_ALPHA = 0.5  # release: blend weight of the input image in the overlays
GINI_EPS = 1e-7  # release: gini() adds 1e-7 to every value (so an all-equal map has G = 0, DI = 100)


# ------------------------------------------------------------------------------------------------- path and detector
def gaussian_kernel(size: int = DEFAULT_KERNEL_SIZE, sigma: float = DEFAULT_SIGMA) -> Tensor:
    """The isotropic Gaussian ``w(sigma)``: float64 ``(size, size)``, sum 1, centred (``size`` odd).

    ``exp(-(x^2 + y^2) / (2 sigma^2))`` on the integer grid ``-size//2 .. size//2``, normalised (the release's
    ``isotropic_gaussian_kernel``); ``sigma = 0`` gives the identity (a unit impulse), the end of the path.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_kernel: size must be a positive odd integer, got {size!r}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"gaussian_kernel: sigma must be finite and >= 0, got {sigma!r}")
    if sigma == 0:
        kernel = torch.zeros(size, size, dtype=torch.float64)
        kernel[size // 2, size // 2] = 1.0
        return kernel
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def blur(x: Tensor, kernel: Tensor) -> Tensor:
    """``w (x) x``: every channel of ``x`` ``(B, C, H, W)`` filtered by ``kernel`` ``(k, k)`` with reflect-101 borders
    (``cv2.filter2D``'s default, as in the release); the output has the shape and dtype of ``x``."""
    k = kernel.shape[-1]
    pad = k // 2
    if x.shape[-2] <= pad or x.shape[-1] <= pad:
        raise ValueError(
            f"blur: the image ({x.shape[-2]}x{x.shape[-1]}) must be larger than the kernel radius {pad} "
            f"(kernel {k}x{k}); use a smaller kernel_size"
        )
    c = x.shape[1]
    weight = kernel.to(dtype=x.dtype, device=x.device).expand(c, 1, k, k)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), weight, groups=c)


def blur_path(
    image: Tensor, steps: int = DEFAULT_STEPS, sigma: float = DEFAULT_SIGMA, kernel_size: int = DEFAULT_KERNEL_SIZE
) -> Tensor:
    """The progressive blurring path ``gamma_pb(k/m) = w(sigma (1 - k/m)) (x) I`` for ``k = 0..m``: ``(m + 1, C, H, W)``
    in ``image``'s dtype; entry 0 is the baseline ``I' = w(sigma) (x) I``, entry ``m`` the image itself."""
    img = image if image.ndim == 4 else image[None]
    return torch.cat([_path_point(img, k, steps, sigma, kernel_size) for k in range(steps + 1)])


def _path_point(img: Tensor, k: int, steps: int, sigma: float, kernel_size: int) -> Tensor:
    s = sigma * (1.0 - k / steps)
    return img.clone() if s == 0 else blur(img, gaussian_kernel(kernel_size, s))


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0`` with gradient 0 (not inf/NaN) where ``x == 0``: flat pixels have no gradient
    direction (the release zeroes the NaN gradients they produce)."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def gradient_detector(sr: Tensor, box: Box) -> Tensor:
    """``D(F(I))``: the summed gradient magnitude of ``sr`` ``(B, C, H, W)`` in ``box``, one value per image.

    Per channel, forward differences ``sqrt((u[y,x] - u[y+1,x])^2 + (u[y,x] - u[y,x+1])^2)``, summed over the window
    and the channels (the release's ``attr_grad`` with ``reduce='sum'``). Differences need the next row/column, so
    a window touching the last row or column of the image leaves that row/column out, as in the release.
    """
    top, left, height, width = box
    crop = sr[:, :, top : top + height + 1, left : left + width + 1]
    dy = crop[:, :, :-1, :] - crop[:, :, 1:, :]
    dx = crop[:, :, :, :-1] - crop[:, :, :, 1:]
    magnitude = _safe_sqrt(dy[:, :, :, :-1] ** 2 + dx[:, :, :-1, :] ** 2)
    return magnitude[:, :, :height, :width].sum(dim=(1, 2, 3))


# --------------------------------------------------------------------------------------------------------- DI / Gini
def _as_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def gini(x: Tensor | np.ndarray, eps: float = GINI_EPS) -> float:
    """Gini coefficient of the values of ``x`` (flattened):
    ``G = sum_i sum_j |g_i - g_j| / (2 n^2 mean(g))``, computed as ``sum_i (2i - n - 1) g_(i) / (n sum g)`` on the
    sorted values (same number, ``O(n log n)``).

    As the release's ``gini``: negative inputs are shifted by their minimum, and ``eps`` is added to every value
    (so an all-zero or all-equal array has ``G = 0``). ``0 <= G <= (n - 1) / n``: 0 when all values are equal, the
    upper bound when one value holds everything.
    """
    g = _as_numpy(x).ravel()
    if g.size == 0:
        raise ValueError("gini: empty input")
    if not np.isfinite(g).all():
        raise ValueError("gini: input contains NaN or infinite values")
    if g.min() < 0:
        g = g - g.min()
    g = np.sort(g + eps)
    n = g.size
    index = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2.0 * index - n - 1.0) * g) / (n * np.sum(g)))


def abs_normalised(attribution: Tensor | np.ndarray) -> np.ndarray:
    """``|sum_c LAM_c| / max`` as float64 ``(H, W)`` in ``[0, 1]`` (the release's ``grad_abs_norm``); a ``(C, H, W)``
    map is summed over channels first, an ``(H, W)`` one is used as is. An all-zero map stays zero."""
    a = _as_numpy(attribution)
    if a.ndim == 3:
        a = a.sum(axis=0)
    if a.ndim != 2:
        raise ValueError(f"expected an attribution map (C, H, W) or (H, W), got shape {a.shape}")
    a = np.abs(a)
    peak = a.max()
    return a / peak if peak > 0 else a


def diffusion_index(attribution: Tensor | np.ndarray, eps: float = GINI_EPS) -> float:
    """The Diffusion Index ``DI = (1 - G) * 100`` of a LAM map, ``G`` = :func:`gini` of ``|sum_c LAM_c| / max``.

    ``100 / n <= DI <= 100`` (up to ``eps``) for ``n`` pixels: near ``100 / n`` when one pixel carries all the
    attribution, 100 when every pixel carries the same. NaN for an all-zero map (an output that does not depend on
    the input has no attribution to spread).
    """
    a = abs_normalised(attribution)
    if not a.any():
        return float("nan")
    return (1.0 - gini(a, eps)) * 100.0


# ------------------------------------------------------------------------------------------------------------- LAM
@dataclass
class LamResult:
    """The outcome of :func:`lam` (tensors on the CPU).

    Attributes:
        attribution: signed LAM per LR pixel and channel, float64 ``(C, h, w)``.
        saliency: ``|sum_c attribution| / max``, float64 ``(h, w)`` in ``[0, 1]`` (what is drawn and what DI uses).
        di: the Diffusion Index of the map.
        detector: ``D(F(I))`` at the input; ``detector_baseline``: ``D(F(I'))`` at the blurred baseline.
        path_detector: ``D(F(gamma_pb(k/m)))`` for ``k = 1..m`` (``(m,)``); the last entry is ``detector``.
        lr: the input ``(3, h, w)``; sr: the SR output ``F(I)`` ``(3, h*s, w*s)``; baseline: ``I'`` ``(3, h, w)``.
        box, scale, steps, sigma, kernel_size: the settings.
    """

    attribution: Tensor
    saliency: Tensor
    di: float
    detector: float
    detector_baseline: float
    path_detector: Tensor
    lr: Tensor
    sr: Tensor
    baseline: Tensor
    box: Box
    scale: int
    steps: int
    sigma: float
    kernel_size: int
    seconds: float = field(default=0.0)

    @property
    def total(self) -> float:
        """``sum_i LAM_i`` over pixels and channels (completeness: close to ``detector - detector_baseline``)."""
        return float(self.attribution.sum())

    @property
    def completeness_gap(self) -> float:
        """``sum_i LAM_i - (D(F(I)) - D(F(I')))``: the Riemann-sum error, shrinking as ``steps`` grows."""
        return self.total - (self.detector - self.detector_baseline)

    @property
    def lr_box(self) -> Box:
        """The LR pixels under the HR box: ``(top, left, height, width)`` rounded outwards."""
        top, left, height, width = self.box
        s = self.scale
        return top // s, left // s, -(-(top + height) // s) - top // s, -(-(left + width) // s) - left // s


def check_box(box: Sequence[int], hr_size: tuple[int, int]) -> Box:
    """``box`` as a validated :data:`Box` inside an HR image of ``hr_size = (H, W)``; ``ValueError`` naming both
    otherwise."""
    if len(box) != 4 or any(isinstance(v, bool) or int(v) != v for v in box):
        raise ValueError(f"box must be four integers (top, left, height, width), got {tuple(box)!r}")
    top, left, height, width = (int(v) for v in box)
    h, w = hr_size
    if height < 1 or width < 1:
        raise ValueError(f"box {top},{left},{height},{width}: height and width must be >= 1")
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(
            f"box top={top}, left={left}, height={height}, width={width} (rows {top}..{top + height - 1}, columns "
            f"{left}..{left + width - 1}) lies outside the {h}x{w} HR image (rows 0..{h - 1}, columns 0..{w - 1})"
        )
    return top, left, height, width


def _device_of(net: nn.Module) -> torch.device:
    for t in (*net.parameters(), *net.buffers()):
        return t.device
    return torch.device("cpu")


def lam(
    net: nn.Module,
    lr_image: Tensor,
    box: Sequence[int],
    *,
    steps: int = DEFAULT_STEPS,
    sigma: float = DEFAULT_SIGMA,
    kernel_size: int = DEFAULT_KERNEL_SIZE,
    batch: int = DEFAULT_BATCH,
    detector: Detector = gradient_detector,
    progress: bool = True,
    desc: str = "LAM",
) -> LamResult:
    """Local Attribution Map of ``net`` for the HR window ``box`` of its output on ``lr_image``.

    Args:
        net: any SR network ``(B, 3, h, w) -> (B, 3, h*s, w*s)`` (padding is its own business), run on the device of
            its parameters; for the call it is put in eval mode and its parameters stop requiring gradients (both
            restored afterwards).
        lr_image: the LR input, float ``(3, h, w)`` or ``(1, 3, h, w)`` in ``[0, 1]``.
        box: ``(top, left, height, width)`` of the detector window in SR-output pixels.
        steps: ``m``, the number of path steps of the Riemann sum (the release: 50).
        sigma: ``sigma`` of the baseline blur ``w(sigma)`` (the release: 1.2).
        kernel_size: side of the Gaussian kernel (odd; the release: 9).
        batch: path steps per forward/backward pass: speed vs memory (activation memory grows linearly with it,
            about 2 GB per step for HAT-S on a 64x64 LR on the CPU); the result does not depend on it beyond float
            rounding.
        detector: ``D``; default :func:`gradient_detector`. Any differentiable ``(sr, box) -> (B,)``.
        progress: show a tqdm progress bar over the steps (on stderr).
        desc: the progress bar's label.

    Returns:
        A :class:`LamResult` (map, DI, detector values, SR output).

    Raises:
        ValueError: bad settings, or a box outside the SR output.
    """
    from tqdm.auto import tqdm

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    gaussian_kernel(kernel_size, sigma)  # validates both
    x = lr_image if lr_image.ndim == 4 else lr_image[None]
    if x.ndim != 4 or x.shape[0] != 1 or not x.is_floating_point():
        raise ValueError(f"lr_image must be a float (3, h, w) or (1, 3, h, w) tensor, got {tuple(lr_image.shape)}")
    device = _device_of(net)
    dtype = next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)
    x64 = x.detach().to(device=device, dtype=torch.float64)
    h, w = x.shape[-2:]
    was_training = net.training
    params = list(net.parameters())
    needs_grad = [q.requires_grad for q in params]
    net.eval()
    for q in params:  # only input gradients are needed: no weight-gradient activations kept, none computed
        q.requires_grad_(False)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            sr = net(x64.to(dtype))
            if sr.shape[-2] % h or sr.shape[-1] % w or sr.shape[-2] // h != sr.shape[-1] // w:
                raise ValueError(f"the network maps {h}x{w} to {sr.shape[-2]}x{sr.shape[-1]}: not an integer upscale")
            scale = sr.shape[-2] // h
            hr_box = check_box(box, (sr.shape[-2], sr.shape[-1]))
            d_input = float(detector(sr, hr_box)[0])
            baseline = _path_point(x64, 0, steps, sigma, kernel_size)
            d_base = float(detector(net(baseline.to(dtype)), hr_box)[0])
        total = torch.zeros_like(x64[0])
        path_d = torch.zeros(steps, dtype=torch.float64)
        previous = baseline
        bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False)
        for first in range(1, steps + 1, batch):
            ks = range(first, min(first + batch, steps + 1))
            points = torch.cat([_path_point(x64, k, steps, sigma, kernel_size) for k in ks])  # gamma(k/m), float64
            deltas = points - torch.cat([previous, points[:-1]])  # gamma(k/m) - gamma((k-1)/m), exact increments
            previous = points[-1:]
            inp = points.to(dtype).requires_grad_(True)
            d = detector(net(inp), hr_box)
            (grad,) = torch.autograd.grad(d.sum(), inp)
            grad = torch.nan_to_num(grad.to(torch.float64), nan=0.0)  # as the release: NaN gradients count as 0
            for j in range(len(ks)):  # fixed accumulation order, independent of the batch size
                total += grad[j] * deltas[j]
            path_d[first - 1 : first - 1 + len(ks)] = d.detach().to(torch.float64).cpu()
            bar.update(len(ks))
        bar.close()
    finally:
        net.train(was_training)
        for q, flag in zip(params, needs_grad, strict=True):
            q.requires_grad_(flag)
    attribution = total.cpu()
    return LamResult(
        attribution=attribution,
        saliency=torch.from_numpy(abs_normalised(attribution)),
        di=diffusion_index(attribution),
        detector=d_input,
        detector_baseline=d_base,
        path_detector=path_d,
        lr=x[0].detach().float().cpu(),
        sr=sr[0].detach().float().cpu(),
        baseline=baseline[0].float().cpu(),
        box=hr_box,
        scale=scale,
        steps=steps,
        sigma=float(sigma),
        kernel_size=kernel_size,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------------------- figures
def _upscaled_lr(result: LamResult) -> Tensor:
    from sresolve.data.degradation import imresize

    return imresize(result.lr, float(result.scale)).clamp(0, 1)


def lam_overlay(
    result: LamResult, alpha: float = DEFAULT_ALPHA, box_color: tuple[int, int, int] = (255, 0, 0)
) -> Image.Image:
    """The LAM map as the papers draw it: ``seismic`` colours of ``0.5 + 0.5 * saliency``, nearest-upsampled to the
    HR size, blended with the (bicubic) upscaled LR at weight ``alpha``, the HR box outlined. Returns a PIL image."""
    from sresolve.viz import colormap, draw_box

    heat = colormap(0.5 + 0.5 * result.saliency.numpy(), "seismic").astype(np.float64)
    heat = heat.repeat(result.scale, axis=0).repeat(result.scale, axis=1)
    lr_up = _upscaled_lr(result).permute(1, 2, 0).double().numpy() * 255.0
    mixed = np.clip(heat * (1.0 - alpha) + lr_up * alpha + 0.5, 0, 255).astype(np.uint8)
    width = max(1, result.sr.shape[-1] // 256)
    return draw_box(Image.fromarray(mixed), result.box, box_color, width)


def _crop_zoom(img: Tensor, box: Box, size: int) -> Image.Image:
    from sresolve.viz import to_pil

    top, left, height, width = box
    crop = to_pil(img[:, top : top + height, left : left + width])
    zoom = max(1, size // max(height, width))
    return crop.resize((width * zoom, height * zoom), Image.NEAREST)


def lam_figure(
    result: LamResult,
    path: str | Path,
    label: str = "",
    hr: Tensor | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> Path:
    """PNG of one model: the HR image (``hr``, or the upscaled LR) with the box, the LAM overlay captioned with DI,
    the SR output with the box, and zoomed crops of the box region (HR / SR) underneath."""
    from sresolve.viz import captioned, draw_box, grid, save_png, to_pil

    ref = hr if hr is not None else _upscaled_lr(result)
    width = max(1, result.sr.shape[-1] // 256)
    zoom_size = min(result.sr.shape[-1], 128)
    head = f"{label}  " if label else ""
    rows = [
        [
            captioned(draw_box(to_pil(ref), result.box, width=width), "HR" if hr is not None else "bicubic"),
            captioned(lam_overlay(result, alpha), f"{head}LAM  DI {result.di:.2f}"),
            captioned(draw_box(to_pil(result.sr), result.box, width=width), f"{head}SR"),
        ],
        [
            captioned(_crop_zoom(ref, result.box, zoom_size), "box"),
            captioned(_contribution_panel(result), "area of contribution"),
            captioned(_crop_zoom(result.sr, result.box, zoom_size), "box, SR"),
        ],
    ]
    return save_png(grid(rows), path)


def contribution_area(saliency: Tensor | np.ndarray) -> np.ndarray:
    """The "area of contribution" of a map: a weighted Gaussian KDE of the pixel positions with the saliency as
    weights, Scott's bandwidth ``n_eff^(-1/6)`` times the weighted covariance of the positions (as the release's
    ``vis_saliency_kde`` through ``scipy.stats.gaussian_kde``), evaluated on the pixel grid by FFT convolution and
    normalised to a maximum of 1. Returns float64 ``(H, W)``."""
    wts = abs_normalised(saliency[None] if saliency.ndim == 2 else saliency) + 1e-8
    h, w = wts.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    total = wts.sum()
    mean_y, mean_x = (wts * yy).sum() / total, (wts * xx).sum() / total
    dy, dx = yy - mean_y, xx - mean_x
    cov = np.array([[(wts * dy * dy).sum(), (wts * dy * dx).sum()], [(wts * dy * dx).sum(), (wts * dx * dx).sum()]])
    cov = cov / total / (1.0 - (wts**2).sum() / total**2)  # unbiased weighted covariance (numpy.cov with aweights)
    n_eff = total**2 / (wts**2).sum()
    bandwidth = cov * n_eff ** (-2.0 / 6.0) + 1e-6 * np.eye(2)
    oy, ox = np.mgrid[-(h - 1) : h, -(w - 1) : w].astype(np.float64)
    inv = np.linalg.inv(bandwidth)
    kernel = np.exp(-0.5 * (inv[0, 0] * oy * oy + 2.0 * inv[0, 1] * oy * ox + inv[1, 1] * ox * ox))
    shape = (h + kernel.shape[0] - 1, w + kernel.shape[1] - 1)
    full = np.fft.irfft2(np.fft.rfft2(wts, shape) * np.fft.rfft2(kernel, shape), shape)
    density = np.clip(full[h - 1 : 2 * h - 1, w - 1 : 2 * w - 1], 0.0, None)
    return density / density.max()


def _contribution_panel(result: LamResult) -> Image.Image:
    from sresolve.viz import colormap

    heat = Image.fromarray(colormap(0.5 + 0.5 * contribution_area(result.saliency), "seismic"))
    return heat.resize((result.sr.shape[-1], result.sr.shape[-2]), Image.BICUBIC)


def lam_compare_figure(
    results: Sequence[tuple[str, LamResult]],
    path: str | Path,
    hr: Tensor | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> Path:
    """Side-by-side PNG of several models on the same input and box (the LAM figures of the HAT and HMA papers):
    first column the HR image with the box and its zoomed box region; then per model its LAM overlay captioned with
    DI and, underneath, its SR output of the box region."""
    from sresolve.viz import captioned, draw_box, grid, save_png, to_pil

    if not results:
        raise ValueError("lam_compare_figure: no results")
    first = results[0][1]
    for label, r in results:
        if r.box != first.box or tuple(r.sr.shape) != tuple(first.sr.shape):
            raise ValueError(f"lam_compare_figure: {label!r} has another box or output size than {results[0][0]!r}")
    ref = hr if hr is not None else _upscaled_lr(first)
    width = max(1, first.sr.shape[-1] // 256)
    zoom_size = min(first.sr.shape[-1], 128)
    top = [captioned(draw_box(to_pil(ref), first.box, width=width), "HR" if hr is not None else "bicubic")]
    bottom = [captioned(_crop_zoom(ref, first.box, zoom_size), "box")]
    for label, r in results:
        top.append(captioned(lam_overlay(r, alpha), f"{label}  DI {r.di:.2f}"))
        bottom.append(captioned(_crop_zoom(r.sr, r.box, zoom_size), label))
    return save_png(grid([top, bottom]), path)


# -------------------------------------------------------------------------------------------------------------- CLI
def parse_box(text: str, window: int = DEFAULT_WINDOW) -> Box:
    """``"top,left,height,width"`` or ``"top,left"`` (a ``window x window`` square) -> :data:`Box` (unchecked)."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise ValueError(f"--box {text!r}: expected integers top,left[,height,width]") from None
    if len(values) == 2:
        values += [window, window]
    if len(values) != 4:
        raise ValueError(f"--box {text!r}: expected top,left or top,left,height,width")
    return values[0], values[1], values[2], values[3]


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "model"


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sresolve-analyze lam",
        description="Local Attribution Maps and the Diffusion Index (Gu & Dong, CVPR 2021) for one or more models "
        "on the same input and HR window. Writes <out>/lam_<label>.png, <out>/lam_compare.png and <out>/lam.csv.",
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL_SPEC",
        help="weights file, or model config with overrides, optionally 'label=': "
        "'SwinIR-like=hat,alpha=0,use_cab=false,use_ocab=false' 'HAT=hat' 'HMA=hma'",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="HR image; the LR input is its MATLAB-bicubic downscale")
    src.add_argument("--lr-image", type=Path, help="LR input image used as is (no HR reference)")
    p.add_argument(
        "--box",
        default=None,
        help="HR window top,left[,height,width] (default: the most detailed --window x --window region)",
    )
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="HR window side (default 16, the release)")
    p.add_argument("--scale", type=int, default=4, help="upscale factor of config specs (default 4)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="path steps m (default 50, the release)")
    p.add_argument("--sigma", type=float, default=DEFAULT_SIGMA, help="baseline blur sigma (default 1.2)")
    p.add_argument("--kernel-size", type=int, default=DEFAULT_KERNEL_SIZE, help="Gaussian kernel side (default 9)")
    p.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="path steps per forward/backward (default 5; memory grows)"
    )
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="image weight in the overlays (default 0.5)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--out", type=Path, default=Path("outputs/analysis/lam"), help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _error(msg: str) -> int:
    print(f"sresolve-analyze lam: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``sresolve-analyze lam [options] MODEL_SPEC [MODEL_SPEC ...]``; returns the exit status."""
    from sresolve.analysis.models import build_model, parse_spec
    from sresolve.cli._common import pick_device
    from sresolve.config import ConfigError
    from sresolve.data.degradation import imresize, modcrop
    from sresolve.data.io import read_image
    from sresolve.viz import most_detailed_region

    args = _build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.scale < 1:
        return _error(f"--scale must be >= 1, got {args.scale}")
    try:
        specs = [parse_spec(s) for s in args.models]
        labels = [s.label for s in specs]
        dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
        names = [_safe_name(lb) for lb in labels]
        if dupes or len(set(names)) != len(names):
            raise ConfigError(f"model labels must be distinct (file names lam_<label>.png), got {labels}")
        device = pick_device(args.device)
        if args.image is not None:
            hr: Tensor | None = modcrop(read_image(args.image), args.scale).contiguous()
            lr = imresize(hr, 1.0 / args.scale).clamp(0, 1)
            reference = hr
        else:
            hr = None
            lr = read_image(args.lr_image)
            reference = imresize(lr, float(args.scale)).clamp(0, 1)
        hr_size = (lr.shape[-2] * args.scale, lr.shape[-1] * args.scale)
        if args.box is None:
            side = min(args.window, *hr_size)
            top, left = most_detailed_region(reference, side)
            box = check_box((top, left, side, side), hr_size)
        else:
            box = check_box(parse_box(args.box, args.window), hr_size)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        return _error(str(exc))

    results: list[tuple[str, LamResult]] = []
    for spec, name in zip(specs, names, strict=True):
        try:
            label, net = build_model(spec, args.scale)
            if getattr(net, "scale", args.scale) != args.scale:
                raise ConfigError(f"model {label!r} upscales x{net.scale}, but --scale is {args.scale}")
            net = net.to(device)
            res = lam(
                net,
                lr.to(device),
                box,
                steps=args.steps,
                sigma=args.sigma,
                kernel_size=args.kernel_size,
                batch=args.batch,
                progress=not args.no_progress,
                desc=label,
            )
        except (ConfigError, ValueError) as exc:
            return _error(str(exc))
        lam_figure(res, args.out / f"lam_{name}.png", label, hr, args.alpha)
        results.append((label, res))
        del net
    lam_compare_figure(results, args.out / "lam_compare.png", hr, args.alpha)
    _write_csv(results, args.out / "lam.csv")
    top, left, height, width = box
    print(
        f"LAM: box top={top} left={left} {height}x{width} (HR), LR {lr.shape[-2]}x{lr.shape[-1]}, x{args.scale}, "
        f"steps {args.steps}, sigma {args.sigma}, kernel {args.kernel_size}"
    )
    print(f"{'model':<28} {'DI':>8} {'D(I)':>12} {'D(I_base)':>12} {'sum LAM':>12} {'time s':>8}")
    for label, r in results:
        print(
            f"{label:<28} {r.di:>8.2f} {r.detector:>12.4f} {r.detector_baseline:>12.4f} {r.total:>12.4f} "
            f"{r.seconds:>8.2f}"
        )
    print(f"wrote {args.out / 'lam_compare.png'}, {args.out / 'lam.csv'} and {len(results)} lam_<label>.png")
    return 0


#: Columns of ``lam.csv``.
CSV_COLUMNS = (
    "label",
    "di",
    "detector",
    "detector_baseline",
    "attribution_sum",
    "top",
    "left",
    "height",
    "width",
    "scale",
    "steps",
    "sigma",
    "kernel_size",
    "seconds",
)


def _write_csv(results: Sequence[tuple[str, LamResult]], path: Path) -> Path:
    from sresolve.checkpoints import atomic_write_text

    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for label, r in results:
        values = (r.di, r.detector, r.detector_baseline, r.total)
        settings = (r.scale, r.steps, r.sigma, r.kernel_size, f"{r.seconds:.3f}")
        writer.writerow([label, *(f"{v:.6f}" for v in values), *r.box, *settings])
    return atomic_write_text(path, buf.getvalue())


if __name__ == "__main__":
    raise SystemExit(main())
