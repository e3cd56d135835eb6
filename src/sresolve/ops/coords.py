"""Continuous pixel coordinates of the LIIF family of arbitrary-scale SR models (LIIF, LTE, EQSR).

An image of ``n`` pixels along an axis covers ``[-1, 1]``; pixel ``i`` is the cell ``[-1 + 2i/n, -1 + 2(i+1)/n]`` and
its centre is ``-1 + (2i + 1)/n`` (Chen, Liu, Wang, "Learning Continuous Image Representation with Local Implicit
Image Function", CVPR 2021, §3.2). An LR image and its HR version of any size share this frame, so a query at an HR
pixel centre falls inside the LR pixel it came from. These are the ``align_corners=False`` coordinates of
:func:`torch.nn.functional.grid_sample`, except for the axis order: ``make_coord`` is ``(row, column)`` = ``(y, x)``
(matrix order, as the official LIIF/EQSR code), ``grid_sample`` wants ``(x, y)`` (flip the last axis).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["axis_centres", "make_coord"]


def axis_centres(n: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The ``n`` pixel-centre coordinates ``-1 + (2i + 1)/n`` of one axis (computed in float64, then cast)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"axis length must be a positive int, got {n!r}")
    i = torch.arange(n, dtype=torch.float64, device=device)
    return (-1.0 + (2.0 * i + 1.0) / n).to(dtype)


def make_coord(
    shape: tuple[int, int], *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``(H, W, 2)`` pixel-centre coordinates of an ``H × W`` grid, last axis ``(y, x)``, both in ``(-1, 1)``."""
    if len(shape) != 2:
        raise ValueError(f"make_coord expects a (height, width) pair, got {shape!r}")
    ys = axis_centres(int(shape[0]), device=device, dtype=dtype)
    xs = axis_centres(int(shape[1]), device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)
