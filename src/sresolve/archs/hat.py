"""HAT: Hybrid Attention Transformer for image super-resolution.

Chen, Wang, Zhou, Qiao, Dong, "Activating More Pixels in Image Super-Resolution Transformer", CVPR 2023
(https://arxiv.org/abs/2205.04437). Written from the paper and the facts in
``/work/shared/specs/archs_hat_hma_safmn.md`` §1 (official repository XPixelGroup/HAT @1638a9a). Module names,
parameter names and the two persistent int64 index buffers (``relative_position_index_SA``,
``relative_position_index_OCA``) equal the official release, so the official ``HAT*_SRx*.pth`` files load with
``strict=True`` (864 keys for HAT / HAT-S ×4, 1710 for HAT-L ×4).

Structure (paper Fig. 3): shallow 3×3 conv → ``len(depths)`` residual hybrid attention groups (RHAG, §3.2), each made
of HABs (window self-attention in parallel with a channel-attention conv block, Eq. 3-4; shifted windows on odd
blocks), one overlapping cross-attention block (OCAB, §3.3) and a 3×3 conv with a residual → LayerNorm → 3×3 conv with
the long skip → pixel-shuffle reconstruction. Inputs are normalised with the DIV2K RGB mean and ``img_range``.

Differences from the official code (none changes the maths or the weights): any input size is accepted (reflect
padding to a multiple of the window inside :meth:`HAT.forward`, output cropped, like the official test wrapper);
attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` with the relative bias (+ shift mask)
as an additive float mask; the shift mask is built in the input dtype and cached per size (bf16/fp16 weights run);
``grad_checkpointing`` really checkpoints each RHAG; the construction-time "window larger than ``img_size``" rule of the
official blocks is not reproduced (with the official ``img_size=64`` it never triggers).

Registered variants (spec §1.1): ``hat_s`` (C=144, β=24, squeeze 24), ``hat`` (C=180, β=3, squeeze 30), ``hat_l``
(C=180, 12 RHAGs); all with 6 HABs/group, 6 heads, window 16, γ=0.5, α=0.01, mlp ratio 2. Their arguments (= the
config keys of ``conf/model/hat*.yaml``) use the paper's names ``alpha`` (α, CAB weight, §3.2 Eq. 3), ``beta`` (β, CAB
compression, §3.2) and ``gamma`` (γ, OCAB overlap ratio, §3.3), together with ``window_size``, ``use_cab`` and
``use_ocab``; :class:`HAT` itself keeps the official names ``conv_scale``, ``compress_ratio`` and ``overlap_ratio``.
``alpha=0, use_ocab=False`` is the SwinIR-like baseline of the paper's ablations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .layers import (
    DropPath,
    Mlp,
    ResidualTokenGroup,
    ShiftMaskCache,
    WindowAttention,
    WindowTransformerSR,
    calculate_rpi_sa,
    calculate_shift_mask,
    check_window_transformer_args,
    init_transformer_weights,
    relative_bias,
    shifted_window_attention,
    upsampler_scale,
    window_attention,
    window_partition,
    window_reverse,
    window_transformer_layout,
)
from .registry import arch_defaults, arch_family, list_archs, register_arch, register_detector

__all__ = [
    "CAB",
    "HAB",
    "HAT",
    "OCAB",
    "RHAG",
    "ChannelAttention",
    "WindowAttention",
    "calculate_rpi_oca",
    "calculate_rpi_sa",
    "calculate_shift_mask",
    "detect_hat",
    "hat",
    "hat_l",
    "hat_s",
    "window_attention",
]


# ------------------------------------------------------------------------------------------------ index / mask helpers
def calculate_rpi_oca(window_size: int, overlap_win_size: int) -> Tensor:
    """Relative-position index of overlapping cross-attention (spec §1.3), shape ``(M², Mo²)`` int64.

    Rows: query tokens of the M×M window; columns: key tokens of the Mo×Mo window (both row-major, not centred).
    ``index = (r_k - r_q + M - Mo + 1) · (M + Mo - 1) + (c_k - c_q + M - Mo + 1)`` — key minus query, as in the
    official release, so the index **contains negative entries**; they are wrapped modulo the table size at use time
    (Python-style indexing), the stored buffer stays equal to the checkpoints' one.
    """
    m, mo = window_size, overlap_win_size
    rq, cq = (t.flatten() for t in torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij"))
    rk, ck = (t.flatten() for t in torch.meshgrid(torch.arange(mo), torch.arange(mo), indexing="ij"))
    a = rk[None, :] - rq[:, None] + (m - mo + 1)
    b = ck[None, :] - cq[:, None] + (m - mo + 1)
    return a * (m + mo - 1) + b


# ------------------------------------------------------------------------------------------------ modules
class ChannelAttention(nn.Module):
    """Channel attention of RCAN (paper §3.2, CAB): global average pool, 1×1 conv ``C → C // squeeze``, ReLU,
    1×1 conv back, sigmoid; the input is rescaled channel-wise. Attribute ``attention`` keeps the official indices."""

    def __init__(self, dim: int, squeeze_factor: float) -> None:
        super().__init__()
        hidden = int(dim // squeeze_factor)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel Attention Block (paper §3.2, Fig. 3): conv3×3 ``C → C // β``, GELU, conv3×3 back, channel attention.

    ``β`` (compress_ratio) shrinks the conv branch to keep the HAB affordable.
    """

    def __init__(self, dim: int, compress_ratio: float, squeeze_factor: float) -> None:
        super().__init__()
        mid = int(dim // compress_ratio)
        self.cab = nn.Sequential(
            nn.Conv2d(dim, mid, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(mid, dim, 3, 1, 1),
            ChannelAttention(dim, squeeze_factor),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cab(x)


class HAB(nn.Module):
    """Hybrid Attention Block (paper §3.2, Eq. 3-4).

    ``X_N = LN(X)``, ``X_M = (S)W-MSA(X_N) + α·CAB(X_N) + X`` (Eq. 3), ``Y = MLP(LN(X_M)) + X_M`` (Eq. 4), with
    ``α = conv_scale`` and stochastic depth on the attention and MLP branches. ``shift_size > 0`` selects the shifted
    windows (odd blocks). ``use_cab=False`` drops the CAB branch (ablation, paper Tab. 2).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        compress_ratio: float,
        squeeze_factor: float,
        conv_scale: float,
        mlp_ratio: float,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        use_cab: bool = True,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor) if use_cab else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, x_size: tuple[int, int], rpi_sa: Tensor, attn_mask: Tensor | None) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        m, s = self.window_size, self.shift_size
        shortcut = x
        n = self.norm1(x).view(b, h, w, c)
        attn = shifted_window_attention(n, lambda win, mask: self.attn(win, rpi_sa, mask), m, s, attn_mask)
        x = shortcut + self.drop_path(attn.reshape(b, h * w, c))
        if self.conv_block is not None:
            conv = self.conv_block(n.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
            x = x + conv * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping Cross-Attention Block (paper §3.3, Fig. 5).

    Queries come from non-overlapping M×M windows, keys/values from overlapping ``Mo × Mo`` windows with
    ``Mo = M + int(γ·M)`` (the code's definition, HAT issue #15), extracted by ``nn.Unfold(Mo, stride M, padding
    (Mo - M)/2)`` from the projected K/V (border windows see zero tokens, unmasked). Relative bias ``M² × Mo²`` from
    ``table[rpi_OCA]``. Then ``x = proj(attn) + x``; ``x = MLP(LN(x)) + x`` (no drop path, no CAB).
    """

    def __init__(
        self,
        dim: int,
        window_size: int,
        overlap_ratio: float,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.overlap_win_size = window_size + int(window_size * overlap_ratio)
        mo = self.overlap_win_size
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.unfold = nn.Unfold(kernel_size=(mo, mo), stride=window_size, padding=(mo - window_size) // 2)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((window_size + mo - 1) ** 2, num_heads))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, x_size: tuple[int, int], rpi_oca: Tensor) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        m, mo, nh = self.window_size, self.overlap_win_size, self.num_heads
        d = c // nh
        shortcut = x
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3 * c)
        q = window_partition(qkv[..., :c], m)  # (b·nW, M², C)
        kv = qkv[..., c:].permute(0, 3, 1, 2)  # (b, 2C, h, w): k channels then v channels
        kv = self.unfold(kv)  # (b, 2C·Mo², nW), channel-major
        nw = kv.shape[-1]
        # channels last and dense: the fused attention kernels need a unit stride on the head dim (else: math path)
        kv = kv.view(b, 2, c, mo * mo, nw).permute(1, 0, 4, 3, 2).contiguous().view(2, b * nw, mo * mo, c)
        k, v = kv.unbind(0)
        q = q.view(-1, m * m, nh, d).transpose(1, 2)
        k = k.reshape(-1, mo * mo, nh, d).transpose(1, 2)
        v = v.reshape(-1, mo * mo, nh, d).transpose(1, 2)
        bias = relative_bias(self.relative_position_bias_table, rpi_oca, m * m, mo * mo)
        out = window_attention(q, k, v, bias).transpose(1, 2).reshape(-1, m * m, c)
        x = self.proj(window_reverse(out, m, h, w).reshape(b, h * w, c)) + shortcut
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    """The body of an RHAG: ``depth`` HABs (shift 0 on even, M/2 on odd blocks) followed by one OCAB."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        compress_ratio: float,
        squeeze_factor: float,
        conv_scale: float,
        overlap_ratio: float,
        mlp_ratio: float,
        drop_path: Sequence[float],
        qkv_bias: bool,
        use_cab: bool,
        use_ocab: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            HAB(
                dim,
                num_heads,
                window_size,
                0 if j % 2 == 0 else window_size // 2,
                compress_ratio,
                squeeze_factor,
                conv_scale,
                mlp_ratio,
                drop_path[j],
                qkv_bias,
                use_cab,
            )
            for j in range(depth)
        )
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, mlp_ratio, qkv_bias) if use_ocab else None

    def forward(self, x: Tensor, x_size: tuple[int, int], params: Mapping[str, Tensor | None]) -> Tensor:
        for blk in self.blocks:
            x = blk(x, x_size, params["rpi_sa"], params["attn_mask"])
        if self.overlap_attn is not None:
            x = self.overlap_attn(x, x_size, params["rpi_oca"])  # type: ignore[arg-type]
        return x


class RHAG(ResidualTokenGroup):
    """Residual Hybrid Attention Group (paper §3.2, Fig. 3): ``x + conv3×3(HABs → OCAB)(x)`` on the token map.

    ``resi_connection='identity'`` drops the conv (no ``conv`` keys).
    """

    def __init__(self, dim: int, resi_connection: str, **blocks_kwargs: Any) -> None:
        super().__init__(AttenBlocks(dim, **blocks_kwargs), dim, resi_connection)


class HAT(WindowTransformerSR):
    """Hybrid Attention Transformer (Chen et al., CVPR 2023), classical SR with pixel-shuffle reconstruction.

    Args:
        scale: upscale factor (1, 3 or a power of 2).
        embed_dim: feature channels C.
        depths: number of HABs in each RHAG.
        num_heads: attention heads in each RHAG (C must be divisible by each).
        window_size: attention window M (the input is padded to a multiple of it; also ``tile_align``).
        compress_ratio: CAB compression β (conv branch width ``C // β``, §3.2); ``beta`` in the registered entry
            functions and configs.
        squeeze_factor: channel-attention squeeze factor (``C // squeeze``).
        conv_scale: α, weight of the CAB branch in the HAB (§3.2 Eq. 3); ``alpha`` in the registered entry functions
            and configs; 0 turns the CAB off numerically (its weights remain).
        overlap_ratio: γ, OCAB key window ``Mo = M + int(γ·M)`` (§3.3); ``int(γ·M)`` must be even; ``gamma`` in the
            registered entry functions and configs.
        mlp_ratio: MLP expansion.
        drop_path_rate: maximum stochastic-depth rate (linear over all HABs).
        use_cab: keep the CAB branch of the HABs (``False`` removes it and its keys).
        use_ocab: keep the OCAB of each RHAG (``False`` removes it, its keys and ``relative_position_index_OCA``).
        grad_checkpointing: checkpoint each RHAG while training (less memory, one extra forward).
        img_range: pixel range multiplier of the normalisation.
        num_feat: channels of the reconstruction head (64 in the official code).
        resi_connection: ``'1conv'`` (official) or ``'identity'``.
        qkv_bias: bias of the q/k/v projections.

    Input ``(B, 3, H, W)`` RGB in [0, 1], any ``H, W >= 1``; output ``(B, 3, H·s, W·s)``, not clamped.
    """

    def __init__(
        self,
        scale: int = 4,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 16,
        compress_ratio: float = 3,
        squeeze_factor: float = 30,
        conv_scale: float = 0.01,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        use_cab: bool = True,
        use_ocab: bool = True,
        grad_checkpointing: bool = False,
        img_range: float = 1.0,
        num_feat: int = 64,
        resi_connection: str = "1conv",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        depths, num_heads = check_window_transformer_args(
            "HAT",
            scale=scale,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            num_feat=num_feat,
            resi_connection=resi_connection,
            img_range=img_range,
        )
        if not overlap_ratio >= 0:
            raise ValueError(f"HAT: overlap_ratio must be >= 0, got {overlap_ratio!r}")
        overlap = int(window_size * overlap_ratio)
        if use_ocab and overlap % 2:
            # nn.Unfold(Mo, stride M, padding floor((Mo-M)/2)) on a side n·M yields n windows iff Mo - M is even
            raise ValueError(
                f"HAT: window_size={window_size} and overlap_ratio={overlap_ratio} give an OCAB overlap "
                f"int(window_size * overlap_ratio) = {overlap}, which must be even so that the unfolded key/value "
                f"windows match the query windows (e.g. window_size divisible by 4 for overlap_ratio 0.5)"
            )
        if use_cab:
            if not compress_ratio > 0 or int(embed_dim // compress_ratio) < 1:
                raise ValueError(
                    f"HAT: compress_ratio={compress_ratio!r} must be > 0 with embed_dim // compress_ratio >= 1 "
                    f"(embed_dim={embed_dim})"
                )
            if not squeeze_factor > 0 or int(embed_dim // squeeze_factor) < 1:
                raise ValueError(
                    f"HAT: squeeze_factor={squeeze_factor!r} must be > 0 with embed_dim // squeeze_factor >= 1 "
                    f"(embed_dim={embed_dim})"
                )

        self._init_head(
            scale=scale,
            embed_dim=embed_dim,
            window_size=window_size,
            img_range=img_range,
            grad_checkpointing=grad_checkpointing,
        )
        self.depths = list(depths)
        self.num_heads = list(num_heads)
        self.shift_size = window_size // 2
        self.overlap_ratio = overlap_ratio
        self.conv_scale = float(conv_scale)
        self.compress_ratio = compress_ratio
        self.use_cab = bool(use_cab)
        self.use_ocab = bool(use_ocab)
        self.shift_mask = ShiftMaskCache(window_size, self.shift_size)
        self.register_buffer("relative_position_index_SA", calculate_rpi_sa(window_size))
        if self.use_ocab:
            self.register_buffer("relative_position_index_OCA", calculate_rpi_oca(window_size, window_size + overlap))
        else:
            self.relative_position_index_OCA = None
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            start = sum(depths[:i])
            self.layers.append(
                RHAG(
                    embed_dim,
                    resi_connection,
                    depth=depth,
                    num_heads=heads,
                    window_size=window_size,
                    compress_ratio=compress_ratio,
                    squeeze_factor=squeeze_factor,
                    conv_scale=conv_scale,
                    overlap_ratio=overlap_ratio,
                    mlp_ratio=mlp_ratio,
                    drop_path=dpr[start : start + depth],
                    qkv_bias=qkv_bias,
                    use_cab=use_cab,
                    use_ocab=use_ocab,
                )
            )
        self._init_tail(scale=scale, embed_dim=embed_dim, num_feat=num_feat, resi_connection=resi_connection)
        self.apply(init_transformer_weights)

    def block_params(self, height: int, width: int, ref: Tensor) -> dict[str, Tensor | None]:
        return {
            "attn_mask": self.shift_mask(height, width, ref.dtype, ref.device),
            "rpi_sa": self.relative_position_index_SA,
            "rpi_oca": self.relative_position_index_OCA,
        }

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, embed_dim={self.embed_dim}, depths={self.depths}, num_heads={self.num_heads}, "
            f"window_size={self.window_size}, conv_scale={self.conv_scale}, compress_ratio={self.compress_ratio}, "
            f"overlap_ratio={self.overlap_ratio}, use_cab={self.use_cab}, "
            f"use_ocab={self.use_ocab}"
        )


# ------------------------------------------------------------------------------------------------ registered variants
# The registered entry functions take the paper's names (the config keys of ``conf/model/hat*.yaml``):
#   alpha  (α) = HAT.conv_scale      weight of the CAB branch in the HAB, paper §3.2 Eq. 3 (0.01)
#   beta   (β) = HAT.compress_ratio  CAB channel compression C → C/β, paper §3.2 (3; 24 for HAT-S)
#   gamma  (γ) = HAT.overlap_ratio   OCAB overlap, key window Mo = M + int(γ·M), paper §3.3 (0.5)
# ``alpha=0, use_ocab=False`` is the SwinIR-like baseline of the paper's ablation of OCAB and CAB.


def _build(
    name: str,
    *,
    alpha: float,
    beta: float,
    gamma: float,
    window_size: int,
    embed_dim: int,
    use_cab: bool,
    use_ocab: bool,
    **kwargs: Any,
) -> HAT:
    """Validate the paper-named hyper-parameters (errors name the config keys) and build :class:`HAT`."""
    if not math.isfinite(alpha):
        raise ValueError(f"{name}: alpha (CAB weight α) must be a finite number, got {alpha!r}")
    if use_ocab:
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"{name}: gamma (OCAB overlap ratio γ) must be a finite number >= 0, got {gamma!r}")
        if isinstance(window_size, int) and window_size >= 1 and int(window_size * gamma) % 2:
            raise ValueError(
                f"{name}: window_size={window_size} and gamma={gamma} give an OCAB overlap int(window_size * gamma) "
                f"= {int(window_size * gamma)}, which must be even (the overlapping key/value windows must align with "
                f"the query windows): e.g. window_size divisible by 4 for gamma 0.5, or use_ocab=false"
            )
    if use_cab and isinstance(embed_dim, int) and not (beta > 0 and int(embed_dim // beta) >= 1):
        raise ValueError(
            f"{name}: beta (CAB compression β) must be > 0 with embed_dim // beta >= 1, got beta={beta!r} "
            f"(embed_dim={embed_dim})"
        )
    return HAT(
        conv_scale=alpha,
        compress_ratio=beta,
        overlap_ratio=gamma,
        window_size=window_size,
        embed_dim=embed_dim,
        use_cab=use_cab,
        use_ocab=use_ocab,
        **kwargs,
    )


@register_arch(family="hat")
def hat_s(
    scale: int = 4,
    embed_dim: int = 144,
    depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
    num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
    window_size: int = 16,
    alpha: float = 0.01,
    beta: float = 24,
    gamma: float = 0.5,
    squeeze_factor: float = 24,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    use_cab: bool = True,
    use_ocab: bool = True,
    grad_checkpointing: bool = False,
    img_range: float = 1.0,
) -> HAT:
    """HAT-S (official ``HAT-S_SRx*``): 9.473 / 9.658 / 9.621 M params at ×2/×3/×4.

    α (``alpha``, CAB weight, Eq. 3), β (``beta``, CAB compression, §3.2) and γ (``gamma``, OCAB overlap, §3.3)
    map to :class:`HAT`'s ``conv_scale``, ``compress_ratio`` and ``overlap_ratio``; the others are passed as is.
    """
    return _build("hat_s", **locals())


@register_arch(family="hat")
def hat(
    scale: int = 4,
    embed_dim: int = 180,
    depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
    num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
    window_size: int = 16,
    alpha: float = 0.01,
    beta: float = 3,
    gamma: float = 0.5,
    squeeze_factor: float = 30,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    use_cab: bool = True,
    use_ocab: bool = True,
    grad_checkpointing: bool = False,
    img_range: float = 1.0,
) -> HAT:
    """HAT (official ``HAT_SRx*``): 20.625 / 20.809 / 20.773 M params at ×2/×3/×4.

    α (``alpha``, CAB weight, Eq. 3), β (``beta``, CAB compression, §3.2) and γ (``gamma``, OCAB overlap, §3.3)
    map to :class:`HAT`'s ``conv_scale``, ``compress_ratio`` and ``overlap_ratio``; the others are passed as is.
    """
    return _build("hat", **locals())


@register_arch(family="hat")
def hat_l(
    scale: int = 4,
    embed_dim: int = 180,
    depths: Sequence[int] = (6,) * 12,
    num_heads: Sequence[int] = (6,) * 12,
    window_size: int = 16,
    alpha: float = 0.01,
    beta: float = 3,
    gamma: float = 0.5,
    squeeze_factor: float = 30,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    use_cab: bool = True,
    use_ocab: bool = True,
    grad_checkpointing: bool = False,
    img_range: float = 1.0,
) -> HAT:
    """HAT-L (official ``HAT-L_SRx*_ImageNet-pretrain``): 40.699 / 40.884 / 40.847 M params at ×2/×3/×4.

    α (``alpha``, CAB weight, Eq. 3), β (``beta``, CAB compression, §3.2) and γ (``gamma``, OCAB overlap, §3.3)
    map to :class:`HAT`'s ``conv_scale``, ``compress_ratio`` and ``overlap_ratio``; the others are passed as is.
    """
    return _build("hat_l", **locals())


# ------------------------------------------------------------------------------------------------ state-dict detector
_NICE_RATIOS = (0.5, 0.25, 0.75, 1.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.5, 2.0)


def _ratio_for(channels: int, dim: int, what: str) -> float:
    """A divisor ``r`` with ``int(dim // r) == channels`` (the ratio is many-to-one; prefer an integer)."""
    if channels < 1:
        raise ValueError(f"HAT state dict: {what} has {channels} channels")
    r = dim // channels
    if r >= 1 and dim // r == channels:
        return int(r)
    for cand in range(1, dim + 1):
        if dim // cand == channels:
            return cand
    r_f = dim / channels
    if int(dim // r_f) == channels:
        return r_f
    raise ValueError(f"HAT state dict: no ratio r gives embed_dim // r == {channels} for {what} (embed_dim={dim})")


@register_detector("hat", priority=10)
def detect_hat(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Recognise an official-layout HAT state dict and infer its hyper-parameters (spec §4).

    Keys ``relative_position_index_SA``, ``conv_first.weight``, ``layers.0.residual_group.blocks.0.attn.qkv.weight``,
    ``conv_before_upsample.0.weight`` and ``conv_last.weight`` identify the family. C = rows of ``conv_first``; M =
    √rows of the SA index; Mo = √cols of the OCA index → γ (a "nice" ratio with ``int(γM) = Mo - M``); groups and
    blocks by counting ``layers.N`` / ``blocks.N``; heads from the bias tables; β and the squeeze factor from the CAB
    conv widths (many-to-one: an integer ratio is returned); mlp ratio = fc1 rows / C; scale = product over the
    ``upsample.N`` convs of √(rows / num_feat); ``use_cab`` / ``use_ocab`` from the presence of ``conv_block`` /
    ``overlap_attn`` keys. Returns the registered variant whose structure matches, with ``{'scale': s}``, else
    ``hat`` with explicit arguments, named like the registered entry functions (``beta``, ``gamma``, not the
    :class:`HAT` names). Not recoverable: α (``alpha``, 0.01), img_range (1.0), drop path.
    """
    required = (
        "relative_position_index_SA",
        "conv_first.weight",
        "layers.0.residual_group.blocks.0.attn.qkv.weight",
        "layers.0.residual_group.blocks.0.attn.relative_position_bias_table",
        "conv_before_upsample.0.weight",
        "conv_last.weight",
    )
    if not all(k in state_dict for k in required):
        return None
    # HMA shares part of this layout; its groups carry grid attention (spec §4) and are not HAT.
    if any(".gab." in k for k in state_dict):
        return None
    dim, m, layer_ids = window_transformer_layout(state_dict, "HAT")
    depths: list[int] = []
    num_heads: list[int] = []
    for i in layer_ids:
        pre = f"layers.{i}.residual_group.blocks."
        ids = sorted({int(k[len(pre) :].split(".", 1)[0]) for k in state_dict if k.startswith(pre)})
        if ids != list(range(len(ids))) or not ids:
            raise ValueError(f"HAT state dict: group layers.{i} has non-contiguous block indices {ids}")
        depths.append(len(ids))
        num_heads.append(int(state_dict[f"{pre}0.attn.relative_position_bias_table"].shape[1]))
    use_cab = "layers.0.residual_group.blocks.0.conv_block.cab.0.weight" in state_dict
    use_ocab = "relative_position_index_OCA" in state_dict
    kwargs: dict[str, Any] = {
        "embed_dim": dim,
        "depths": depths,
        "num_heads": num_heads,
        "window_size": m,
        "use_cab": use_cab,
        "use_ocab": use_ocab,
    }
    fc1 = int(state_dict["layers.0.residual_group.blocks.0.mlp.fc1.weight"].shape[0])
    kwargs["mlp_ratio"] = fc1 / dim if int(dim * (fc1 / dim)) == fc1 else math.nextafter(fc1 / dim, math.inf)
    if use_ocab:
        mo = math.isqrt(int(state_dict["relative_position_index_OCA"].shape[1]))
        ratios = [r for r in _NICE_RATIOS if int(m * r) == mo - m] or [(mo - m) / m]
        kwargs["gamma"] = ratios[0]
    if use_cab:
        blk = "layers.0.residual_group.blocks.0.conv_block.cab."
        kwargs["beta"] = _ratio_for(int(state_dict[blk + "0.weight"].shape[0]), dim, "cab.0")
        kwargs["squeeze_factor"] = _ratio_for(int(state_dict[blk + "3.attention.1.weight"].shape[0]), dim, "cab.3")
    num_feat = int(state_dict["conv_last.weight"].shape[1])
    scale = upsampler_scale(state_dict, num_feat, "HAT")
    extra: dict[str, Any] = {"scale": scale}
    if num_feat != 64 or "conv_after_body.weight" not in state_dict:
        raise ValueError(
            "HAT state dict: only num_feat=64 and resi_connection='1conv' checkpoints can be rebuilt automatically "
            f"(conv_last has {num_feat} input channels; conv_after_body.weight present: "
            f"{'conv_after_body.weight' in state_dict})"
        )

    def _same(name: str) -> bool:
        d = arch_defaults(name)
        if (d["embed_dim"], list(d["depths"]), list(d["num_heads"]), d["window_size"]) != (
            dim,
            depths,
            num_heads,
            m,
        ):
            return False
        if (d["use_cab"], d["use_ocab"]) != (use_cab, use_ocab) or int(dim * d["mlp_ratio"]) != fc1:
            return False
        if use_ocab and int(m * d["gamma"]) != int(m * kwargs["gamma"]):
            return False
        if use_cab:
            for key in ("beta", "squeeze_factor"):
                if int(dim // d[key]) != int(dim // kwargs[key]):
                    return False
        return True

    for name in ("hat", "hat_s", "hat_l", *list_archs()):
        if arch_family(name) == "hat" and _same(name):
            return name, extra
    return "hat", {**extra, **kwargs}
