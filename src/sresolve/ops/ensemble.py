"""Geometric self-ensemble ("×8 TTA", EDSR+ / HAT+ in the papers' tables).

The input is transformed by each of the 8 symmetries of the square (4 rotations × optional horizontal flip), the
network runs on each, the outputs are mapped back by the inverse transform and averaged. It is correct for any
network and any input shape, square or not, because each output is un-done exactly; networks with windows or
pooling grids see transposed sizes on the odd rotations, which their own padding handles.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: (quarter turns, flip) for the 8 elements of the dihedral group D4
TRANSFORMS: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def apply_transform(x: Tensor, turns: int, flip: bool) -> Tensor:
    """Flip (last dim) then rotate by ``turns`` quarter turns in the H-W plane."""
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def invert_transform(y: Tensor, turns: int, flip: bool) -> Tensor:
    """Inverse of :func:`apply_transform`: rotate back, then flip."""
    if turns:
        y = torch.rot90(y, -turns, dims=(-2, -1))
    return y.flip(-1) if flip else y


@torch.no_grad()
def self_ensemble(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Mean over the 8 dihedral transforms of ``inverse(fn(transform(x)))`` (accumulated in at least float32)."""
    total: Tensor | None = None
    for turns, flip in TRANSFORMS:
        out = invert_transform(fn(apply_transform(x, turns, flip)), turns, flip)
        out = out.double() if out.dtype == torch.float64 else out.float()
        total = out if total is None else total.add_(out)
    assert total is not None
    return total.div_(len(TRANSFORMS)).to(x.dtype)
