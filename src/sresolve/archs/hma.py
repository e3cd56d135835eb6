"""HMA (HMANet): Hybrid Multi-Axis Aggregation Network for image super-resolution.

Chu, Zhang, Chen, Hou, "HMANet: Hybrid Multi-Axis Aggregation Network for Image Super-Resolution", CVPR Workshops
2024 (https://arxiv.org/abs/2405.05001). Written from the paper and the facts in
``/work/shared/specs/archs_hat_hma_safmn.md`` §2 (official release ``HMA_SRx{2,3,4}_pretrain.pth``). Module names,
parameter names and the ``relative_position_index_SA`` buffer equal the release, so its files load with
``strict=True`` (1007 keys at ×4, 1005 at ×2/×3).

Structure (paper Fig. 2): the SwinIR-lineage shell shared with HAT (:class:`~sresolve.archs.layers.WindowTransformerSR`)
around residual groups (RHTB) whose body alternates

* :class:`FusedConv` — the convolution half of the paper's Fused Attention Block: LN → 3×3 conv C→6C → LN → GELU →
  squeeze-excitation → 1×1 conv 6C→C, residual;
* :class:`FAB` — the attention half: a pre-norm (shifted-)window self-attention block whose ``qkv`` projection lives
  in the block;

in the order ``[FusedConv, FAB(shift 0)]`` for even and ``FAB(shift M/2)`` for odd depth indices, and is closed by the
Grid Attention Block (:class:`GAB`, §3.3) scaled by a learnable per-channel factor: ``x + scale ⊙ GAB(x)``.

Differences from the official code (none changes the maths or the weights): any input size is accepted (padding to a
multiple of the window with the official test path's edge-repeating *symmetric* mode, extended periodically when the
padding exceeds the side, output cropped); window and grid attention run through
:func:`torch.nn.functional.scaled_dot_product_attention`; the global grid attention is computed in chunks of its
independent groups under a memory budget (``grid_chunk_mb``); the shift mask, the dynamic position bias and its
offset table are built in the input dtype (bf16/fp16 weights run; the official code crashes); ``grad_checkpointing``
checkpoints each residual group while training.

Ablations (HMA supplement Table 2): ``use_fab=False`` removes the FusedConv modules, so the groups are plain
(shifted-)window transformer blocks + GAB ("GAB only"); ``use_gab=False`` removes the GAB and its ``scale``
("FAB only"); both off is the SwinIR-like window-attention baseline.
"""

from __future__ import annotations

import math
import re
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
    "FAB",
    "GAB",
    "HMA",
    "RHTB",
    "AttenBlocks",
    "DynamicPosBias",
    "FusedConv",
    "GridAttention",
    "GridAttentionStep",
    "SqueezeExcite",
    "detect_hma",
    "grid_shuffle",
    "grid_unshuffle",
    "hma",
    "relative_index_rows",
    "relative_offsets",
]

#: FusedConv widths hard-coded in the release (spec §2.1): expansion 6C, squeeze-excitation to 6C / 2.
FUSED_EXPAND = 6
FUSED_SE_RATIO = 2


# ------------------------------------------------------------------------------------------------ grid shuffle
def grid_shuffle(x: Tensor, interval: int) -> Tensor:
    """``(B, h, w, C)`` → ``(B·I², (h/I)·(w/I), C)``: group ``(i, j)`` collects the pixels with ``row % I == i`` and
    ``col % I == j`` (groups ordered batch, row phase, column phase; tokens row-major on the sub-grid), so each group
    spans the whole image at stride ``I`` (HMA §3.3, grid attention)."""
    b, h, w, c = x.shape
    i = interval
    return x.reshape(b, h // i, i, w // i, i, c).permute(0, 2, 4, 1, 3, 5).reshape(b * i * i, (h // i) * (w // i), c)


def grid_unshuffle(x: Tensor, batch: int, height: int, width: int, interval: int) -> Tensor:
    """Inverse of :func:`grid_shuffle`: ``(B·I², (h/I)·(w/I), C)`` → tokens ``(B, h·w, C)``."""
    i = interval
    y = x.reshape(batch, i, i, height // i, width // i, -1).permute(0, 3, 1, 4, 2, 5)
    return y.reshape(batch, height * width, -1)


# ------------------------------------------------------------------------------------------------ FusedConv
class SqueezeExcite(nn.Module):
    """Squeeze-excitation (Hu et al. 2018): ``x · sigmoid(fc2(SiLU(fc1(mean_hw(x)))))`` with 1×1 convs."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class FusedConv(nn.Module):
    """The convolution half of the Fused Attention Block (HMA §3.2, spec §2.3).

    ``y = conv1×1(SE(GELU(LN_6C(conv3×3(LN_C(x))))))``, output ``x + y``; the LayerNorms act on channels
    (channels-last), the 3×3 conv expands C → 6C, SE squeezes 6C → 3C.
    """

    def __init__(self, dim: int, expand: int = FUSED_EXPAND, se_ratio: int = FUSED_SE_RATIO) -> None:
        super().__init__()
        mid = dim * expand
        self.pre_norm = nn.LayerNorm(dim)
        self.fused_conv = nn.Conv2d(dim, mid, 3, 1, 1)
        self.norm1 = nn.LayerNorm(mid)
        self.act = nn.GELU()
        self.se = SqueezeExcite(mid, int(mid / se_ratio))
        self.conv3_1x1 = nn.Conv2d(mid, dim, 1)

    def forward(self, x: Tensor, x_size: tuple[int, int], rpi: Tensor, mask: Tensor | None) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        y = self.pre_norm(x).reshape(b, h, w, c).permute(0, 3, 1, 2)
        y = self.norm1(self.fused_conv(y).permute(0, 2, 3, 1))
        y = self.se(self.act(y).permute(0, 3, 1, 2))
        return self.conv3_1x1(y).flatten(2).transpose(1, 2) + x


# ------------------------------------------------------------------------------------------------ FAB
class FAB(nn.Module):
    """The attention half of the Fused Attention Block (spec §2.3): a pre-norm Swin block.

    ``x = x + DropPath((S)W-MSA(LN(x)))``, ``x = x + DropPath(MLP(LN(x)))``; the window attention gets the block's own
    ``qkv`` projection (keys ``blocks.j.qkv.*``, unlike HAT's ``attn.qkv``); ``shift_size = M/2`` on odd depth indices.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn = WindowAttention(dim, window_size, num_heads, own_qkv=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, x_size: tuple[int, int], rpi: Tensor, mask: Tensor | None) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        n = self.norm1(x).reshape(b, h, w, c)
        attn = shifted_window_attention(
            n, lambda win, m: self.attn(self.qkv(win), rpi, m), self.window_size, self.shift_size, mask
        )
        x = x + self.drop_path(attn.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ------------------------------------------------------------------------------------------------ GAB
class DynamicPosBias(nn.Module):
    """Dynamic position bias (CrossFormer-style MLP, HMA §3.3): relative offsets ``(Δr, Δc)`` → one bias per head.

    ``pos3(pos2(pos1(pos_proj(offset))))`` with ``pos_k = [LayerNorm, ReLU, Linear]``; width ``p = dim // 4``.
    The input is the raw integer offset pair (not normalised), as in the release.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        p = dim // 4
        self.pos_dim = p
        self.pos_proj = nn.Linear(2, p)
        self.pos1 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(inplace=True), nn.Linear(p, p))
        self.pos2 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(inplace=True), nn.Linear(p, p))
        self.pos3 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(inplace=True), nn.Linear(p, num_heads))

    def forward(self, offsets: Tensor) -> Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


def relative_offsets(height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """All relative offsets of a ``height × width`` grid, ``((2h-1)(2w-1), 2)`` as ``(Δr, Δc)`` rows, Δr major
    (meshgrid ``'ij'``): row ``k`` matches index ``k`` of :func:`~sresolve.archs.layers.relative_position_index`."""
    dr, dc = torch.meshgrid(
        torch.arange(1 - height, height, device=device),
        torch.arange(1 - width, width, device=device),
        indexing="ij",
    )
    return torch.stack([dr.flatten(), dc.flatten()], dim=1).to(dtype)


def relative_index_rows(height: int, width: int, start: int, stop: int, device: torch.device) -> Tensor:
    """Rows ``start:stop`` of :func:`~sresolve.archs.layers.relative_position_index` of a ``height × width`` grid,
    ``(stop - start, h·w)`` int64, computed directly (no ``(hw)²`` tensor is built for a block of rows)."""
    p = torch.arange(start, stop, device=device)[:, None]
    q = torch.arange(height * width, device=device)[None, :]
    return (p // width - q // width + height - 1) * (2 * width - 1) + (p % width - q % width + width - 1)


class GridAttentionStep(nn.Module):
    """One of the two attention steps of grid attention, ``softmax(q·kᵀ/√d + B)·v``, with its own
    :class:`DynamicPosBias` ``pos`` (the release calls this module an affine transform)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.pos = DynamicPosBias(dim // 4, num_heads)

    def bias_table(self, gh: int, gw: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``((2gh-1)(2gw-1), heads)``: the bias of every relative offset of a ``gh × gw`` sub-grid, in ``dtype``."""
        return self.pos(relative_offsets(gh, gw, dtype, device))

    def bias(self, table: Tensor, index: Tensor) -> Tensor:
        """``(heads, r, n)`` bias of the query rows whose ``(r, n)`` relative-position index is ``index``."""
        return relative_bias(table, index, *index.shape)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """``q`` ``(G, heads, r, d)`` (a block of ``r`` query rows), ``k``/``v`` ``(G, heads, n, d)``, ``bias``
        ``(heads, r, n)`` → ``(G, heads, r, d)``."""
        return window_attention(q, k, v, bias)


class GridAttention(nn.Module):
    """Grid attention (HMA §3.3, spec §2.3 step 2): two-step attention through the grid tokens ``g``.

    Per group and head: ``t = softmax(g·kᵀ/√d + B₁)·v`` (the grid attends to the keys), then
    ``out = softmax(q·gᵀ/√d + B₂)·t`` (the queries attend to the grid). A group holds all ``n = (h/I)(w/I)`` tokens
    of one phase of the whole image, so the scores are ``n × n``: quadratic in the image area. Bounded memory: the
    ``B·I²`` groups are independent and each query row of a step is independent, so the work is cut into blocks of
    groups, or of query rows of one group, whose scores (and bias) stay under ``chunk_mb`` MiB; the bias of a block is
    gathered from the small per-offset table, never materialised for the whole ``n × n``. ``chunk_mb = 0`` computes
    every group at once (the direct computation).
    """

    def __init__(self, dim: int, num_heads: int, chunk_mb: float = 512.0) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.chunk_mb = float(chunk_mb)
        self.attn_transform1 = GridAttentionStep(dim, num_heads)
        self.attn_transform2 = GridAttentionStep(dim, num_heads)

    def plan(self, groups: int, n: int, dtype: torch.dtype) -> tuple[int, int]:
        """``(groups per block, query rows per block)`` so that one block's scores fit ``chunk_mb``."""
        if self.chunk_mb <= 0:
            return groups, n
        per_row = self.num_heads * n * (torch.finfo(dtype).bits // 8)
        rows = int(self.chunk_mb * 2**20 // per_row)
        if rows >= n:
            return max(1, min(groups, rows // n)), n
        return 1, max(1, rows)

    def forward(self, qkv: Tensor, grid: Tensor, gh: int, gw: int) -> Tensor:
        """``qkv`` ``(G, n, 3·dim)`` = ``[q | k | v]`` and grid tokens ``grid`` ``(G, n, dim)`` of a ``gh × gw``
        sub-grid → ``(G, n, dim)``."""
        groups, n, c = grid.shape
        heads, d = self.num_heads, c // self.num_heads
        step1, step2 = self.attn_transform1, self.attn_transform2
        table1 = step1.bias_table(gh, gw, grid.dtype, grid.device)
        table2 = step2.bias_table(gh, gw, grid.dtype, grid.device)
        q, k, v = qkv.reshape(groups, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # (G, heads, n, d) views
        g = grid.reshape(groups, n, heads, d).transpose(1, 2)
        step, rows = self.plan(groups, n, grid.dtype)
        chunks = [slice(s, s + step) for s in range(0, groups, step)]
        blocks = [slice(r, min(r + rows, n)) for r in range(0, n, rows)]

        # row blocks outside, group chunks inside: a block's bias is gathered once and shared by every group; with
        # one block (the usual case) that is one bias per step for the whole image
        def index(blk: slice) -> Tensor:
            return relative_index_rows(gh, gw, blk.start, blk.stop, grid.device)

        t_blocks = []
        for blk in blocks:
            b1 = step1.bias(table1, index(blk))
            t_blocks.append(_cat([step1(g[ch, :, blk], k[ch], v[ch], b1) for ch in chunks], 0))
        t = _cat(t_blocks, 2)  # (G, heads, n, d): the grid tokens after attending to the keys
        out_blocks = []
        for blk in blocks:
            b2 = step2.bias(table2, index(blk))
            out_blocks.append(_cat([step2(q[ch, :, blk], g[ch], t[ch], b2) for ch in chunks], 0))
        out = _cat(out_blocks, 2)
        return out.transpose(1, 2).reshape(groups, n, c)


def _cat(parts: list[Tensor], dim: int) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


class GAB(nn.Module):
    """Grid Attention Block (HMA §3.3, spec §2.3): three branches on one ``qkv`` projection, post-norm.

    ``qkv(x)`` (no norm first) is split in ``x_window`` (first 3C/2 channels) and ``x_grid_qkv`` (last 3C/2):

    * grid branch: :class:`GridAttention` over :func:`grid_shuffle`\\ d ``x_grid_qkv`` with grid tokens
      ``grid_proj(shuffle(x))`` (C/2 channels, H/2 heads);
    * window branch A: window attention on the first half of ``x_window`` (C/4 channels out, H/2 heads);
    * window branch S: the release's "shifted" branch on the second half, reproduced literally (see
      :meth:`shifted_strip_attention`);

    ``y = norm1(fc([A | S | grid]))``, ``x = x + y``, ``x = x + norm2(mlp(x))``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        interval: int,
        mlp_ratio: float,
        qkv_bias: bool = True,
        grid_chunk_mb: float = 512.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.interval = interval
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.grid_proj = nn.Linear(dim, dim // 2)
        self.grid_attn = GridAttention(dim // 2, num_heads // 2, grid_chunk_mb)
        self.window_attn = WindowAttention(dim // 4, window_size, num_heads // 2, own_qkv=False)
        self.window_attn_s = WindowAttention(dim // 4, window_size, num_heads // 2, own_qkv=False)
        self.fc = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def shifted_strip_attention(self, x: Tensor, rpi: Tensor, mask: Tensor | None) -> Tensor:
        """The release's shifted window branch on ``x`` ``(B, h, w, 3c)`` → ``(B, h·w, c)``.

        Kept exactly as released because the trained weights depend on it (spec §2.3 step 3, §2.7.1): the map is
        rolled by ``(-M/2, -M/2)`` and then *reshaped* to ``(-1, M², 3c)`` without a window partition, so each
        "window" is a run of M² consecutive raster-order pixels; attention uses the Swin shift mask and the M×M
        relative bias as if these strips were windows; the result is window-reversed as if it were M×M windows,
        flattened to tokens, and rolled by ``(+M/2, +M/2)`` over the **token and channel** dims of the 3-D tensor. A
        textbook shifted window would give different outputs from the released checkpoints.
        """
        b, h, w, _ = x.shape
        m, s = self.window_size, self.shift_size
        strips = torch.roll(x, shifts=(-s, -s), dims=(1, 2)).reshape(-1, m * m, x.shape[-1])
        y = self.window_attn_s(strips, rpi, mask)
        y = window_reverse(y, m, h, w).reshape(b, h * w, -1)
        return torch.roll(y, shifts=(s, s), dims=(1, 2))

    def forward(self, x: Tensor, x_size: tuple[int, int], rpi: Tensor, mask: Tensor | None) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        i, m = self.interval, self.window_size
        shortcut = x
        x_window, x_grid_qkv = self.qkv(x).split(3 * c // 2, dim=-1)
        grid = self.grid_proj(grid_shuffle(x.reshape(b, h, w, c), i))
        grid_qkv = grid_shuffle(x_grid_qkv.reshape(b, h, w, 3 * c // 2), i)
        g = grid_unshuffle(self.grid_attn(grid_qkv, grid, h // i, w // i), b, h, w, i)
        x_a, x_s = x_window.reshape(b, h, w, 3 * c // 2).split(3 * c // 4, dim=-1)
        a = window_reverse(self.window_attn(window_partition(x_a, m), rpi), m, h, w).reshape(b, h * w, c // 4)
        s = self.shifted_strip_attention(x_s, rpi, mask)
        x = shortcut + self.norm1(self.fc(torch.cat([a, s, g], dim=-1)))
        return x + self.norm2(self.mlp(x))


# ------------------------------------------------------------------------------------------------ residual group
class AttenBlocks(nn.Module):
    """The body of an RHTB (spec §2.2): for each depth index k, ``[FusedConv, FAB(shift 0)]`` if k is even else
    ``FAB(shift M/2)`` (FAB k gets drop-path rate ``drop_path[k]``), then ``x = x + scale ⊙ GAB(x)``.

    ``use_fab=False`` leaves out the FusedConvs, ``use_gab=False`` the GAB and ``scale`` (HMA supplement Table 2).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        interval: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        qkv_bias: bool,
        use_fab: bool,
        use_gab: bool,
        grid_chunk_mb: float,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for k in range(depth):
            shift = 0 if k % 2 == 0 else window_size // 2
            if use_fab and k % 2 == 0:
                blocks.append(FusedConv(dim))
            blocks.append(FAB(dim, num_heads, window_size, shift, mlp_ratio, drop_path[k], qkv_bias))
        self.blocks = nn.ModuleList(blocks)
        if use_gab:
            self.gab = GAB(dim, num_heads, window_size, interval, mlp_ratio, qkv_bias, grid_chunk_mb)
            self.scale = nn.Parameter(torch.empty(dim))
            nn.init.trunc_normal_(self.scale, std=0.02)
        else:
            self.gab = None

    def forward(self, x: Tensor, x_size: tuple[int, int], params: Mapping[str, Tensor | None]) -> Tensor:
        rpi, mask = params["rpi_sa"], params["attn_mask"]
        for blk in self.blocks:
            x = blk(x, x_size, rpi, mask)
        if self.gab is not None:
            x = x + self.gab(x, x_size, rpi, mask) * self.scale
        return x


class RHTB(ResidualTokenGroup):
    """Residual Hybrid Transformer Block (spec §2.3): ``x + conv3×3(FusedConv/FAB blocks → GAB)(x)``."""

    def __init__(self, dim: int, resi_connection: str, **blocks_kwargs: Any) -> None:
        super().__init__(AttenBlocks(dim, **blocks_kwargs), dim, resi_connection)


# ------------------------------------------------------------------------------------------------ the network
class HMA(WindowTransformerSR):
    """HMANet (Chu et al., CVPRW 2024), classical SR with pixel-shuffle reconstruction.

    Args:
        scale: upscale factor (1, 3 or a power of 2).
        embed_dim: feature channels C (divisible by 4 and by each ``num_heads``).
        depths: number of FAB window-attention blocks in each RHTB (FusedConv before every even one).
        num_heads: heads of the FABs in each RHTB (even: the GAB's window and grid branches use half of them).
        window_size: attention window M (the input is padded to a multiple of it; also ``tile_align``).
        interval_size: grid interval I (§3.3); must divide ``window_size``. Not recoverable from a state dict.
        mlp_ratio: MLP expansion.
        drop_path_rate: maximum stochastic-depth rate (linear over all FABs; the GAB has none).
        use_fab: keep the FusedConv half of the Fused Attention Blocks (ablation, supplement Table 2).
        use_gab: keep the Grid Attention Block and its ``scale`` in each RHTB (ablation, supplement Table 2).
        grid_chunk_mb: memory budget (MiB) of one chunk of grid-attention scores; ``0`` computes every group at once.
        grad_checkpointing: checkpoint each RHTB while training (less memory, one extra forward).
        img_range: pixel range multiplier of the normalisation.
        num_feat: channels of the reconstruction head (64 in the release).
        resi_connection: ``'1conv'`` (release) or ``'identity'``.
        qkv_bias: bias of the q/k/v projections.

    Input ``(B, 3, H, W)`` RGB in [0, 1], any ``H, W >= 1``; output ``(B, 3, H·s, W·s)``, not clamped.
    """

    pad_mode = "symmetric"

    def __init__(
        self,
        scale: int = 4,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 16,
        interval_size: int = 4,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        use_fab: bool = True,
        use_gab: bool = True,
        grid_chunk_mb: float = 512.0,
        grad_checkpointing: bool = False,
        img_range: float = 1.0,
        num_feat: int = 64,
        resi_connection: str = "1conv",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        depths, num_heads = check_window_transformer_args(
            "HMA",
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
        if use_gab:
            if not isinstance(interval_size, int) or isinstance(interval_size, bool) or interval_size < 1:
                raise ValueError(f"HMA: interval_size must be an int >= 1, got {interval_size!r}")
            if window_size % interval_size:
                raise ValueError(
                    f"HMA: interval_size={interval_size} must divide window_size={window_size} (the padded map is a "
                    f"multiple of the window and the grid shuffle needs multiples of the interval)"
                )
            if embed_dim % 4 or (embed_dim // 2 // 4) // 4 < 1:
                raise ValueError(
                    f"HMA: embed_dim={embed_dim} must be divisible by 4 (GAB branches C/4, C/4, C/2) and >= 32 (the "
                    f"grid attention's position-bias MLP has ((C/2)//4)//4 units)"
                )
            for k, h in enumerate(num_heads):
                if h % 2 or (embed_dim // 4) % (h // 2):
                    raise ValueError(
                        f"HMA: num_heads[{k}]={h} must be even with embed_dim // 4 = {embed_dim // 4} divisible by "
                        f"num_heads // 2 (the GAB's window and grid branches use half of the heads)"
                    )
        if not grid_chunk_mb >= 0:
            raise ValueError(f"HMA: grid_chunk_mb must be >= 0 (0 = no chunking), got {grid_chunk_mb!r}")

        self._init_head(
            scale=scale,
            embed_dim=embed_dim,
            window_size=window_size,
            img_range=img_range,
            grad_checkpointing=grad_checkpointing,
        )
        self.depths = list(depths)
        self.num_heads = list(num_heads)
        self.interval_size = interval_size
        self.use_fab = bool(use_fab)
        self.use_gab = bool(use_gab)
        self.grid_chunk_mb = float(grid_chunk_mb)
        self.shift_size = window_size // 2
        self.shift_mask = ShiftMaskCache(window_size, self.shift_size)
        self.register_buffer("relative_position_index_SA", calculate_rpi_sa(window_size))

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            start = sum(depths[:i])
            self.layers.append(
                RHTB(
                    embed_dim,
                    resi_connection,
                    depth=depth,
                    num_heads=heads,
                    window_size=window_size,
                    interval=interval_size,
                    mlp_ratio=mlp_ratio,
                    drop_path=dpr[start : start + depth],
                    qkv_bias=qkv_bias,
                    use_fab=use_fab,
                    use_gab=use_gab,
                    grid_chunk_mb=grid_chunk_mb,
                )
            )
        self._init_tail(scale=scale, embed_dim=embed_dim, num_feat=num_feat, resi_connection=resi_connection)
        self.apply(init_transformer_weights)

    def set_grid_chunk_mb(self, chunk_mb: float) -> None:
        """Change the grid-attention memory budget of every GAB (``0`` = compute all groups at once)."""
        self.grid_chunk_mb = float(chunk_mb)
        for mod in self.modules():
            if isinstance(mod, GridAttention):
                mod.chunk_mb = float(chunk_mb)

    def block_params(self, height: int, width: int, ref: Tensor) -> dict[str, Tensor | None]:
        return {
            "attn_mask": self.shift_mask(height, width, ref.dtype, ref.device),
            "rpi_sa": self.relative_position_index_SA,
        }

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, embed_dim={self.embed_dim}, depths={self.depths}, num_heads={self.num_heads}, "
            f"window_size={self.window_size}, interval_size={self.interval_size}, use_fab={self.use_fab}, "
            f"use_gab={self.use_gab}, grid_chunk_mb={self.grid_chunk_mb}"
        )


# ------------------------------------------------------------------------------------------------ registered variant
@register_arch(family="hma")
def hma(
    scale: int = 4,
    embed_dim: int = 180,
    depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
    num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
    window_size: int = 16,
    interval_size: int = 4,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    use_fab: bool = True,
    use_gab: bool = True,
    grid_chunk_mb: float = 512.0,
    grad_checkpointing: bool = False,
    img_range: float = 1.0,
) -> HMA:
    """HMANet (official ``HMA_SRx*``, the only released configuration): 69.723 / 69.907 / 69.870 M params at
    ×2/×3/×4. ``use_fab`` / ``use_gab`` select the ablation variants of the HMA supplement's Table 2."""
    return HMA(**locals())


# ------------------------------------------------------------------------------------------------ state-dict detector


@register_detector("hma", priority=20)
def detect_hma(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Recognise an official-layout HMA state dict and infer its hyper-parameters (spec §2.7.7, §4).

    Identified by ``relative_position_index_SA``, ``conv_first.weight``, ``conv_last.weight`` and block-level
    ``blocks.j.qkv`` keys (HAT keeps them in ``blocks.j.attn.qkv``).
    C = rows of ``conv_first``; M = √rows of the SA index; heads = columns of the FAB bias tables; depth per group =
    number of blocks carrying ``qkv.weight``; mlp ratio = fc1 rows / C; scale from the ``upsample.N`` convs;
    ``use_fab`` / ``use_gab`` from the presence of FusedConv / GAB keys. ``interval_size`` cannot be recovered (the
    position MLP is size-agnostic): the release's 4 is used.
    """
    required = ("relative_position_index_SA", "conv_first.weight", "conv_last.weight", "conv_before_upsample.0.weight")
    if not all(k in state_dict for k in required):
        return None
    use_gab = "layers.0.residual_group.gab.grid_proj.weight" in state_dict
    use_fab = any(k.startswith("layers.0.residual_group.blocks.") and ".fused_conv." in k for k in state_dict)
    fab_qkv = any(re.match(r"^layers\.0\.residual_group\.blocks\.\d+\.qkv\.weight$", k) for k in state_dict)
    if not fab_qkv:  # HAT keeps its qkv inside ``attn``; block-level qkv is HMA's layout (spec §2.7.3)
        return None
    dim, m, layer_ids = window_transformer_layout(state_dict, "HMA")
    depths: list[int] = []
    num_heads: list[int] = []
    fc1 = None
    for i in layer_ids:
        pre = f"layers.{i}.residual_group.blocks."
        fabs = sorted(
            int(k[len(pre) :].split(".", 1)[0]) for k in state_dict if k.startswith(pre) and k.endswith(".qkv.weight")
        )
        if not fabs:
            raise ValueError(f"HMA state dict: group layers.{i} has no FAB blocks ({pre}N.qkv.weight)")
        depths.append(len(fabs))
        num_heads.append(int(state_dict[f"{pre}{fabs[0]}.attn.relative_position_bias_table"].shape[1]))
        fc1 = fc1 or int(state_dict[f"{pre}{fabs[0]}.mlp.fc1.weight"].shape[0])
    num_feat = int(state_dict["conv_last.weight"].shape[1])
    if num_feat != 64 or "conv_after_body.weight" not in state_dict:
        raise ValueError(
            "HMA state dict: only num_feat=64 and resi_connection='1conv' checkpoints can be rebuilt automatically "
            f"(conv_last has {num_feat} input channels; conv_after_body.weight present: "
            f"{'conv_after_body.weight' in state_dict})"
        )
    assert fc1 is not None
    mlp_ratio = fc1 / dim if int(dim * (fc1 / dim)) == fc1 else math.nextafter(fc1 / dim, math.inf)
    kwargs: dict[str, Any] = {
        "embed_dim": dim,
        "depths": depths,
        "num_heads": num_heads,
        "window_size": m,
        "mlp_ratio": mlp_ratio,
        "use_fab": use_fab,
        "use_gab": use_gab,
    }
    extra: dict[str, Any] = {"scale": upsampler_scale(state_dict, num_feat, "HMA")}
    for name in list_archs():
        if arch_family(name) != "hma":
            continue
        d = arch_defaults(name)
        if all((list(d[k]) if isinstance(v, list) else d[k]) == v for k, v in kwargs.items()):
            return name, extra
    return "hma", {**extra, **kwargs}
