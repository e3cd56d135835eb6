"""Paired random crop and dihedral augmentation for SR training pairs (BasicSR conventions, frameworks spec §2.3).

Both functions accept numpy images ``(H, W, C)`` (the decoded ``uint8`` cache) and tensors ``(..., H, W)``, and draw
their randomness from an explicit ``torch.Generator`` so a sample is a pure function of its seed.

* :func:`paired_random_crop`: the top-left corner is drawn uniformly in **LR** coordinates and the HR patch starts at
  ``(top * s, left * s)``, so the pair stays aligned on the LR pixel grid.
* :func:`augment`: horizontal flip, vertical flip and transpose (``rot90`` in BasicSR), each with probability 0.5,
  applied in that order and identically to every image passed; together they give the 8 dihedral transforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["apply_augment", "augment", "draw_augment", "paired_random_crop", "random_crop", "spatial_size"]

_ImgT = TypeVar("_ImgT", Tensor, np.ndarray)


def spatial_size(img: Tensor | np.ndarray) -> tuple[int, int]:
    """``(H, W)`` of a numpy ``(H, W[, C])`` image or a tensor ``(..., H, W)``."""
    if isinstance(img, Tensor):
        if img.ndim < 2:
            raise ValueError(f"expected a tensor of shape (..., H, W), got shape {tuple(img.shape)}")
        return int(img.shape[-2]), int(img.shape[-1])
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"expected a numpy image of shape (H, W) or (H, W, C), got shape {img.shape}")
        return int(img.shape[0]), int(img.shape[1])
    raise TypeError(f"expected a torch.Tensor or numpy.ndarray image, got {type(img).__name__}")


def _crop(img: _ImgT, top: int, left: int, height: int, width: int) -> _ImgT:
    if isinstance(img, Tensor):
        return img[..., top : top + height, left : left + width]
    return img[top : top + height, left : left + width, ...]


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high)``."""
    if high <= 1:
        return 0
    return int(torch.randint(0, high, (1,), generator=generator).item())


def _where(path: object | None) -> str:
    return f" ({path})" if path is not None else ""


def _check_patch(patch_size: object, name: str) -> int:
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or int(patch_size) < 1:
        raise ValueError(f"{name} must be a positive int, got {patch_size!r}")
    return int(patch_size)


def random_crop(
    img: _ImgT, patch_size: int, generator: torch.Generator | None = None, *, path: object | None = None
) -> _ImgT:
    """Crop a uniformly placed ``patch_size`` square (a view); errors name ``path`` when the image is too small."""
    size = _check_patch(patch_size, "patch_size")
    h, w = spatial_size(img)
    if h < size or w < size:
        raise ValueError(f"image{_where(path)} is {h}x{w} (HxW), smaller than the {size}x{size} patch")
    top = _randint(h - size + 1, generator)
    left = _randint(w - size + 1, generator)
    return _crop(img, top, left, size, size)


def paired_random_crop(
    hr: _ImgT,
    lr: _ImgT,
    lr_patch_size: int,
    scale: int,
    generator: torch.Generator | None = None,
    *,
    path: object | None = None,
    lr_path: object | None = None,
) -> tuple[_ImgT, _ImgT]:
    """Crop aligned patches: LR ``p x p`` at ``(top, left)``, HR ``p*s x p*s`` at ``(top*s, left*s)``.

    ``top``/``left`` are uniform over the positions where both patches fit. HR may differ from ``LR * scale`` by up
    to ``scale - 1`` pixels per axis (an HR that was not modcropped before its LR was made, with MATLAB's
    ``ceil(H / s)`` LR size); rows/columns without a complete counterpart are never sampled.

    Returns:
        ``(hr_patch, lr_patch)`` as views of the inputs.

    Raises:
        ValueError: the sizes do not correspond within that tolerance, or the image is smaller than the patch
            (messages name ``path``/``lr_path`` and the sizes).
    """
    p = _check_patch(lr_patch_size, "lr_patch_size")
    s = _check_patch(scale, "scale")
    hr_h, hr_w = spatial_size(hr)
    lr_h, lr_w = spatial_size(lr)
    if abs(hr_h - lr_h * s) >= s or abs(hr_w - lr_w * s) >= s:
        raise ValueError(
            f"HR image{_where(path)} is {hr_h}x{hr_w} but LR image{_where(lr_path)} is {lr_h}x{lr_w}: "
            f"LR x {s} = {lr_h * s}x{lr_w * s} does not match the HR size (tolerance {s - 1} px)"
        )
    # LR rows/cols whose HR block lies entirely inside the HR image.
    eff_h, eff_w = min(lr_h, hr_h // s), min(lr_w, hr_w // s)
    if eff_h < p or eff_w < p:
        raise ValueError(
            f"image{_where(path)} is too small for the patch: HR {hr_h}x{hr_w}, LR {lr_h}x{lr_w}, "
            f"LR patch {p}x{p} (HR patch {p * s}x{p * s})"
        )
    top = _randint(eff_h - p + 1, generator)
    left = _randint(eff_w - p + 1, generator)
    return _crop(hr, top * s, left * s, p * s, p * s), _crop(lr, top, left, p, p)


def draw_augment(
    hflip: bool = True, rot: bool = True, generator: torch.Generator | None = None
) -> tuple[bool, bool, bool]:
    """Draw BasicSR's ``(hflip, vflip, transpose)`` flags: each with p = 0.5 when enabled.

    Three numbers are always drawn, so the generator's stream does not depend on the flags.
    """
    u = torch.rand(3, generator=generator).tolist()
    return bool(hflip and u[0] < 0.5), bool(rot and u[1] < 0.5), bool(rot and u[2] < 0.5)


def apply_augment(img: _ImgT, hflip: bool, vflip: bool, transpose: bool) -> _ImgT:
    """Apply horizontal flip, then vertical flip, then transpose (swap H and W) to one image."""
    if isinstance(img, Tensor):
        if hflip:
            img = img.flip(-1)
        if vflip:
            img = img.flip(-2)
        if transpose:
            img = img.transpose(-2, -1)
        return img
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected a torch.Tensor or numpy.ndarray image, got {type(img).__name__}")
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if transpose:
        img = img.swapaxes(0, 1)
    return img


def augment(
    imgs: Sequence[_ImgT],
    hflip: bool = True,
    rot: bool = True,
    generator: torch.Generator | None = None,
) -> list[_ImgT]:
    """BasicSR ``augment``: the same random hflip / vflip / transpose (p = 0.5 each) on every image in ``imgs``.

    ``hflip`` enables the horizontal flip, ``rot`` the vertical flip and the transpose (``use_hflip``/``use_rot``).
    """
    flags = draw_augment(hflip, rot, generator)
    return [apply_augment(img, *flags) for img in imgs]
