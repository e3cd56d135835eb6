"""MATLAB-exact bicubic resizing (``imresize(..., 'bicubic')``) as batched matrix products, plus modcrop.

The standard SR benchmark protocol (RCAN / EDSR / BasicSR ``generate_bicubic_img.m``) makes low-resolution images with
MATLAB's ``imresize(im2double(HR), 1/s, 'bicubic')`` and rounds the result to 8 bits when writing the PNG. This module
reproduces that resampler exactly (to float64 rounding) on any device and dtype, for any real scale, up or down.

MATLAB's algorithm (``imresize.m``: ``contributions`` / ``cubic`` / ``resizeAlongDim``), one axis of length ``in`` to
``out`` at scale ``s`` (``out = ceil(in * s)`` when a scale is given, ``s = out / in`` when a size is given), and
where it lives here:

1. Kernel: Keys cubic convolution with ``a = -0.5`` (width 4)                                 -> :func:`_cubic`
2. Antialiasing only when ``s < 1``: ``h(x) = s * cubic(s * x)``, width ``4 / s``              -> :func:`_weights_np`
3. Pixel-centre mapping (1-based): ``u = x / s + 0.5 * (1 - 1 / s)``                           -> :func:`_weights_np`
4. ``left = floor(u - width / 2)``, ``P = ceil(width) + 2`` taps ``left .. left + P - 1``       -> :func:`_weights_np`
5. Weights ``h(u - tap)`` normalised to sum 1 per output pixel                                 -> :func:`_weights_np`
6. Symmetric boundary with the edge pixel repeated: index sequence ``[1..in, in..1]`` taken
   modulo its length (numpy ``pad(mode='symmetric')``, not torch ``reflect``)                  -> :func:`_weights_np`
7. Tap columns whose weights are all zero are dropped. In the dense ``(out x in)`` matrix used
   here a zero weight contributes nothing, so this step needs no code; mirrored taps that land
   on the same input pixel are accumulated, as MATLAB's ``imresizemex`` sums them.               -> ``np.add.at``
8. Separable: one axis after the other. MATLAB resizes the axis with the smaller scale first;
   the order only changes floating-point rounding, so the cheaper order is used here.           -> :func:`imresize`
9. MATLAB computes in double; ``uint8`` input is rounded (half away from zero) back to ``uint8``. -> :func:`imresize`

:func:`pil_bicubic_resize` is the other LR generator in use: Pillow's ``BICUBIC`` filter on an 8-bit image, as in
the official LIIF/EQSR code (torchvision ``Resize(size, BICUBIC)`` on a PIL image; spec ``archs_eqsr_amrsr.md`` A7,
A9, choice E7). It is a different resampler (Pillow's own kernel support and fixed-point arithmetic), so its LR is not
MATLAB's.

Each axis becomes a dense ``(out x in)`` weight matrix built once in float64 (numpy), cast to the input's dtype/device
and cached; resizing is then two matmuls, batched over any leading dimensions, autograd-friendly, and run with
autocast disabled so bf16-mixed training cannot lower its precision.
"""

from __future__ import annotations

import functools
import math
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from sresolve.ops.precision import autocast_disabled

__all__ = ["bicubic_degrade", "clear_weight_cache", "imresize", "modcrop", "pil_bicubic_resize", "resize_weights"]

_ArrayT = TypeVar("_ArrayT", Tensor, np.ndarray)

_KERNEL_WIDTH = 4.0  # support of the Keys cubic kernel, [-2, 2]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys (1981) cubic convolution kernel with ``a = -0.5``, exactly as MATLAB's ``cubic`` in ``imresize.m``."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1.0)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1.0) & (absx <= 2.0))
    return inner + outer


@functools.lru_cache(maxsize=64)
def _weights_np(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """Dense ``(out_len, in_len)`` float64 matrix of MATLAB ``contributions`` (steps 1-7 of the module docstring)."""
    kernel_width = _KERNEL_WIDTH
    stretch = scale < 1.0 and antialias
    if stretch:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)  # 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # matching input coordinate (pixel centres)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    ind = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based tap indices, (out, P)
    dist = u[:, None] - ind
    weights = scale * _cubic(scale * dist) if stretch else _cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric boundary, edge repeated: MATLAB's aux = [1..in, in..1]; ind = aux(mod(ind - 1, 2 * in) + 1).
    zero_based = np.mod(ind.astype(np.int64) - 1, 2 * in_len)
    mirrored = np.where(zero_based < in_len, zero_based, 2 * in_len - 1 - zero_based)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(matrix, (rows, mirrored.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=64)
def _weights_tensor(
    in_len: int, out_len: int, scale: float, antialias: bool, dtype: torch.dtype, device: torch.device
) -> Tensor:
    return torch.from_numpy(_weights_np(in_len, out_len, scale, antialias).copy()).to(device=device, dtype=dtype)


def resize_weights(
    in_len: int,
    out_len: int,
    scale: float,
    antialias: bool = True,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The ``(out_len, in_len)`` MATLAB bicubic weight matrix of one axis (``out = W @ in`` along that axis).

    ``scale`` is the scale MATLAB uses for the kernel (the user's scale, or ``out / in`` when a size was given). Rows
    sum to 1. The returned tensor is a fresh copy, safe to modify.
    """
    _check_len("in_len", in_len)
    _check_len("out_len", out_len)
    scale = _check_scale(scale)
    matrix = _weights_np(in_len, out_len, scale, bool(antialias)).copy()
    return torch.from_numpy(matrix).to(device=device, dtype=dtype)


def clear_weight_cache() -> None:
    """Drop every cached weight matrix (frees device memory held by the cache)."""
    _weights_np.cache_clear()
    _weights_tensor.cache_clear()


def _check_len(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"imresize: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise ValueError(f"imresize: scale must be a positive real number, got {scale!r}")
    value = float(scale)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"imresize: scale must be a finite number > 0, got {scale!r}")
    return value


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in (torch.float32, torch.float64):
        return dtype
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if dtype == torch.bool or dtype.is_complex:
        raise ValueError(f"imresize: expected a real floating-point or integer tensor, got dtype {dtype}")
    if not dtype.is_floating_point:  # integer images (e.g. uint8): MATLAB computes in double and rounds back
        return torch.float64
    raise ValueError(f"imresize: unsupported dtype {dtype}")


def imresize(
    x: Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> Tensor:
    """Resize the last two dimensions of ``x`` exactly like MATLAB ``imresize(x, scale, 'bicubic')``.

    Args:
        x: tensor ``(..., H, W)``, e.g. CHW or BCHW, float images normally in [0, 1]. float32/float64 are computed in
            their own precision; float16/bfloat16 are computed in float32 and cast back; integer tensors (``uint8``)
            are computed in float64 and rounded half away from zero and clipped to the dtype's range, as MATLAB does.
        scale: one real scale factor for both axes (``< 1`` shrinks); the output is ``ceil(H * scale) x
            ceil(W * scale)`` and the kernel uses ``scale`` itself (MATLAB semantics), not ``out / in``.
        size: ``(out_h, out_w)`` instead of ``scale``; each axis then uses its own scale ``out / in``.
        antialias: MATLAB's ``'Antialiasing'`` option; only has an effect on axes that shrink.

    Returns:
        Tensor ``(..., out_h, out_w)`` on ``x``'s device with ``x``'s dtype. Values are not clamped (bicubic
        overshoots slightly outside [0, 1]); see :func:`bicubic_degrade`.

    Raises:
        ValueError: ``x`` is not a tensor, has fewer than 2 dimensions or an empty spatial axis, has an unsupported
            dtype, or ``scale``/``size`` are missing, both given, non-positive, or give an empty output.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"imresize: expected a torch.Tensor of shape (..., H, W), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"imresize: expected a tensor of shape (..., H, W) with ndim >= 2, got shape {tuple(x.shape)}")
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    if in_h == 0 or in_w == 0:
        raise ValueError(f"imresize: input has an empty spatial axis, shape {tuple(x.shape)}")
    work = _work_dtype(x.dtype)

    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of `scale` or `size`")
    if size is not None:
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise ValueError(f"imresize: size must be a pair (out_h, out_w), got {size!r}")
        out_h = _check_len("size[0] (out_h)", size[0])
        out_w = _check_len("size[1] (out_w)", size[1])
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        scale_h = scale_w = _check_scale(scale)
        out_h, out_w = math.ceil(in_h * scale_h), math.ceil(in_w * scale_w)

    resize_h = not (out_h == in_h and scale_h == 1.0)
    resize_w = not (out_w == in_w and scale_w == 1.0)
    antialias = bool(antialias)

    with autocast_disabled(x.device.type):
        y = x.to(work)
        w_h = _weights_tensor(in_h, out_h, scale_h, antialias, work, x.device) if resize_h else None
        w_w = _weights_tensor(in_w, out_w, scale_w, antialias, work, x.device) if resize_w else None
        # Cheaper order first (MATLAB's order only differs in rounding): multiply-adds per leading element.
        h_first = out_h * in_h * in_w + out_h * in_w * out_w <= in_h * in_w * out_w + out_h * in_h * out_w
        for axis in ("h", "w") if h_first else ("w", "h"):
            if axis == "h" and w_h is not None:
                y = torch.einsum("oh,...hw->...ow", w_h, y)
            elif axis == "w" and w_w is not None:
                y = torch.einsum("...hw,ow->...ho", y, w_w)
        if w_h is None and w_w is None:
            y = y.clone()

    if not x.dtype.is_floating_point:
        info = torch.iinfo(x.dtype)
        y = torch.where(y >= 0, torch.floor(y + 0.5), torch.ceil(y - 0.5)).clamp_(info.min, info.max)
    return y.to(x.dtype).contiguous()


def bicubic_degrade(hr: Tensor, scale: float) -> Tensor:
    """Bicubic degradation of the SR benchmark protocol: ``clamp(imresize(hr, 1 / scale), 0, 1)``.

    ``hr`` is a float tensor ``(..., H, W)`` in [0, 1], normally modcropped to ``scale`` first (:func:`modcrop`) so the
    LR is exactly ``H / scale x W / scale``. The result is not quantised to 8 bits (that is up to the caller).
    """
    value = _check_scale(scale)
    if isinstance(hr, Tensor) and not hr.dtype.is_floating_point:
        raise ValueError(f"bicubic_degrade: expected a floating-point tensor in [0, 1], got dtype {hr.dtype}")
    return imresize(hr, 1.0 / value).clamp_(0.0, 1.0)


def modcrop(img: _ArrayT, modulo: int) -> _ArrayT:
    """Crop ``img`` from the top-left so that height and width are multiples of ``modulo`` (``GTmod{m}`` protocol).

    Accepts a Tensor ``(..., H, W)`` or a numpy image ``(H, W)`` / ``(H, W, C)``; returns a view.
    """
    if isinstance(modulo, bool) or not isinstance(modulo, (int, np.integer)) or int(modulo) < 1:
        raise ValueError(f"modcrop: modulo must be a positive integer, got {modulo!r}")
    m = int(modulo)
    if isinstance(img, Tensor):
        if img.ndim < 2:
            raise ValueError(f"modcrop: expected a tensor of shape (..., H, W), got shape {tuple(img.shape)}")
        h, w = int(img.shape[-2]), int(img.shape[-1])
    elif isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"modcrop: expected a numpy image of shape (H, W) or (H, W, C), got shape {img.shape}")
        h, w = int(img.shape[0]), int(img.shape[1])
    else:
        raise ValueError(f"modcrop: expected a torch.Tensor or numpy.ndarray, got {type(img).__name__}")
    new_h, new_w = h - h % m, w - w % m
    if new_h == 0 or new_w == 0:
        raise ValueError(f"modcrop: image of size {h}x{w} is smaller than the modulo {m}")
    if isinstance(img, Tensor):
        return img[..., :new_h, :new_w]
    return img[:new_h, :new_w, ...]


def _pil_size(size: object) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"pil_bicubic_resize: size must be a pair (out_h, out_w), got {size!r}")
    return _check_len("size[0] (out_h)", size[0]), _check_len("size[1] (out_w)", size[1])


def _to_hwc_uint8(img: Tensor | np.ndarray) -> np.ndarray:
    """``(H, W, C)`` uint8 numpy array of a CHW tensor or an HWC/HW numpy image (see :func:`pil_bicubic_resize`)."""
    if isinstance(img, Tensor):
        if img.ndim != 3 or img.shape[0] not in (1, 3):
            raise ValueError(f"pil_bicubic_resize: expected a (C, H, W) tensor with C = 1 or 3, got {tuple(img.shape)}")
        x = img.detach().cpu()
        if x.dtype.is_floating_point:
            # torchvision ToPILImage: pic.mul(255).byte() (truncation; clamped first so nothing wraps around).
            x = x.to(torch.float32).clamp(0.0, 1.0).mul(255.0).to(torch.uint8)
        elif x.dtype != torch.uint8:
            raise ValueError(f"pil_bicubic_resize: expected a uint8 or float tensor, got dtype {x.dtype}")
        arr = x.permute(1, 2, 0).numpy()
    elif isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise ValueError(f"pil_bicubic_resize: numpy input must be uint8 (H, W[, C]), got dtype {img.dtype}")
        if img.ndim == 2:
            arr = img[:, :, None]
        elif img.ndim == 3 and img.shape[2] in (1, 3):
            arr = img
        else:
            raise ValueError(
                f"pil_bicubic_resize: expected a numpy image (H, W) or (H, W, C) with C = 1 or 3, got {img.shape}"
            )
    else:
        raise ValueError(f"pil_bicubic_resize: expected a torch.Tensor or numpy.ndarray, got {type(img).__name__}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"pil_bicubic_resize: input has an empty spatial axis, shape {tuple(img.shape)}")
    return np.ascontiguousarray(arr)


def pil_bicubic_resize(img: Tensor | np.ndarray, size: tuple[int, int]) -> Tensor:
    """Resize an 8-bit image to ``size = (out_h, out_w)`` with Pillow's ``BICUBIC`` filter.

    This is the LR generator of the official EQSR (and LIIF) code, ``ToTensor()(Resize(size, BICUBIC)(
    ToPILImage()(img)))``: Pillow's cubic kernel (``a = -0.5``) widened by the shrink factor when shrinking (so it
    antialiases), separable, computed in fixed point on 8-bit samples, the result is 8-bit. Upscaling works too.

    Args:
        img: one image, either

            * a ``uint8`` tensor ``(C, H, W)`` with ``C`` 1 or 3 (used as is);
            * a floating-point tensor ``(C, H, W)`` in [0, 1], turned into 8 bits like torchvision's ``ToPILImage``:
              ``x.mul(255).byte()``, i.e. **truncation**, not rounding (values are clamped to [0, 1] first; torchvision
              does not clamp and wraps around). A float image that came from ``uint8 / 255`` in float32 gets its exact
              levels back (checked for all 256 levels), so the official crop -> float -> PIL round trip is lossless;
            * a ``uint8`` numpy array ``(H, W, C)`` (``C`` 1 or 3) or ``(H, W)``.

        size: ``(out_h, out_w)``, positive ints (note: Pillow itself takes ``(width, height)``).

    Returns:
        float32 tensor ``(C, out_h, out_w)`` equal to the 8-bit result divided by 255 (torchvision ``ToTensor``), on
        the CPU. An output of the input's size is the input unchanged.
    """
    from PIL import Image

    out_h, out_w = _pil_size(size)
    arr = _to_hwc_uint8(img)
    channels = arr.shape[2]
    pil = Image.fromarray(arr[:, :, 0] if channels == 1 else arr)  # mode "L" or "RGB"
    out = np.asarray(pil.resize((out_w, out_h), Image.Resampling.BICUBIC), dtype=np.uint8)
    if out.ndim == 2:
        out = out[:, :, None]
    return torch.from_numpy(out.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0).contiguous()
