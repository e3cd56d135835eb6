"""SAFMN: Spatially-Adaptive Feature Modulation Network.

Sun, Pan, Dong, Tang, Dong, Huang, Yang, "Spatially-Adaptive Feature Modulation for Efficient Image
Super-Resolution", ICCV 2023 (https://arxiv.org/abs/2302.13800). Written from the paper and the facts in
``/work/shared/specs/archs_hat_hma_safmn.md`` §3 (official repository sunny2109/SAFMN @68c2182); module and
parameter names equal the official release so its ``SAFMN_DF2K_x*.pth`` / ``SAFMN_L_*.pth`` files load with
``strict=True`` (148 keys for the default ×4 model).

Structure (paper Fig. 2): shallow 3×3 conv ``to_feat`` → ``n_blocks`` feature mixing modules (FMM, paper §3.3) with
a global residual from ``to_feat``'s output → 3×3 conv to ``3·s²`` channels + PixelShuffle (``to_img``). There is no
mean shift, no image-level skip and no output clamp.

Registered variants (spec §3.1): ``safmn`` (dim 36, 8 blocks), ``safmn_c48n12`` (48, 12; no official checkpoint),
``safmn_l`` (128, 16; "SAFMN-L" for classic SR), all with ``ffn_scale = 2``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import LayerNorm2d, crop_to_scale, pad_to_min_size
from .registry import arch_defaults, arch_family, list_archs, register_arch, register_detector

__all__ = ["CCM", "FMM", "SAFM", "SAFMN", "safmn", "safmn_c48n12", "safmn_l"]

#: Number of SAFM pyramid levels (hard-coded in the official code; ``dim`` must be divisible by it).
N_LEVELS = 4
#: Smallest side the 4-level pyramid can handle: level 3 pools to ``side // 8`` (spec §3.3).
MIN_SIZE = 2 ** (N_LEVELS - 1)


class SAFM(nn.Module):
    """Spatially-Adaptive Feature Modulation (paper §3.1, Eq. 1-3; spec §3.3 "SAFM").

    The normalised input ``n`` is split into ``N_LEVELS`` channel chunks ``X_0..X_3``. ``X_0`` goes through a 3×3
    depthwise conv at full resolution; ``X_i`` (i ≥ 1) is adaptively max-pooled to ``(h // 2^i, w // 2^i)``, filtered
    by a 3×3 depthwise conv and nearest-upsampled back to ``(h, w)`` (Eq. 1). The concatenation is aggregated by a 1×1
    conv (Eq. 2) into an attention map that modulates the input: ``GELU(aggr(·)) ⊙ n`` (Eq. 3).
    """

    def __init__(self, dim: int, n_levels: int = N_LEVELS) -> None:
        super().__init__()
        if dim % n_levels:
            raise ValueError(f"SAFM: dim={dim} must be divisible by n_levels={n_levels}")
        self.n_levels = n_levels
        chunk = dim // n_levels
        self.mfr = nn.ModuleList(nn.Conv2d(chunk, chunk, 3, 1, 1, groups=chunk) for _ in range(n_levels))
        self.aggr = nn.Conv2d(dim, dim, 1, 1, 0)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return self._forward_inference(x)
        h, w = x.shape[-2:]
        chunks = x.chunk(self.n_levels, dim=1)
        feats = [self.mfr[0](chunks[0])]
        for i in range(1, self.n_levels):
            s = F.adaptive_max_pool2d(chunks[i], (h // 2**i, w // 2**i))
            s = self.mfr[i](s)
            feats.append(F.interpolate(s, size=(h, w), mode="nearest"))
        return self.act(self.aggr(torch.cat(feats, dim=1))) * x

    def _forward_inference(self, x: Tensor) -> Tensor:
        """Bit-identical to :meth:`forward` without autograd, with fewer temporaries: levels are written straight into
        the concatenation buffer, and when ``2^i`` divides both sides the adaptive max-pool is a plain
        ``max_pool2d(2^i)`` and the nearest upsampling an exact broadcast (same windows, same copied values)."""
        b, d, h, w = x.shape
        c = d // self.n_levels
        chunks = x.chunk(self.n_levels, dim=1)
        cat = torch.empty_like(x)
        cat[:, :c] = self.mfr[0](chunks[0])
        for i in range(1, self.n_levels):
            k = 2**i
            dst = cat[:, i * c : (i + 1) * c]
            if h % k == 0 and w % k == 0:
                s = self.mfr[i](F.max_pool2d(chunks[i], k, k))
                shape = (b, c, h // k, k, w // k, k)
                dst.view(shape).copy_(s[:, :, :, None, :, None].expand(shape))
            else:
                s = self.mfr[i](F.adaptive_max_pool2d(chunks[i], (h // k, w // k)))
                dst.copy_(F.interpolate(s, size=(h, w), mode="nearest"))
        return self.act(self.aggr(cat)).mul_(x)


class CCM(nn.Module):
    """Convolutional Channel Mixer (paper §3.2): 3×3 conv ``dim → int(dim·ffn_scale)``, GELU, 1×1 conv back.

    Attribute ``ccm`` is the ``Sequential`` (indices 0 and 2 hold the weights, as in the official checkpoints).
    """

    def __init__(self, dim: int, ffn_scale: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * ffn_scale)
        if hidden < 1:
            raise ValueError(f"CCM: int(dim * ffn_scale) must be >= 1, got dim={dim}, ffn_scale={ffn_scale}")
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1, 1, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.ccm(x)


class FMM(nn.Module):
    """Feature Mixing Module (paper §3.3, Fig. 2; ``AttBlock`` in the official code).

    ``x = SAFM(LN1(x)) + x``; ``x = CCM(LN2(x)) + x`` with channels-first LayerNorms (eps 1e-6).
    """

    def __init__(self, dim: int, ffn_scale: float = 2.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.norm2 = LayerNorm2d(dim)
        self.safm = SAFM(dim)
        self.ccm = CCM(dim, ffn_scale)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():  # same sums, accumulated in place
            x = self.safm(self.norm1(x)).add_(x)
            return self.ccm(self.norm2(x)).add_(x)
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


class SAFMN(nn.Module):
    """SAFMN super-resolution network (Sun et al., ICCV 2023).

    Args:
        dim: feature channels (must be divisible by 4, the number of SAFM levels).
        n_blocks: number of feature mixing modules.
        ffn_scale: CCM expansion ratio (hidden channels ``int(dim * ffn_scale)``).
        upscaling_factor: integer upscale factor ``s`` (official argument name; exposed as ``.scale``).

    Input: ``(B, 3, H, W)`` RGB in [0, 1], any ``H, W >= 1``. Sides below 8 px (which the official 4-level pyramid
    cannot pool) are replicate-padded at the bottom/right to 8 and the output is cropped to ``(H·s, W·s)``; inputs
    with both sides ≥ 8 run unpadded, exactly like the official test path (spec §3.3, §3.6).
    """

    in_channels: int = 3
    out_channels: int = 3

    def __init__(self, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0, upscaling_factor: int = 4) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < N_LEVELS or dim % N_LEVELS:
            raise ValueError(
                f"SAFMN: dim must be a positive multiple of {N_LEVELS} (SAFM splits 4 levels), got {dim!r}"
            )
        if not isinstance(n_blocks, int) or n_blocks < 1:
            raise ValueError(f"SAFMN: n_blocks must be an int >= 1, got {n_blocks!r}")
        if not isinstance(upscaling_factor, int) or upscaling_factor < 1:
            raise ValueError(f"SAFMN: upscaling_factor (scale) must be an int >= 1, got {upscaling_factor!r}")
        if not ffn_scale > 0:
            raise ValueError(f"SAFMN: ffn_scale must be > 0, got {ffn_scale!r}")
        self.dim = dim
        self.n_blocks = n_blocks
        self.ffn_scale = float(ffn_scale)
        self.scale = upscaling_factor
        self.to_feat = nn.Conv2d(3, dim, 3, 1, 1)
        self.feats = nn.Sequential(*(FMM(dim, ffn_scale) for _ in range(n_blocks)))
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * upscaling_factor**2, 3, 1, 1), nn.PixelShuffle(upscaling_factor))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SAFMN expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h < 1 or w < 1:
            raise ValueError(f"SAFMN needs an input of at least 1x1 px, got {h}x{w}")
        small = h < MIN_SIZE or w < MIN_SIZE
        if small:
            x, _ = pad_to_min_size(x, MIN_SIZE, mode="replicate")
        f = self.to_feat(x)
        g = self.feats(f)
        y = self.to_img(g + f if torch.is_grad_enabled() else g.add_(f))
        return crop_to_scale(y, h, w, self.scale) if small else y

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_blocks={self.n_blocks}, ffn_scale={self.ffn_scale}, scale={self.scale}"


# ------------------------------------------------------------------------------------------------ registered variants
@register_arch(family="safmn")
def safmn(scale: int = 4, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0) -> SAFMN:
    """SAFMN for efficient SR (official ``train_DF2K_X{2,3,4}``): 0.228 / 0.233 / 0.240 M params at ×2/×3/×4."""
    return SAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=ffn_scale, upscaling_factor=scale)


@register_arch(family="safmn")
def safmn_c48n12(scale: int = 4, dim: int = 48, n_blocks: int = 12, ffn_scale: float = 2.0) -> SAFMN:
    """SAFMN with 48 channels and 12 blocks (no official checkpoint): 0.598 / 0.604 / 0.613 M params."""
    return SAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=ffn_scale, upscaling_factor=scale)


@register_arch(family="safmn")
def safmn_l(scale: int = 4, dim: int = 128, n_blocks: int = 16, ffn_scale: float = 2.0) -> SAFMN:
    """SAFMN-L for classic SR (official ``train_L_DF2K_X*``): 5.559 / 5.577 / 5.601 M params."""
    return SAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=ffn_scale, upscaling_factor=scale)


# ------------------------------------------------------------------------------------------------ state-dict detector
_REQUIRED_KEYS = (
    "to_feat.weight",
    "feats.0.norm1.weight",
    "feats.0.norm2.weight",
    "feats.0.safm.mfr.0.weight",
    "feats.0.safm.mfr.3.weight",
    "feats.0.safm.aggr.weight",
    "feats.0.ccm.ccm.0.weight",
    "feats.0.ccm.ccm.2.weight",
    "to_img.0.weight",
)
_BLOCK_RE = re.compile(r"^feats\.(\d+)\.")


@register_detector("safmn")
def detect_safmn(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Recognise an official-layout SAFMN state dict and infer its hyper-parameters (spec §4).

    ``dim`` = rows of ``to_feat.weight``; ``n_blocks`` = number of ``feats.N``; ``ffn_scale`` = rows of
    ``feats.0.ccm.ccm.0.weight`` / dim; ``scale`` = sqrt(rows of ``to_img.0.weight`` / 3). Returns the registered
    variant whose defaults match (``safmn``, ``safmn_c48n12``, ``safmn_l``) with ``{'scale': s}``, else ``safmn``
    with explicit arguments.
    """
    if not all(k in state_dict for k in _REQUIRED_KEYS):
        return None
    dim = int(state_dict["to_feat.weight"].shape[0])
    in_ch = int(state_dict["to_feat.weight"].shape[1])
    if in_ch != 3:
        raise ValueError(f"SAFMN state dict has {in_ch} input channels (to_feat.weight); only 3 are supported")
    indices = sorted({int(m.group(1)) for k in state_dict if (m := _BLOCK_RE.match(k))})
    n_blocks = len(indices)
    if indices != list(range(n_blocks)):
        raise ValueError(f"SAFMN state dict has non-contiguous block indices feats.N: {indices}")
    hidden = int(state_dict["feats.0.ccm.ccm.0.weight"].shape[0])
    ffn_scale = hidden / dim
    if int(dim * ffn_scale) != hidden:  # guard against float round-off in hidden/dim*dim
        ffn_scale = math.nextafter(ffn_scale, math.inf)
    out_rows = int(state_dict["to_img.0.weight"].shape[0])
    scale = math.isqrt(out_rows // 3)
    if 3 * scale * scale != out_rows or scale < 1:
        raise ValueError(f"SAFMN state dict: to_img.0.weight has {out_rows} rows, not 3*s^2 for an integer scale s")
    inferred = {"dim": dim, "n_blocks": n_blocks, "ffn_scale": ffn_scale}
    for name in ("safmn", "safmn_c48n12", "safmn_l", *list_archs()):
        if arch_family(name) != "safmn":
            continue
        defaults = arch_defaults(name)
        if all(defaults.get(k) == v for k, v in inferred.items()):
            return name, {"scale": scale}
    return "safmn", {"scale": scale, **inferred}
