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

Ablation switches (SAFMN supplement Table 1 and Figures 1-2; every default reproduces the official network, its
state-dict keys and its outputs bit for bit; ``conf/experiment/safmn_ablation_*.yaml`` sweep them):

* ``safm_levels`` (Table 1, "SAFM scales"): number of SAFM pyramid levels, 4 = ×1 ↓2 ↓4 ↓8 (full), 3 = without the
  ↓8 level, 2 = without ↓8 and ↓4, 1 = one 3×3 depthwise conv on all channels at full resolution.
* ``safm_modulation`` (Table 1, "feature modulation"): the product with the normalised input (Eq. 3); off → the SAFM
  output is the attention map ``GELU(aggr(·))`` itself.
* ``safm_multiscale`` (Table 1, "multi-scale representation"): off → every chunk is filtered by its 3×3 depthwise
  conv at full resolution (no max-pool / upsampling, same parameters).
* ``safm_aggregation`` (Table 1, "feature aggregation"): off → no 1×1 ``aggr`` conv; ``GELU(concat)`` is the map.
* ``norm`` (Figures 1-2, "normalisation"): the normalisation in front of SAFM and CCM in every FMM, one of
  :data:`NORMS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sresolve.validation import check_bool

from .layers import FrozenBatchNorm2d, L2Norm2d, LayerNorm2d, crop_to_scale, pad_to_min_size
from .registry import arch_defaults, arch_family, list_archs, register_arch, register_detector

__all__ = ["CCM", "FMM", "NORMS", "SAFM", "SAFMN", "make_norm", "safmn", "safmn_c48n12", "safmn_l"]

#: Default number of SAFM pyramid levels (hard-coded in the official code; ``dim`` must be divisible by it).
N_LEVELS = 4
#: Smallest side the default 4-level pyramid can handle: level 3 pools to ``side // 8`` (spec §3.3). For other
#: settings see :func:`min_input_size`.
MIN_SIZE = 2 ** (N_LEVELS - 1)

NormName = Literal["layernorm", "batchnorm", "frozen_batchnorm", "l2", "none"]
#: Accepted values of the ``norm`` switch (SAFMN supplement Figures 1-2), the official ``layernorm`` first.
NORMS: tuple[str, ...] = get_args(NormName)


def min_input_size(levels: int = N_LEVELS, multiscale: bool = True) -> int:
    """Smallest input side the SAFM pyramid needs: ``2^(levels-1)`` (the coarsest level pools to ``side //
    2^(levels-1)``, which must be ≥ 1); 1 when the multi-scale representation is off (no pooling at all)."""
    return 2 ** (levels - 1) if multiscale else 1


def make_norm(norm: str, dim: int) -> nn.Module:
    """The normalisation layer of an FMM (SAFMN supplement Figures 1-2).

    ``layernorm``: :class:`LayerNorm2d` (eps 1e-6, the official layer); ``batchnorm``: :class:`torch.nn.BatchNorm2d`
    (batch statistics in training, running statistics in eval); ``frozen_batchnorm``: :class:`FrozenBatchNorm2d`
    (running mean 0 / var 1 always used and never updated, affine parameters trained); ``l2``: :class:`L2Norm2d`
    (per-pixel unit L2 norm over the channels, no parameters); ``none``: :class:`torch.nn.Identity`.
    """
    if norm == "layernorm":
        return LayerNorm2d(dim)
    if norm == "batchnorm":
        return nn.BatchNorm2d(dim)
    if norm == "frozen_batchnorm":
        return FrozenBatchNorm2d(dim)
    if norm == "l2":
        return L2Norm2d()
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"SAFMN: unknown norm {norm!r}; allowed: {list(NORMS)}")


class SAFM(nn.Module):
    """Spatially-Adaptive Feature Modulation (paper §3.1, Eq. 1-3; spec §3.3 "SAFM").

    The normalised input ``n`` is split into ``n_levels`` channel chunks ``X_0..X_{L-1}``. ``X_0`` goes through a 3×3
    depthwise conv at full resolution; ``X_i`` (i ≥ 1) is adaptively max-pooled to ``(h // 2^i, w // 2^i)``, filtered
    by a 3×3 depthwise conv and nearest-upsampled back to ``(h, w)`` (Eq. 1). The concatenation is aggregated by a 1×1
    conv (Eq. 2) into an attention map that modulates the input: ``GELU(aggr(·)) ⊙ n`` (Eq. 3).

    Args:
        dim: channels (divisible by ``n_levels``).
        n_levels: pyramid levels (SAFMN supplement Table 1 "SAFM scales"; official 4 = ×1 ↓2 ↓4 ↓8; 1 = a single
            3×3 depthwise conv on all channels at full resolution).
        modulation: multiply the attention map with ``n`` (Eq. 3; supplement Table 1 "feature modulation"); off →
            the output is ``GELU(aggr(concat))``.
        multiscale: pool / upsample the chunks ``X_i`` (i ≥ 1) (supplement Table 1 "multi-scale representation");
            off → every chunk is filtered at full resolution by its own 3×3 depthwise conv (same parameters).
        aggregation: the 1×1 ``aggr`` conv (Eq. 2; supplement Table 1 "feature aggregation"); off → no ``aggr``
            parameters and ``GELU(concat)`` is the attention map.
    """

    def __init__(
        self,
        dim: int,
        n_levels: int = N_LEVELS,
        modulation: bool = True,
        multiscale: bool = True,
        aggregation: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(n_levels, int) or isinstance(n_levels, bool) or n_levels < 1:
            raise ValueError(f"SAFM: n_levels (safm_levels) must be an int >= 1, got {n_levels!r}")
        if dim % n_levels:
            raise ValueError(f"SAFM: dim={dim} must be divisible by n_levels={n_levels}")
        self.n_levels = n_levels
        self.modulation = check_bool(modulation, "SAFMN: safm_modulation")
        self.multiscale = check_bool(multiscale, "SAFMN: safm_multiscale")
        self.aggregation = check_bool(aggregation, "SAFMN: safm_aggregation")
        chunk = dim // n_levels
        self.mfr = nn.ModuleList(nn.Conv2d(chunk, chunk, 3, 1, 1, groups=chunk) for _ in range(n_levels))
        if aggregation:
            self.aggr = nn.Conv2d(dim, dim, 1, 1, 0)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return self._forward_inference(x)
        h, w = x.shape[-2:]
        chunks = x.chunk(self.n_levels, dim=1)
        feats = [self.mfr[0](chunks[0])]
        for i in range(1, self.n_levels):
            if not self.multiscale:
                feats.append(self.mfr[i](chunks[i]))
                continue
            s = F.adaptive_max_pool2d(chunks[i], (h // 2**i, w // 2**i))
            s = self.mfr[i](s)
            feats.append(F.interpolate(s, size=(h, w), mode="nearest"))
        cat = torch.cat(feats, dim=1)
        attn = self.act(self.aggr(cat) if self.aggregation else cat)
        return attn * x if self.modulation else attn

    def _forward_inference(self, x: Tensor) -> Tensor:
        """Bit-identical to :meth:`forward` without autograd, with fewer temporaries: levels are written straight into
        the concatenation buffer, and when ``2^i`` divides both sides the adaptive max-pool is a plain
        ``max_pool2d(2^i)`` and the nearest upsampling an exact broadcast (same windows, same copied values). Every
        switch combination takes this path (the switches only skip steps)."""
        b, d, h, w = x.shape
        c = d // self.n_levels
        chunks = x.chunk(self.n_levels, dim=1)
        cat = torch.empty_like(x)
        cat[:, :c] = self.mfr[0](chunks[0])
        for i in range(1, self.n_levels):
            k = 2**i
            dst = cat[:, i * c : (i + 1) * c]
            if not self.multiscale:
                dst.copy_(self.mfr[i](chunks[i]))
            elif h % k == 0 and w % k == 0:
                s = self.mfr[i](F.max_pool2d(chunks[i], k, k))
                shape = (b, c, h // k, k, w // k, k)
                dst.view(shape).copy_(s[:, :, :, None, :, None].expand(shape))
            else:
                s = self.mfr[i](F.adaptive_max_pool2d(chunks[i], (h // k, w // k)))
                dst.copy_(F.interpolate(s, size=(h, w), mode="nearest"))
        attn = self.act(self.aggr(cat) if self.aggregation else cat)
        return attn.mul_(x) if self.modulation else attn

    def extra_repr(self) -> str:
        off = [n for n in ("modulation", "multiscale", "aggregation") if not getattr(self, n)]
        return f"n_levels={self.n_levels}" + "".join(f", {n}=False" for n in off)


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

    ``x = SAFM(N1(x)) + x``; ``x = CCM(N2(x)) + x`` with ``N = norm`` (official: channels-first LayerNorms, eps 1e-6;
    SAFMN supplement Figures 1-2 compare the alternatives of :func:`make_norm`). ``safm_*`` are the SAFM switches of
    supplement Table 1 (see :class:`SAFM`).
    """

    def __init__(
        self,
        dim: int,
        ffn_scale: float = 2.0,
        safm_levels: int = N_LEVELS,
        safm_modulation: bool = True,
        safm_multiscale: bool = True,
        safm_aggregation: bool = True,
        norm: str = "layernorm",
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.norm2 = make_norm(norm, dim)
        self.safm = SAFM(dim, safm_levels, safm_modulation, safm_multiscale, safm_aggregation)
        self.ccm = CCM(dim, ffn_scale)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():  # same sums, accumulated in place (SAFM and CCM return fresh tensors)
            x = self.safm(self.norm1(x)).add_(x)
            return self.ccm(self.norm2(x)).add_(x)
        x = self.safm(self.norm1(x)) + x
        return self.ccm(self.norm2(x)) + x


#: Official values of the ablation switches (supplement Table 1 / Figures 1-2); ``extra_repr`` and the detector
#: report only what differs from them.
SWITCH_DEFAULTS: dict[str, Any] = {
    "safm_levels": N_LEVELS,
    "safm_modulation": True,
    "safm_multiscale": True,
    "safm_aggregation": True,
    "norm": "layernorm",
}


class SAFMN(nn.Module):
    """SAFMN super-resolution network (Sun et al., ICCV 2023).

    Args:
        dim: feature channels (must be divisible by ``safm_levels``, 4 by default).
        n_blocks: number of feature mixing modules.
        ffn_scale: CCM expansion ratio (hidden channels ``int(dim * ffn_scale)``).
        upscaling_factor: integer upscale factor ``s`` (official argument name; exposed as ``.scale``).
        safm_levels: SAFM pyramid levels, 1-4 in SAFMN supplement Table 1 ("SAFM scales"; 4 = ×1 ↓2 ↓4 ↓8, 3 = without
            ↓8, 2 = without ↓8 ↓4, 1 = ×1 only). The channels are split into ``safm_levels`` equal chunks.
        safm_modulation: supplement Table 1 "feature modulation" (Eq. 3's product with the normalised input).
        safm_multiscale: supplement Table 1 "multi-scale representation" (off: all chunks at full resolution).
        safm_aggregation: supplement Table 1 "feature aggregation" (off: no 1×1 ``aggr`` conv).
        norm: supplement Figures 1-2 "normalisation" in every FMM, one of :data:`NORMS` (see :func:`make_norm`).

    Input: ``(B, 3, H, W)`` RGB in [0, 1], any ``H, W >= 1``. Sides below ``min_size`` (8 px for the official 4-level
    pyramid, ``2^(safm_levels-1)`` in general, 1 without the multi-scale representation) are replicate-padded at the
    bottom/right to ``min_size`` and the output is cropped to ``(H·s, W·s)``; larger inputs run unpadded, exactly
    like the official test path (spec §3.3, §3.6).
    """

    in_channels: int = 3
    out_channels: int = 3
    #: fp16 training is refused: spandrel marks SAFMN ``supports_half=False`` (not reproduced here: no trained
    #: weights on the test machines); bf16 keeps float32's range at the same speed on bf16 hardware.
    fp16_unsafe: str | None = "SAFMN is not fp16-safe (spandrel marks it supports_half=False)"

    def __init__(
        self,
        dim: int = 36,
        n_blocks: int = 8,
        ffn_scale: float = 2.0,
        upscaling_factor: int = 4,
        safm_levels: int = N_LEVELS,
        safm_modulation: bool = True,
        safm_multiscale: bool = True,
        safm_aggregation: bool = True,
        norm: str = "layernorm",
    ) -> None:
        super().__init__()
        if not isinstance(safm_levels, int) or isinstance(safm_levels, bool) or safm_levels < 1:
            raise ValueError(f"SAFMN: safm_levels must be an int >= 1, got {safm_levels!r}")
        if not isinstance(dim, int) or dim < safm_levels or dim % safm_levels:
            raise ValueError(
                f"SAFMN: dim must be a positive multiple of {safm_levels} (SAFM splits the channels into "
                f"safm_levels={safm_levels} chunks), got {dim!r}"
            )
        if not isinstance(n_blocks, int) or n_blocks < 1:
            raise ValueError(f"SAFMN: n_blocks must be an int >= 1, got {n_blocks!r}")
        if not isinstance(upscaling_factor, int) or upscaling_factor < 1:
            raise ValueError(f"SAFMN: upscaling_factor (scale) must be an int >= 1, got {upscaling_factor!r}")
        if not ffn_scale > 0:
            raise ValueError(f"SAFMN: ffn_scale must be > 0, got {ffn_scale!r}")
        # the SAFM switches and the norm are checked where they are used (SAFM, make_norm)
        self.dim = dim
        self.n_blocks = n_blocks
        self.ffn_scale = float(ffn_scale)
        self.scale = upscaling_factor
        self.safm_levels = safm_levels
        self.safm_modulation = safm_modulation
        self.safm_multiscale = safm_multiscale
        self.safm_aggregation = safm_aggregation
        self.norm = norm
        self.min_size = min_input_size(safm_levels, safm_multiscale)
        self.to_feat = nn.Conv2d(3, dim, 3, 1, 1)
        self.feats = nn.Sequential(
            *(
                FMM(dim, ffn_scale, safm_levels, safm_modulation, safm_multiscale, safm_aggregation, norm)
                for _ in range(n_blocks)
            )
        )
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * upscaling_factor**2, 3, 1, 1), nn.PixelShuffle(upscaling_factor))

    @property
    def switches(self) -> dict[str, Any]:
        """The ablation switches that differ from the official network (empty for the default)."""
        return {k: getattr(self, k) for k, v in SWITCH_DEFAULTS.items() if getattr(self, k) != v}

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SAFMN expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h < 1 or w < 1:
            raise ValueError(f"SAFMN needs an input of at least 1x1 px, got {h}x{w}")
        small = h < self.min_size or w < self.min_size
        if small:
            x, _ = pad_to_min_size(x, self.min_size, mode="replicate")
        f = self.to_feat(x)
        g = self.feats(f)
        y = self.to_img(g + f if torch.is_grad_enabled() else g.add_(f))
        return crop_to_scale(y, h, w, self.scale) if small else y

    def extra_repr(self) -> str:
        text = f"dim={self.dim}, n_blocks={self.n_blocks}, ffn_scale={self.ffn_scale}, scale={self.scale}"
        return text + "".join(f", {k}={v!r}" for k, v in self.switches.items())


# ------------------------------------------------------------------------------------------------ registered variants
@register_arch(family="safmn")
def safmn(
    scale: int = 4,
    dim: int = 36,
    n_blocks: int = 8,
    ffn_scale: float = 2.0,
    safm_levels: int = N_LEVELS,
    safm_modulation: bool = True,
    safm_multiscale: bool = True,
    safm_aggregation: bool = True,
    norm: NormName = "layernorm",
) -> SAFMN:
    """SAFMN for efficient SR (official ``train_DF2K_X{2,3,4}``): 0.228 / 0.233 / 0.240 M params at ×2/×3/×4.

    ``safm_*`` / ``norm``: the ablation switches of SAFMN supplement Table 1 / Figures 1-2 (see :class:`SAFMN`).
    """
    return SAFMN(dim, n_blocks, ffn_scale, scale, safm_levels, safm_modulation, safm_multiscale, safm_aggregation, norm)


@register_arch(family="safmn")
def safmn_c48n12(
    scale: int = 4,
    dim: int = 48,
    n_blocks: int = 12,
    ffn_scale: float = 2.0,
    safm_levels: int = N_LEVELS,
    safm_modulation: bool = True,
    safm_multiscale: bool = True,
    safm_aggregation: bool = True,
    norm: NormName = "layernorm",
) -> SAFMN:
    """SAFMN with 48 channels and 12 blocks (no official checkpoint): 0.598 / 0.604 / 0.613 M params.

    ``safm_*`` / ``norm``: the ablation switches of SAFMN supplement Table 1 / Figures 1-2 (see :class:`SAFMN`).
    """
    return SAFMN(dim, n_blocks, ffn_scale, scale, safm_levels, safm_modulation, safm_multiscale, safm_aggregation, norm)


@register_arch(family="safmn")
def safmn_l(
    scale: int = 4,
    dim: int = 128,
    n_blocks: int = 16,
    ffn_scale: float = 2.0,
    safm_levels: int = N_LEVELS,
    safm_modulation: bool = True,
    safm_multiscale: bool = True,
    safm_aggregation: bool = True,
    norm: NormName = "layernorm",
) -> SAFMN:
    """SAFMN-L for classic SR (official ``train_L_DF2K_X*``): 5.559 / 5.577 / 5.601 M params.

    ``safm_*`` / ``norm``: the ablation switches of SAFMN supplement Table 1 / Figures 1-2 (see :class:`SAFMN`).
    """
    return SAFMN(dim, n_blocks, ffn_scale, scale, safm_levels, safm_modulation, safm_multiscale, safm_aggregation, norm)


# ------------------------------------------------------------------------------------------------ state-dict detector
_REQUIRED_KEYS = (
    "to_feat.weight",
    "feats.0.safm.mfr.0.weight",
    "feats.0.ccm.ccm.0.weight",
    "feats.0.ccm.ccm.2.weight",
    "to_img.0.weight",
)
_BLOCK_RE = re.compile(r"^feats\.(\d+)\.")
_LEVEL_RE = re.compile(r"^feats\.0\.safm\.mfr\.(\d+)\.weight$")


def _detect_switches(state_dict: Mapping[str, Tensor], dim: int) -> dict[str, Any]:
    """The ablation switches a state dict determines (see :func:`detect_safmn`)."""
    levels = sorted(int(m.group(1)) for k in state_dict if (m := _LEVEL_RE.match(k)))
    if levels != list(range(len(levels))):
        raise ValueError(f"SAFMN state dict has non-contiguous SAFM levels feats.0.safm.mfr.N: {levels}")
    n_levels = len(levels)
    chunk = int(state_dict["feats.0.safm.mfr.0.weight"].shape[0])
    if chunk * n_levels != dim:
        raise ValueError(
            f"SAFMN state dict: {n_levels} SAFM levels of {chunk} channels (feats.0.safm.mfr.N) do not split dim={dim}"
        )
    if "feats.0.norm1.running_mean" in state_dict:
        norm = "batchnorm"
    elif "feats.0.norm1.weight" in state_dict:
        norm = "layernorm"
    else:
        norm = "none"
    found = {"safm_levels": n_levels, "safm_aggregation": "feats.0.safm.aggr.weight" in state_dict, "norm": norm}
    return {k: v for k, v in found.items() if v != SWITCH_DEFAULTS[k]}


@register_detector("safmn")
def detect_safmn(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Recognise an official-layout SAFMN state dict and infer its hyper-parameters (spec §4).

    ``dim`` = rows of ``to_feat.weight``; ``n_blocks`` = number of ``feats.N``; ``ffn_scale`` = rows of
    ``feats.0.ccm.ccm.0.weight`` / dim; ``scale`` = sqrt(rows of ``to_img.0.weight`` / 3). Returns the registered
    variant whose defaults match (``safmn``, ``safmn_c48n12``, ``safmn_l``) with ``{'scale': s}``, else ``safmn``
    with explicit arguments.

    Ablation switches (SAFMN supplement Table 1 / Figures 1-2), added as explicit arguments only when they differ
    from the official network:

    * ``safm_levels`` (Table 1) = number of ``feats.0.safm.mfr.N``;
    * ``safm_aggregation`` (Table 1) = presence of ``feats.0.safm.aggr.weight``;
    * ``norm`` (Figures 1-2): ``feats.0.norm1.running_mean`` → ``batchnorm``; ``feats.0.norm1.weight`` without
      running statistics → ``layernorm``; no ``norm1`` keys → ``none``.

    What the keys cannot tell: ``safm_modulation`` and ``safm_multiscale`` change no parameter (weights trained with
    them off load as the official network); ``frozen_batchnorm`` has the same keys as ``batchnorm`` and ``l2`` has
    no parameters, like ``none``. Such checkpoints must be built with explicit arguments.
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
    switches = _detect_switches(state_dict, dim)
    inferred = {"dim": dim, "n_blocks": n_blocks, "ffn_scale": ffn_scale}
    for name in ("safmn", "safmn_c48n12", "safmn_l", *list_archs()):
        if arch_family(name) != "safmn":
            continue
        defaults = arch_defaults(name)
        if all(defaults.get(k) == v for k, v in inferred.items()):
            return name, {"scale": scale, **switches}
    return "safmn", {"scale": scale, **inferred, **switches}
