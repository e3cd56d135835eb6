"""Building blocks shared by the sresolve networks.

* :class:`LayerNorm2d` - the channels-first LayerNorm of the BasicSR-lineage efficient SR networks (SAFMN, spec
  ``archs_hat_hma_safmn.md`` §3.3), written with the explicit per-pixel formula for bit parity with official code.
* Padding helpers that pad **bottom/right only** (so the top-left region of the output is the unpadded result and a
  crop ``out[..., :H * s, :W * s]`` restores the exact size), with the modes used by the official test paths:
  ``reflect`` (HAT), ``symmetric`` (HMA's flip-concatenation), ``replicate`` (SAFMN for tiny inputs) and
  ``constant``. ``reflect`` needs the padding to be smaller than the side (PyTorch's rule, spec §5.2 / ComfyUI
  issue 2726); when it is not, it falls back to ``replicate`` for that dimension instead of failing.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LayerNorm2d",
    "PadMode",
    "crop_to_scale",
    "pad_bottom_right",
    "pad_to_min_size",
    "pad_to_multiple",
]

PadMode = Literal["reflect", "replicate", "symmetric", "constant"]
_PAD_MODES = ("reflect", "replicate", "symmetric", "constant")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``(B, C, H, W)`` tensor ("channels_first").

    Per pixel: ``u = mean_c(x)``, ``var = mean_c((x - u)^2)`` (biased), ``x_hat = (x - u) / sqrt(var + eps)``,
    ``out = weight[c] * x_hat + bias[c]`` (spec §3.3). Mathematically equal to ``F.layer_norm`` on channels-last data,
    but computed with this explicit formula (and in the input dtype) to reproduce the official SAFMN numerics.
    Without autograd (``torch.no_grad`` / ``inference_mode``) the same operations run in place.

    Args:
        dim: number of channels ``C``.
        eps: added to the variance (1e-6 as in SAFMN).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"LayerNorm2d: dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        d = x - u
        var = d.pow(2).mean(1, keepdim=True)
        if torch.is_grad_enabled():
            x_hat = d / torch.sqrt(var + self.eps)
            return self.weight[:, None, None] * x_hat + self.bias[:, None, None]
        # inference: the same operations in the same order, in place (bit-identical, fewer temporaries)
        d.div_(var.add_(self.eps).sqrt_())
        return d.mul_(self.weight[:, None, None]).add_(self.bias[:, None, None])

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def _pad_index(size: int, pad: int, mode: str, device: torch.device) -> Tensor:
    """Source indices ``(size + pad,)`` along one axis for the index-based padding modes."""
    i = torch.arange(size + pad, device=device)
    if mode == "replicate":
        return i.clamp_(max=size - 1)
    if mode == "reflect":  # edge not repeated: ... a b c | b a
        return torch.where(i < size, i, 2 * (size - 1) - i)
    # symmetric (edge repeated), periodic with period 2*size: a b c | c b a | a b c ...
    j = i % (2 * size)
    return torch.where(j < size, j, 2 * size - 1 - j)


def pad_bottom_right(x: Tensor, pad_h: int, pad_w: int, mode: PadMode = "reflect", value: float = 0.0) -> Tensor:
    """Pad the last two dims of ``x`` (any number of leading dims) by ``pad_h`` rows at the bottom and ``pad_w``
    columns at the right.

    Modes: ``reflect`` (mirror without repeating the edge; falls back to ``replicate`` on an axis whose side is not
    larger than the padding), ``symmetric`` (mirror repeating the edge, extended periodically for any padding, which
    equals HMA's ``cat([x, flip(x)])`` when ``pad <= side``), ``replicate`` and ``constant`` (``value``).
    Works for every dtype and keeps autograd.
    """
    if mode not in _PAD_MODES:
        raise ValueError(f"pad mode must be one of {list(_PAD_MODES)}, got {mode!r}")
    if x.dim() < 2:
        raise ValueError(f"expected a tensor with at least 2 dims (..., H, W), got shape {tuple(x.shape)}")
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"padding must be >= 0, got pad_h={pad_h}, pad_w={pad_w}")
    h, w = x.shape[-2:]
    if (pad_h and h == 0) or (pad_w and w == 0):
        raise ValueError(f"cannot pad an empty image of size {h}x{w}")
    if mode == "constant":
        return F.pad(x, (0, pad_w, 0, pad_h), mode="constant", value=value) if (pad_h or pad_w) else x
    for axis, size, pad in ((-2, h, pad_h), (-1, w, pad_w)):
        if pad == 0:
            continue
        axis_mode = "replicate" if (mode == "reflect" and pad >= size) else mode
        x = x.index_select(x.dim() + axis, _pad_index(size, pad, axis_mode, x.device))
    return x


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        pair = (v, v)
    elif isinstance(v, (tuple, list)) and len(v) == 2:
        pair = (int(v[0]), int(v[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name} must be >= 1, got {v!r}")
    return pair


def pad_to_multiple(
    x: Tensor, multiple: int | tuple[int, int], mode: PadMode = "reflect"
) -> tuple[Tensor, tuple[int, int]]:
    """Pad bottom/right so that H and W become multiples of ``multiple`` (int or ``(mh, mw)``).

    Returns ``(padded, (pad_h, pad_w))``. After running a network with scale ``s`` on ``padded``, crop with
    :func:`crop_to_scale` (``out[..., :H * s, :W * s]``). HAT pads to the window size with ``reflect`` and HMA with
    ``symmetric`` in their official test code (spec §5.2).
    """
    mh, mw = _pair(multiple, "multiple")
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % mh, (-w) % mw
    return pad_bottom_right(x, pad_h, pad_w, mode), (pad_h, pad_w)


def pad_to_min_size(
    x: Tensor, min_size: int | tuple[int, int], mode: PadMode = "replicate"
) -> tuple[Tensor, tuple[int, int]]:
    """Pad bottom/right so that H >= min_h and W >= min_w; sides already large enough are left untouched.

    Returns ``(padded, (pad_h, pad_w))``.
    """
    mh, mw = _pair(min_size, "min_size")
    h, w = x.shape[-2:]
    pad_h, pad_w = max(0, mh - h), max(0, mw - w)
    return pad_bottom_right(x, pad_h, pad_w, mode), (pad_h, pad_w)


def crop_to_scale(y: Tensor, height: int, width: int, scale: int) -> Tensor:
    """Crop a network output back to ``(height * scale, width * scale)`` (top-left), undoing bottom/right padding."""
    return y[..., : height * scale, : width * scale]
