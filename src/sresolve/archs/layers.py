"""Building blocks shared by the sresolve networks.

* :class:`LayerNorm2d` - the channels-first LayerNorm of the BasicSR-lineage efficient SR networks (SAFMN, spec
  ``archs_hat_hma_safmn.md`` §3.3), written with the explicit per-pixel formula for bit parity with official code.
* Padding helpers that pad **bottom/right only** (so the top-left region of the output is the unpadded result and a
  crop ``out[..., :H * s, :W * s]`` restores the exact size), with the modes used by the official test paths:
  ``reflect`` (HAT), ``symmetric`` (HMA's flip-concatenation), ``replicate`` (SAFMN for tiny inputs) and
  ``constant``. ``reflect`` needs the padding to be smaller than the side (PyTorch's rule, spec §5.2 / ComfyUI
  issue 2726); when it is not, it falls back to ``replicate`` for that dimension instead of failing.
* The Swin-lineage window-attention machinery of HAT and HMA (spec §1.3, §2.2-2.3), implemented once: the relative
  position index, the SW-MSA shift mask and its per-size cache, window partition / reverse, the relative-bias gather,
  :func:`window_attention` (scaled-dot-product attention with an additive bias), :class:`WindowAttention` (with or
  without its own ``qkv`` projection), :func:`shifted_window_attention`, plus :class:`DropPath`, :class:`Mlp`,
  :class:`TokenNorm` (the ``patch_embed`` LayerNorm), the pixel-shuffle upsampler and the transformer weight init.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "DIV2K_RGB_MEAN",
    "MULTI_SCALE_BODY",
    "MULTI_SCALE_HEADS",
    "SHIFT_MASK_VALUE",
    "DropPath",
    "FrozenBatchNorm2d",
    "L2Norm2d",
    "LayerNorm2d",
    "Mlp",
    "MultiScaleHeads",
    "PadMode",
    "ResidualTokenGroup",
    "ShiftMaskCache",
    "TokenNorm",
    "WindowAttention",
    "WindowTransformerSR",
    "calculate_rpi_sa",
    "calculate_shift_mask",
    "check_window_transformer_args",
    "crop_to_scale",
    "init_transformer_weights",
    "is_multi_scale_state",
    "multi_scale_head_scales",
    "pad_bottom_right",
    "pad_to_min_size",
    "pad_to_multiple",
    "pixel_shuffle_upsampler",
    "relative_bias",
    "relative_position_index",
    "shifted_window_attention",
    "single_scale_state_dict",
    "upsampler_scale",
    "window_attention",
    "window_partition",
    "window_reverse",
    "window_transformer_layout",
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


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose statistics are never updated and always used (SAFMN supplement Figures 1-2, "frozen BN").

    ``out = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` in train and eval mode alike: the running
    statistics keep their initial values (mean 0, var 1) unless a state dict overwrites them, the affine ``weight`` /
    ``bias`` are ordinary trainable parameters. The state-dict keys equal :class:`torch.nn.BatchNorm2d`'s (weights of
    one load into the other); ``num_batches_tracked`` stays 0.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, momentum=0.0, affine=True, track_running_stats=True)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class L2Norm2d(nn.Module):
    """Per-pixel L2 normalisation over the channels of a ``(B, C, H, W)`` tensor, without parameters.

    ``out = x / max(||x[:, :, i, j]||_2, eps)`` (:func:`torch.nn.functional.normalize` over ``dim=1``): every pixel's
    channel vector has unit Euclidean norm (zero vectors stay zero).
    """

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2.0, dim=1, eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


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


# ------------------------------------------------------------------------------------- window attention (HAT, HMA)
#: DIV2K RGB mean subtracted from the input by HAT and HMA (spec §1.1, §2.1).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
#: Value added to the scores of token pairs from different regions of a shifted window (spec §1.3; not -inf).
SHIFT_MASK_VALUE = -100.0


def relative_position_index(height: int, width: int) -> Tensor:
    """Relative-position index of an ``height × width`` token grid, shape ``(hw, hw)`` int64 (Swin, spec §1.3).

    ``index[p, q] = (r_p - r_q + height - 1) · (2·width - 1) + (c_p - c_q + width - 1)`` for row-major tokens p, q:
    the row of a ``(2·height - 1)(2·width - 1)``-entry bias table, Δr major. HMA's grid attention uses it on the
    ``(h/I) × (w/I)`` sub-grid (spec §2.3).
    """
    r, c = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    r, c = r.flatten(), c.flatten()
    dr = r[:, None] - r[None, :] + (height - 1)
    dc = c[:, None] - c[None, :] + (width - 1)
    return dr * (2 * width - 1) + dc


def calculate_rpi_sa(window_size: int) -> Tensor:
    """Relative-position index of window self-attention, ``(M², M²)`` int64: the ``relative_position_index_SA``
    buffer of the official HAT / HMA checkpoints (:func:`relative_position_index` of an M×M window)."""
    return relative_position_index(window_size, window_size)


def calculate_shift_mask(
    height: int, width: int, window_size: int, shift_size: int, dtype: torch.dtype, device: torch.device | str
) -> Tensor:
    """Additive SW-MSA mask ``(nW, M², M²)`` for a padded ``height × width`` feature map (Swin / spec §1.3).

    The (rolled) map is cut into 9 regions by the row and column slices ``[0, -M), [-M, -s), [-s, end)``; inside a
    window, token pairs of different regions get ``-100`` and the others ``0``. Built directly in ``dtype``.
    """
    m, s = window_size, shift_size
    label = torch.zeros(height, width, device=device)
    cuts = (slice(0, -m), slice(-m, -s), slice(-s, None))
    n = 0
    for hs in cuts:
        for ws in cuts:
            label[hs, ws] = n
            n += 1
    win = label.view(height // m, m, width // m, m).permute(0, 2, 1, 3).reshape(-1, m * m)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros(diff.shape, dtype=dtype, device=device).masked_fill_(diff != 0, SHIFT_MASK_VALUE)


class ShiftMaskCache:
    """SW-MSA masks keyed by ``(h, w, dtype, device)`` (spec §5.4: build the mask per size in the input dtype, once);
    the oldest entry is evicted beyond ``max_entries``."""

    def __init__(self, window_size: int, shift_size: int, max_entries: int = 8) -> None:
        self.window_size = window_size
        self.shift_size = shift_size
        self.max_entries = max_entries
        self._masks: dict[tuple[int, int, torch.dtype, torch.device], Tensor] = {}

    def __call__(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        if torch.compiler.is_compiling():
            # traced into the graph (constant for the compiled size); a dict lookup would guard on the cache's
            # contents and recompile the whole forward once the first call has filled it
            return calculate_shift_mask(height, width, self.window_size, self.shift_size, dtype, device)
        key = (height, width, dtype, device)
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= self.max_entries:
                self._masks.pop(next(iter(self._masks)))
            mask = calculate_shift_mask(height, width, self.window_size, self.shift_size, dtype, device)
            self._masks[key] = mask
        return mask

    def __len__(self) -> int:
        return len(self._masks)


def window_partition(x: Tensor, m: int) -> Tensor:
    """``(B, h, w, C)`` → ``(B·nW, M², C)``; windows ordered batch, window-row, window-col; tokens row-major."""
    b, h, w, c = x.shape
    return x.view(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, m * m, c)


def window_reverse(windows: Tensor, m: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B·nW, M², C)`` → ``(B, h, w, C)``."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // m) * (w // m))
    return windows.reshape(b, h // m, w // m, m, m, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Reduce a broadcast gradient back to ``shape`` (sum over the broadcast dims)."""
    dims = tuple(i for i, (g, s) in enumerate(zip(grad.shape, shape, strict=True)) if s == 1 and g != 1)
    return grad.sum(dims, keepdim=True) if dims else grad


class _BiasedAttentionCPU(torch.autograd.Function):
    """``softmax(q·kᵀ·d^-½ + bias)·v`` with a differentiable ``bias`` on the CPU.

    PyTorch's fused CPU kernel has no gradient for the mask, so with a learnable relative-position bias autograd falls
    back to the math path, which keeps every block's score and probability maps alive until the backward pass. Here
    the forward runs the fused kernel and keeps only ``q, k, v, bias, out``; the backward recomputes the probabilities
    ``P`` of one call and applies the softmax-attention gradients: ``dV = Pᵀ·dO``, ``dS = P ⊙ (dO·Vᵀ - rowsum(dO ⊙
    O))``, ``dQ = dS·K·d^-½``, ``dK = dSᵀ·Q·d^-½``, ``dB = dS`` summed over the broadcast dims.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        ctx.save_for_backward(q, k, v, bias, out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, d_out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        q, k, v, bias, out = ctx.saved_tensors  # type: ignore[attr-defined]
        scale = q.shape[-1] ** -0.5
        p = torch.softmax(torch.matmul(q, k.transpose(-2, -1)).mul_(scale).add_(bias), dim=-1)
        d_v = torch.matmul(p.transpose(-2, -1), d_out)
        d_s = torch.matmul(d_out, v.transpose(-2, -1)).sub_((d_out * out).sum(-1, keepdim=True)).mul_(p)
        del p
        d_q = torch.matmul(d_s, k).mul_(scale)
        d_k = torch.matmul(d_s.transpose(-2, -1), q).mul_(scale)
        return d_q, d_k, d_v, _sum_to(d_s, bias.shape)


def window_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """``softmax(q·kᵀ·d^-½ + bias)·v`` (HAT Eq. 3 with the relative position bias B) through
    :func:`~torch.nn.functional.scaled_dot_product_attention`, so that fused kernels are used where available.

    ``q`` ``(..., Nq, d)``, ``k``/``v`` ``(..., Nk, d)``, ``bias`` broadcastable to ``(..., Nq, Nk)``; the bias is
    cast to ``q``'s dtype and given as many dims as ``q``: PyTorch's fused CPU kernel
    (``_scaled_dot_product_flash_attention_for_cpu``) only accepts a mask of the query's rank and otherwise falls back
    to the unfused math path (measured 5× slower for HAT's 256-token windows). Keep ``q`` 4-D for the same reason.
    When training on the CPU with a learnable bias, :class:`_BiasedAttentionCPU` keeps the fused forward (the
    kernel has no mask gradient) and computes the gradients itself.
    """
    bias = bias.to(q.dtype)
    if bias.dim() < q.dim():
        bias = bias.view((1,) * (q.dim() - bias.dim()) + tuple(bias.shape))
    if q.device.type == "cpu" and q.dim() == 4 and bias.requires_grad and torch.is_grad_enabled():
        return _BiasedAttentionCPU.apply(q, k, v, bias)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def relative_bias(table: Tensor, index: Tensor, rows: int, cols: int) -> Tensor:
    """Gather ``table[index]`` as ``(heads, rows, cols)``; negative indices wrap (modulo), as Python indexing does."""
    idx = index.reshape(-1) % table.shape[0]
    return table[idx].view(rows, cols, -1).permute(2, 0, 1).contiguous()  # the fused kernels want a dense mask


class WindowAttention(nn.Module):
    """(Shifted-)window multi-head self-attention with relative position bias (HAT Eq. 3, Swin lineage).

    ``Attention(Q, K, V) = SoftMax(QKᵀ/√d + B)V`` over the M² tokens of each window, ``B = table[rpi]``; shifted
    windows add the SW-MSA mask. ``forward`` takes ``(B·nW, M², C)`` windows of tokens when the module owns its
    ``qkv`` projection (HAT: ``attn.qkv``), or of already projected ``[q | k | v]`` channels (``3·dim``) when
    ``own_qkv=False`` (HMA: the FAB's ``qkv`` lives in the block, the GAB's window branches get slices of one
    projection). Parameters: ``relative_position_bias_table`` ``((2M-1)², heads)``, [``qkv``], ``proj``.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, own_qkv: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias) if own_qkv else None
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, rpi: Tensor, mask: Tensor | None = None) -> Tensor:
        qkv = self.qkv(x) if self.qkv is not None else x
        bw, n, _ = qkv.shape
        h, c = self.num_heads, self.dim
        q, k, v = qkv.reshape(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)  # (bw, heads, n, d)
        bias = relative_bias(self.relative_position_bias_table, rpi, n, n)  # (heads, n, n)
        if mask is None:
            out = window_attention(q, k, v, bias)
        else:
            # windows are ordered (batch, window): fold the window index into the head axis so that the per-window mask
            # is a 4-D (1, nW·heads, n, n) broadcast over the batch (the fused CPU kernel needs 4-D tensors)
            nw = mask.shape[0]
            shape = (bw // nw, nw * h, n, c // h)
            full = (bias.unsqueeze(0) + mask.unsqueeze(1).to(bias.dtype)).reshape(1, nw * h, n, n)
            out = window_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape), full).reshape(bw, h, n, c // h)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


def shifted_window_attention(
    x: Tensor, attend: Callable[[Tensor, Tensor | None], Tensor], window_size: int, shift_size: int, mask: Tensor | None
) -> Tensor:
    """(S)W-MSA on a ``(B, h, w, C)`` map: roll by ``-shift`` (if any), partition into M×M windows, ``attend(windows,
    mask or None)``, reverse, roll back. Returns ``(B, h, w, C_out)``."""
    _, h, w, _ = x.shape
    m, s = window_size, shift_size
    if s > 0:
        x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    y = window_reverse(attend(window_partition(x, m), mask if s > 0 else None), m, h, w)
    return torch.roll(y, shifts=(s, s), dims=(1, 2)) if s > 0 else y


class DropPath(nn.Module):
    """Stochastic depth (per sample), Huang et al. 2016; identity at eval or with ``p = 0``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Transformer feed-forward: ``fc2(GELU(fc1(x)))`` with ``hidden`` units."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenNorm(nn.Module):
    """Flatten ``(B, C, h, w)`` to tokens ``(B, hw, C)`` and LayerNorm them (the official ``patch_embed`` of
    SwinIR / HAT / HMA with ``patch_size=1, patch_norm=True``: its only parameters are ``norm.weight/bias``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


def pixel_shuffle_upsampler(scale: int, num_feat: int) -> nn.Sequential:
    """Pixel-shuffle stages: one ``conv 3×3 → 4·F`` + ``PixelShuffle(2)`` per factor 2, or one ``9·F`` / ×3 stage.

    ``scale`` must be 1, 3 or a power of 2 (checked by the caller); Sequential indices match the official
    ``upsample.{0,2,..}`` keys.
    """
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
    else:
        layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
    return nn.Sequential(*layers)


def init_transformer_weights(m: nn.Module) -> None:
    """HAT / HMA init (spec §1.5, §2.4): Linear trunc-normal(0.02) with zero bias; LayerNorm weight 1, bias 0; convs
    keep PyTorch's default. Use with ``module.apply``."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------- the SwinIR-lineage network shell (HAT, HMA)
def _pos_int(owner: str, name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}")
    return value


def check_window_transformer_args(
    owner: str,
    *,
    scale: int,
    embed_dim: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_size: int,
    mlp_ratio: float,
    drop_path_rate: float,
    num_feat: int | None,
    resi_connection: str,
    img_range: float,
) -> tuple[list[int], list[int]]:
    """Validate the hyper-parameters shared by HAT, HMA and EQSR (errors start with ``owner`` and name the argument);
    returns ``depths`` and ``num_heads`` as lists. ``num_feat=None``: no pixel-shuffle upsampler (EQSR's query
    decoder), so ``scale`` is only checked to be a positive int."""
    scale = _pos_int(owner, "scale", scale)
    if num_feat is not None and scale != 3 and scale & (scale - 1):
        raise ValueError(f"{owner}: scale must be 1, 3 or a power of 2 (pixel-shuffle upsampler), got {scale}")
    embed_dim = _pos_int(owner, "embed_dim", embed_dim)
    if num_feat is not None:
        _pos_int(owner, "num_feat", num_feat)
    if _pos_int(owner, "window_size", window_size) < 2:
        raise ValueError(f"{owner}: window_size must be >= 2 (shifted windows use M // 2), got {window_size}")
    depths = [_pos_int(owner, "depths[i]", d) for d in depths]
    num_heads = [_pos_int(owner, "num_heads[i]", h) for h in num_heads]
    if not depths or len(depths) != len(num_heads):
        raise ValueError(
            f"{owner}: depths and num_heads must be non-empty lists of the same length (one entry per residual "
            f"group), got depths={depths}, num_heads={num_heads}"
        )
    for i, h in enumerate(num_heads):
        if embed_dim % h:
            raise ValueError(f"{owner}: embed_dim={embed_dim} must be divisible by num_heads[{i}]={h}")
    if int(embed_dim * mlp_ratio) < 1:
        raise ValueError(f"{owner}: mlp_ratio={mlp_ratio!r} gives int(embed_dim * mlp_ratio) < 1")
    if not 0 <= drop_path_rate < 1:
        raise ValueError(f"{owner}: drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
    if resi_connection not in ("1conv", "identity"):
        raise ValueError(f"{owner}: resi_connection must be '1conv' or 'identity', got {resi_connection!r}")
    if not img_range > 0:
        raise ValueError(f"{owner}: img_range must be > 0, got {img_range!r}")
    return depths, num_heads


class ResidualTokenGroup(nn.Module):
    """A residual group of the SwinIR lineage (HAT's RHAG, paper §3.2 Fig. 3; HMA's RHTB, spec §2.3):
    ``x + tokens(conv3×3(image(residual_group(x))))``.

    ``residual_group`` is the family's block sequence, called as ``residual_group(x, x_size, params)`` on tokens
    ``(B, hw, C)``; ``resi_connection='identity'`` drops the conv (no ``conv`` keys).
    """

    def __init__(self, residual_group: nn.Module, dim: int, resi_connection: str = "1conv") -> None:
        super().__init__()
        self.residual_group = residual_group
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()

    def forward(self, x: Tensor, x_size: tuple[int, int], params: Mapping[str, Tensor | None]) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        y = self.residual_group(x, x_size, params).transpose(1, 2).reshape(b, c, h, w)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class WindowTransformerSR(nn.Module):
    """The network shell shared by HAT and HMA (spec §1.4, §2.3): ``(x - mean)·img_range`` → pad bottom/right to a
    multiple of the window (``pad_mode``: HAT ``reflect``, HMA ``symmetric``, as their official test paths) →
    ``conv_first`` → tokens + ``patch_embed.norm`` → residual groups ``layers`` → ``norm`` → ``conv_after_body`` + long
    skip → ``conv_before_upsample`` (conv + LeakyReLU 0.01) → pixel-shuffle ``upsample`` → ``conv_last`` → de-normalise
    → crop to ``(H·s, W·s)``.

    A family builds it in three calls: :meth:`_init_head`, its own ``self.layers`` (:class:`ResidualTokenGroup`\\ s),
    :meth:`_init_tail`; and implements :meth:`block_params` (the per-size tensors the blocks share: shift mask,
    relative-position indices). ``grad_checkpointing`` checkpoints each residual group while training.
    """

    in_channels: int = 3
    out_channels: int = 3
    pad_mode: PadMode = "reflect"
    #: Why fp16 training is refused (``trainer.precision=16-mixed``): window self-attention SR transformers (SwinIR,
    #: HAT, DAT) are known to overflow in half precision (spandrel marks them ``supports_half=False``); bf16 has
    #: float32's range.
    fp16_unsafe: str | None = "fp16 overflows in window attention (HAT / HMA / EQSR attention logits and activations)"
    layers: nn.ModuleList

    def _init_head(
        self, *, scale: int, embed_dim: int, window_size: int, img_range: float, grad_checkpointing: bool
    ) -> None:
        self.scale = scale
        self.embed_dim = embed_dim
        self.window_size = window_size
        self.tile_align = window_size
        self.img_range = float(img_range)
        self.grad_checkpointing = bool(grad_checkpointing)
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = TokenNorm(embed_dim)

    def _init_tail(self, *, scale: int, embed_dim: int, num_feat: int, resi_connection: str) -> None:
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()
        self.conv_before_upsample = nn.Sequential(
            nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(negative_slope=0.01, inplace=True)
        )
        self.upsample = pixel_shuffle_upsampler(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def block_params(self, height: int, width: int, ref: Tensor) -> dict[str, Tensor | None]:
        """Tensors shared by every block for a padded ``height × width`` map (dtype/device of ``ref``)."""
        raise NotImplementedError

    def forward_features(self, x: Tensor, extra_params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Deep feature extraction on a ``(B, C, h, w)`` map with h, w multiples of the window; ``extra_params`` are
        added to the per-size :meth:`block_params` handed to every group (EQSR: the scale code)."""
        b, c, h, w = x.shape
        params = self.block_params(h, w, x)
        if extra_params:
            params = {**params, **extra_params}
        t = self.patch_embed(x)
        ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            t = checkpoint(layer, t, (h, w), params, use_reentrant=False) if ckpt else layer(t, (h, w), params)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.reconstruct(x, self.upsample, self.scale)

    def reconstruct(self, x: Tensor, upsample: nn.Module, scale: int) -> Tensor:
        """The forward pass with a given pixel-shuffle ``upsample`` of factor ``scale`` (:meth:`forward` uses the
        network's own; :class:`MultiScaleHeads` one head per scale over a shared body)."""
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{name} expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h < 1 or w < 1:
            raise ValueError(f"{name} needs an input of at least 1x1 px, got {h}x{w}")
        mean = self.mean.to(dtype=x.dtype)
        x = (x - mean) * self.img_range
        x, (ph, pw) = pad_to_multiple(x, self.window_size, mode=self.pad_mode)
        f0 = self.conv_first(x)
        f = self.conv_after_body(self.forward_features(f0)) + f0
        y = self.conv_last(upsample(self.conv_before_upsample(f)))
        y = y / self.img_range + mean
        return crop_to_scale(y, h, w, scale) if (ph or pw) else y


#: State-dict prefixes of a :class:`MultiScaleHeads` network: the shared body and the per-scale heads ``heads.x<s>.``.
MULTI_SCALE_BODY, MULTI_SCALE_HEADS = "body.", "heads."


class MultiScaleHeads(nn.Module):
    """Multi-related-task SR network: one body shared by several scales, one pixel-shuffle upsampler per scale
    (EDT, Li et al. 2021, "multi-related-task pre-training"; the alternative strategy of HAT Table 7).

    Built from one network per scale of a :class:`WindowTransformerSR` family (HAT, HMA; built with identical
    arguments except ``scale``): the first network's everything-but-``upsample`` is the body (``body.*`` keys, the
    single-scale network's keys), each network's ``upsample`` becomes ``heads.x<s>.*``. ``forward(x, scale)`` runs the
    body and the head of ``scale``; :meth:`at_scale` is a fixed-scale view (shared parameters) for the tiled
    inference path; :func:`single_scale_state_dict` turns the weights into those of the ×s network (what fine-tuning
    and ``sresolve-test`` load).
    """

    in_channels: int = 3
    out_channels: int = 3
    fp16_unsafe: str | None = WindowTransformerSR.fp16_unsafe

    def __init__(self, nets: Mapping[int, nn.Module]) -> None:
        super().__init__()
        if len(nets) < 2:
            raise ValueError(f"multi-related-task training needs at least two scales, got {sorted(nets)}")
        scales = sorted(int(s) for s in nets)
        for s in scales:
            net = nets[s]
            if not isinstance(net, WindowTransformerSR):
                raise TypeError(
                    f"multi-related-task training shares a body between scale-specific upsamplers; it needs a "
                    f"HAT/HMA-style network with a separate 'upsample', got {type(net).__name__}"
                )
            if int(net.scale) != s:
                raise ValueError(f"the network given for x{s} is a x{net.scale} network")
        body = nets[scales[0]]
        heads = {f"x{s}": nets[s].upsample for s in scales}
        del body.upsample
        self.body = body
        self.heads = nn.ModuleDict(heads)
        self.scales = tuple(scales)
        self.scale = scales[-1]  # registry contract: an int scale (the largest head)
        self.tile_align = getattr(body, "tile_align", 1)

    def head(self, scale: int | float) -> nn.Module:
        key = f"x{int(scale)}" if float(scale).is_integer() else f"x{scale}"
        if key not in self.heads:
            raise ValueError(f"this multi-scale network has heads for x{list(self.scales)}, not x{scale:g}")
        return self.heads[key]

    def forward(self, x: Tensor, scale: int | None = None) -> Tensor:
        s = self.scale if scale is None else int(scale)
        return self.body.reconstruct(x, self.head(s), s)

    def at_scale(self, scale: int) -> nn.Module:
        """A fixed-×``scale`` network sharing this one's parameters (``forward(x)``, ``scale``, ``tile_align``)."""
        return _ScaleView(self, int(scale))

    def extra_repr(self) -> str:
        return f"scales={list(self.scales)}"


class _ScaleView(nn.Module):
    """:meth:`MultiScaleHeads.at_scale`: the body and one head as a fixed-scale network (not registered anywhere)."""

    def __init__(self, net: MultiScaleHeads, scale: int) -> None:
        super().__init__()
        self.body, self.upsample = net.body, net.head(scale)
        self.scale, self.tile_align = scale, net.tile_align

    def forward(self, x: Tensor) -> Tensor:
        return self.body.reconstruct(x, self.upsample, self.scale)


def is_multi_scale_state(state: Mapping[str, Any]) -> bool:
    """Whether a state dict is a :class:`MultiScaleHeads` network's (``body.*`` and ``heads.x<s>.*`` keys only)."""
    return (
        bool(state)
        and all(k.startswith((MULTI_SCALE_BODY, MULTI_SCALE_HEADS)) for k in state)
        and any(k.startswith(MULTI_SCALE_HEADS) for k in state)
    )


def multi_scale_head_scales(state: Mapping[str, Any]) -> list[int]:
    """The scales of the heads in a :class:`MultiScaleHeads` state dict, sorted."""
    found = {k[len(MULTI_SCALE_HEADS) :].split(".", 1)[0] for k in state if k.startswith(MULTI_SCALE_HEADS)}
    return sorted(int(h[1:]) for h in found if h[1:].isdigit())


def single_scale_state_dict(state: Mapping[str, Tensor], scale: int | None) -> dict[str, Tensor]:
    """The ×``scale`` network's state dict from a :class:`MultiScaleHeads` one: ``body.k`` → ``k``, ``heads.x<s>.k``
    → ``upsample.k``. ``scale=None`` (or a scale without a head) keeps the body only, e.g. for a cross-scale
    initialisation whose upsampler is never transferred."""
    out = {k[len(MULTI_SCALE_BODY) :]: v for k, v in state.items() if k.startswith(MULTI_SCALE_BODY)}
    head = f"{MULTI_SCALE_HEADS}x{scale}."
    out.update({"upsample." + k[len(head) :]: v for k, v in state.items() if scale is not None and k.startswith(head)})
    return out


def upsampler_scale(state_dict: Mapping[str, Tensor], num_feat: int, owner: str, prefix: str = "upsample.") -> int:
    """Upscale factor of a :func:`pixel_shuffle_upsampler` in a state dict: the product over its ``<prefix>N.weight``
    convs of √(rows / num_feat) (spec §4). Errors start with ``owner`` and name the key."""
    scale = 1
    keys = [k for k in state_dict if k.startswith(prefix) and k.endswith(".weight")]
    for k in sorted(keys, key=lambda s: int(s[len(prefix) :].split(".", 1)[0])):
        rows = int(state_dict[k].shape[0])
        factor = math.isqrt(rows // num_feat)
        if factor * factor * num_feat != rows:
            raise ValueError(f"{owner} state dict: {k} has {rows} rows, not r^2 * {num_feat}")
        scale *= factor
    return scale


_LAYER_KEY = re.compile(r"^layers\.(\d+)\.")


def window_transformer_layout(state_dict: Mapping[str, Tensor], owner: str) -> tuple[int, int, list[int]]:
    """``(embed_dim, window_size, group ids)`` of a SwinIR-lineage state dict (HAT, HMA; spec §4): C = rows of
    ``conv_first``, M = √rows of ``relative_position_index_SA``, the contiguous ``layers.N`` indices. Errors start
    with ``owner`` and name the key."""
    cf = state_dict["conv_first.weight"]
    dim, in_ch = int(cf.shape[0]), int(cf.shape[1])
    if in_ch != 3:
        raise ValueError(f"{owner} state dict has {in_ch} input channels (conv_first.weight); only 3 are supported")
    n_sa = int(state_dict["relative_position_index_SA"].shape[0])
    m = math.isqrt(n_sa)
    if m * m != n_sa:
        raise ValueError(f"{owner} state dict: relative_position_index_SA has {n_sa} rows, not a square window")
    layer_ids = sorted({int(mt.group(1)) for k in state_dict if (mt := _LAYER_KEY.match(k))})
    if layer_ids != list(range(len(layer_ids))):
        raise ValueError(f"{owner} state dict has non-contiguous group indices layers.N: {layer_ids}")
    return dim, m, layer_ids
