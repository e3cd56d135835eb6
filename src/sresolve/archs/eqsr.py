"""EQSR (EQNet): arbitrary-scale SR with the Adaptive Feature Extractor and a query decoder.

Wang, Chen, Ni, Liu, Xu, Zhang, Zhang, "Deep Arbitrary-Scale Image Super-Resolution via Scale-Equivariance Pursuit",
CVPR 2023. Written from the paper, its supplement and the facts in ``/work/shared/specs/archs_eqsr_amrsr.md`` Part A
(official repository neuralchen/EQSR, ``EQSR/archs/hat_ModMBFormer_Sim_arch.py``). Module and parameter names equal
the official release, so its state dicts load with ``strict=True`` through :func:`sresolve.checkpoints.load_model`.

Structure (spec A1): ``(x - mean)`` → ``conv_first`` → tokens + LayerNorm → ``len(depths)`` residual groups, each an
AFE block (:class:`AFEBlock`, spec A4), ``depth - 1`` window-attention blocks (HAT's HAB **without** its CAB branch,
shifted windows on odd blocks) and one OCAB (HAT's overlapping cross-attention), then a 3×3 conv and the group
residual (spec A5) → LayerNorm → ``conv_after_body`` + long skip → the query decoder :class:`QueryDecoder` (the
"Neural Kriging" upsampler, official ``DSF``, spec A6) evaluated at every requested HR pixel → ``+ mean``.

The network is scale-agnostic: ``net(lr, scale=2.5)`` returns ``round(h·2.5) × round(w·2.5)`` pixels, ``net(lr,
out_size=(H, W))`` any size, ``net(lr, coord=..., scale=...)`` the pixels at given continuous coordinates (training
windows). Samples of one batch may have different scales: the AFE runs one modulated kernel per sample as a grouped
convolution (paper Alg. 1).

Choices (spec A12), each a constructor argument / config key:

* E1 ``scale_code``: what the AFE encodes. ``"r"`` (default, the paper): the scale itself. ``"cell"`` (the official
  code, needed to run the released checkpoints): ``2 / H_q``, two over the height of the HR grid being queried (the
  crop size in training, the full image height at test). The sine-cosine encoding is always computed in float32 with
  autocast disabled.
* E2 ``afe_bias``: the paper's bias after the modulated conv (Alg. 1 step 5). Off by default: the code has none and
  the parameter count (13.62 M) is the code's.
* E3 ``afe_demod``: StyleGAN2 demodulation of the modulated kernel (code: on; the paper does not mention it).
* E4 the involution of the decoder runs in pure PyTorch (shift-and-accumulate over the 3×3 taps), not cupy.
* E5 bounded test memory: :meth:`EQSR.decode` tiles the HR query grid with a halo of :data:`DECODER_HALO` query
  pixels; the decoder's channel attention (ECA) uses a global mean, gathered in extra sweeps over the tiles first, so
  the tiled result equals the untiled one. The backbone is tiled like HAT's by :func:`sresolve.ops.tiling.upscale`.

Differences from the official code (none changes the maths or the weights): any LR size (reflect padding to a
multiple of the window and crop of the body output, as the official test wrapper); attention through
``scaled_dot_product_attention`` (HAT's blocks); the query grid defaults to every HR pixel centre.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sresolve.ops.coords import make_coord
from sresolve.ops.precision import autocast_disabled

from .hat import HAB, OCAB, calculate_rpi_oca
from .layers import (
    LayerNorm2d,
    ResidualTokenGroup,
    ShiftMaskCache,
    WindowTransformerSR,
    calculate_rpi_sa,
    check_window_transformer_args,
    crop_to_scale,
    init_transformer_weights,
    pad_to_multiple,
    window_transformer_layout,
)
from .registry import arch_defaults, list_archs, register_arch, register_detector

__all__ = [
    "DECODER_HALO",
    "EQSR",
    "AFEBlock",
    "AdaptiveFeatureExtractor",
    "InvolutionBlock",
    "QueryDecoder",
    "ScaleCode",
    "detect_eqsr",
    "eqsr",
    "eqsr_4x4",
    "eqsr_4x5",
    "eqsr_5x5",
    "eqsr_6x6",
    "involution",
    "sine_cosine_encoding",
]

ScaleCode = Literal["r", "cell"]
SCALE_CODES: tuple[str, ...] = ("r", "cell")

#: Receptive-field radius of :class:`QueryDecoder` on the query grid (two blocks of a 3×3 kernel-generator conv and a
#: 3×3 involution, spec A6.10): tiles of the query grid computed with this halo equal the untiled result.
DECODER_HALO = 4


# ------------------------------------------------------------------------------------------------------- encodings
def sine_cosine_encoding(x: Tensor, num_frequencies: int = 40, dim: int = -1) -> Tensor:
    """``[x, sin(2⁰πx/10), cos(2⁰πx/10), …, sin(2^{F-1}πx/10), cos(2^{F-1}πx/10)]`` along ``dim`` (spec A3.1).

    The scale code of the AFE (``F = 40`` → 81 values for a scalar) and the relative-offset encoding of the decoder
    (162 channels for an (x, y) offset). The ``/10`` is the official code's (not in the paper). Computed in float32
    with autocast off, in the official operation order, so that the high frequencies (arguments up to ~1e9 rad, in
    effect a hash of the float value) equal the released model's.
    """
    with autocast_disabled(x.device.type):
        x = x.float()
        parts = [x]
        for i in range(num_frequencies):
            arg = (2**i * math.pi) * x / 10
            parts += [torch.sin(arg), torch.cos(arg)]
        return torch.cat(parts, dim=dim)


# ------------------------------------------------------------------------------------------------------- AFE
class AdaptiveFeatureExtractor(nn.Module):
    """The AFE operator (paper Alg. 1; official ``Conv2DMod``): one 3×3 kernel basis ``W`` modulated per sample and per
    input channel by the scale code, StyleGAN2 style (spec A3):

    ``v_b = to_style(e(x_b))``; ``Ŵ_b[o, i] = W[o, i] · (1 + v_b[i])``; with ``demod``:
    ``W̃_b[o] = Ŵ_b[o] / sqrt(Σ_{i,kh,kw} Ŵ_b[o, i, kh, kw]² + eps)``; then ``Y_b = W̃_b ⋆ X_b`` for every sample b of
    the batch as one grouped convolution (``groups = B``), so one batch may mix scales. ``bias=True`` adds the
    paper's ``B ∈ R^C`` (choice E2; the code has none).
    """

    def __init__(
        self, dim: int, code_dim: int, kernel_size: int = 3, demod: bool = True, bias: bool = False, eps: float = 1e-8
    ) -> None:
        super().__init__()
        self.dim = dim
        self.kernel_size = kernel_size
        self.demod = bool(demod)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.empty(dim, dim, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")
        self.to_style = nn.Linear(code_dim, dim)
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def modulated_weight(self, code: Tensor) -> Tensor:
        """Per-sample kernels ``(B, C_out, C_in, k, k)`` for scale codes ``(B, code_dim)``."""
        style = self.to_style(code)  # (B, C_in)
        w = self.weight[None] * (style[:, None, :, None, None] + 1)
        if self.demod:
            w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + self.eps)
        return w

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if code.shape[0] != b:
            raise ValueError(f"AFE: {code.shape[0]} scale codes for a batch of {b}")
        weight = self.modulated_weight(code).to(x.dtype).reshape(b * c, c, self.kernel_size, self.kernel_size)
        y = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=self.kernel_size // 2, groups=b).view(b, c, h, w)
        return y if self.bias is None else y + self.bias.to(y.dtype)[:, None, None]

    def extra_repr(self) -> str:
        return f"{self.dim}, kernel_size={self.kernel_size}, demod={self.demod}, bias={self.bias is not None}"


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation of the AFE block (spec A4.3): spatial mean → Linear(C, C·r, no bias) → SiLU →
    Linear(C·r, C, no bias) → sigmoid → channel-wise product. ``gate`` indices 1 and 3 are the official keys."""

    def __init__(self, dim: int, shrinkage: float = 0.25) -> None:
        super().__init__()
        hidden = int(dim * shrinkage)
        self.gate = nn.Sequential(
            nn.Identity(),
            nn.Linear(dim, hidden, bias=False),
            nn.SiLU(),
            nn.Linear(hidden, dim, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x.mean(dim=(2, 3)))[:, :, None, None]


class AFEBlock(nn.Module):
    """The AFE host block, first in every group (official ``ModMBConv``, spec A4), on tokens ``(B, hw, C)``:

    ``u = Conv1×1(t)`` (no skip from ``t``); ``u = u + AFE(GELU(LN(u)), e)``; ``u = u + Conv1×1(SE(GELU(LN(u))))``.
    """

    def __init__(self, dim: int, code_dim: int, afe_demod: bool = True, afe_bias: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.net1 = nn.Conv2d(dim, dim, 1)
        self.norm1 = nn.Sequential(nn.LayerNorm(dim), nn.GELU())
        self.net2 = AdaptiveFeatureExtractor(dim, code_dim, demod=afe_demod, bias=afe_bias)
        self.norm2 = nn.Sequential(nn.LayerNorm(dim), nn.GELU())
        self.net3 = nn.Sequential(SqueezeExcitation(dim), nn.Conv2d(dim, dim, 1))

    def forward(self, x: Tensor, x_size: tuple[int, int], code: Tensor) -> Tensor:
        h, w = x_size
        b, _, c = x.shape

        def image(t: Tensor) -> Tensor:
            return t.transpose(1, 2).reshape(b, c, h, w)

        u = self.net1(image(x)).flatten(2).transpose(1, 2)
        u = u + self.net2(image(self.norm1(u)), code).flatten(2).transpose(1, 2)
        return u + self.net3(image(self.norm2(u))).flatten(2).transpose(1, 2)


class EQSRGroupBlocks(nn.Module):
    """The body of one group (official ``AttenBlocks``, spec A5): AFE block, ``depth - 1`` HABs without CAB (shift 0,
    M/2, 0, …), one OCAB. Stochastic depth: the HABs take the first ``depth - 1`` rates of the group's slice."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        overlap_ratio: float,
        mlp_ratio: float,
        drop_path: Sequence[float],
        qkv_bias: bool,
        code_dim: int,
        afe_demod: bool,
        afe_bias: bool,
    ) -> None:
        super().__init__()
        self.mbconv = AFEBlock(dim, code_dim, afe_demod=afe_demod, afe_bias=afe_bias)
        self.blocks = nn.ModuleList(
            HAB(
                dim,
                num_heads,
                window_size,
                0 if j % 2 == 0 else window_size // 2,
                compress_ratio=1,
                squeeze_factor=1,
                conv_scale=0.0,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path[j],
                qkv_bias=qkv_bias,
                use_cab=False,
            )
            for j in range(depth - 1)
        )
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, mlp_ratio, qkv_bias)

    def forward(self, x: Tensor, x_size: tuple[int, int], params: Mapping[str, Tensor | None]) -> Tensor:
        x = self.mbconv(x, x_size, params["scale_code"])  # type: ignore[arg-type]
        for blk in self.blocks:
            x = blk(x, x_size, params["rpi_sa"], params["attn_mask"])
        return self.overlap_attn(x, x_size, params["rpi_oca"])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------- decoder
def involution(x: Tensor, kernel: Tensor) -> Tensor:
    """Involution with a 3×3 (k×k) window, stride 1, zero padding (Li et al., CVPR 2021), in pure PyTorch (spec E4).

    ``x``: ``(B, C, H, W)``; ``kernel``: ``(B, G, k, k, H, W)`` with ``C`` divisible by ``G``; channel ``c`` uses
    kernel group ``c // (C / G)``: ``out[b, c, p] = Σ_t kernel[b, c // (C/G), t, p] · x[b, c, p + t]``. Computed by
    shift-and-accumulate over the k² taps (one padded copy of ``x``, no k²-times unfolded tensor).
    """
    b, c, h, w = x.shape
    g, k = kernel.shape[1], kernel.shape[2]
    if c % g or kernel.shape[-2:] != (h, w) or kernel.shape[3] != k:
        raise ValueError(f"involution: kernel {tuple(kernel.shape)} does not fit input {tuple(x.shape)}")
    r = k // 2
    xp = F.pad(x, (r, r, r, r)).view(b, g, c // g, h + 2 * r, w + 2 * r)
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[..., i : i + h, j : j + w] * kernel[:, :, None, i, j]
            out = term if out is None else out + term
    assert out is not None
    return out.reshape(b, c, h, w)


class ChannelLayerNorm(nn.Module):
    """The decoder's channel LayerNorm with bias (official ``LayerNorm(dim, 'WithBias')``: eps 1e-5, biased variance);
    the ``body`` attribute keeps the official key names."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = LayerNorm2d(dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class KernelInvolution(nn.Module):
    """Content-adaptive 3×3 involution whose kernel is the product of a generated kernel and the distance kernel
    (spec A6.7): ``seblock`` = Conv3×3(C → C/4) → ReLU → Conv1×1(→ 9·G), G = C / 8 groups."""

    def __init__(self, dim: int, kernel_size: int = 3, group_channels: int = 8, reduction: int = 4) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = dim // group_channels
        self.seblock = nn.Sequential(
            nn.Conv2d(dim, dim // reduction, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(dim // reduction, kernel_size**2 * self.groups, 1),
        )

    def forward(self, x: Tensor, distance_kernel: Tensor) -> Tensor:
        b, _, h, w = x.shape
        k = self.kernel_size
        kernel = self.seblock(x).view(b, self.groups, k, k, h, w) * distance_kernel
        return involution(x, kernel)


class EfficientChannelAttention(nn.Module):
    """ECA of the decoder's FFN (official ``ECA_layer``, spec A6.7): a 1-D conv (k = 5, no bias) across the channels
    of the spatial mean, used **as a scale without a sigmoid**. ``mean`` may be given (tiled decoding: the mean over
    the whole query grid, gathered beforehand)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        k = int(abs(math.log2(dim) + 1) / 2)
        k = k if k % 2 else k + 1
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def scale(self, mean: Tensor) -> Tensor:
        """``(B, C)`` channel means → ``(B, C, 1, 1)`` scales."""
        return self.conv(mean[:, None, :])[:, 0, :, None, None]

    def forward(self, x: Tensor, mean: Tensor | None = None) -> Tensor:
        return x * self.scale(x.mean(dim=(2, 3)) if mean is None else mean.to(x.dtype))


class FeedForward(nn.Module):
    """Conv1×1(C → 2C) → GELU → Conv1×1(2C → C) → ECA (spec A6.7)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim * 2, 1)
        self.conv2 = nn.Conv2d(dim * 2, dim, 1)
        self.CA = EfficientChannelAttention(dim)

    def pre_attention(self, x: Tensor) -> Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


class InvolutionBlock(nn.Module):
    """One "Involution-Transformer" block of the decoder (official ``Invo_TransformerBlock``, spec A6.7):
    ``x = x + Conv1×1(Invol(Conv1×1(LN(x)); G(·) ⊙ k))``; ``x = x + ECA(FFN(LN(x)))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = KernelInvolution(dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = FeedForward(dim)

    def ffn_input(self, x: Tensor, distance_kernel: Tensor) -> tuple[Tensor, Tensor]:
        """``(x after the involution branch, FFN output before its ECA scale)``."""
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x)), distance_kernel))
        return x, self.ffn.pre_attention(self.norm2(x))

    def forward(self, x: Tensor, distance_kernel: Tensor, eca_mean: Tensor | None = None) -> Tensor:
        x, f = self.ffn_input(x, distance_kernel)
        return x + self.ffn.CA(f, eca_mean)


class RBF(nn.Module):
    """Distance kernel ``exp(-0.5 · d² / ℓ²)`` with one learnable length scale ℓ (initialised to 3, spec A6.6)."""

    def __init__(self, lengthscale: float = 3.0) -> None:
        super().__init__()
        self.lengthscale = nn.Parameter(torch.tensor(float(lengthscale)))

    def forward(self, sq_dist: Tensor) -> Tensor:
        return torch.exp(sq_dist / self.lengthscale**2 * -0.5)


class QueryDecoder(nn.Module):
    """The arbitrary-size upsampler (official ``DSF``, "Neural Kriging"; spec A6), evaluated on a grid of queries.

    For each query ``q`` (continuous coordinates, LIIF frame): the nearest LR feature and LR pixel centre ("anchor",
    ``grid_sample`` nearest); the offset ``q - anchor`` in LR half-pixels encoded with 40 frequencies (162 channels);
    ``head`` = Conv1×1(C + 162 → latent) + ReLU; the distance kernel between each query and the anchors of its 3×3
    query-grid neighbours; ``blocks`` involution blocks (each followed by ReLU); ``to_rgb(ReLU(r + head))``.
    Attribute names (``head``, ``inv1``, ``inv2``, ``to_rgb``, ``rbf1``) are the official keys.
    """

    def __init__(self, in_dim: int, latent_dim: int = 256, num_blocks: int = 2, num_frequencies: int = 40) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies
        self.num_blocks = num_blocks
        self.head = nn.Sequential(nn.Conv2d(in_dim + 2 + 4 * num_frequencies, latent_dim, 1), nn.ReLU())
        for i in range(num_blocks):
            self.add_module(f"inv{i + 1}", InvolutionBlock(latent_dim))
        self.to_rgb = nn.Sequential(nn.ReLU(), nn.Conv2d(latent_dim, 3, 1))
        self.rbf1 = RBF()

    @property
    def blocks(self) -> list[InvolutionBlock]:
        return [getattr(self, f"inv{i + 1}") for i in range(self.num_blocks)]

    def embed(self, feat: Tensor, coord: Tensor) -> tuple[Tensor, Tensor]:
        """``(head features (B, latent, Hq, Wq), distance kernel (B, 1, 3, 3, Hq, Wq))`` for queries ``coord``
        ``(B, Hq, Wq, 2)`` in ``(y, x)`` order on the LR feature map ``feat`` ``(B, C, h, w)``."""
        b, _, h, w = feat.shape
        grid = coord.flip(-1).to(feat.dtype)  # grid_sample wants (x, y)
        hq, wq = grid.shape[1:3]
        q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)
        centres = make_coord((h, w), device=feat.device, dtype=feat.dtype).flip(-1).permute(2, 0, 1)
        anchor = F.grid_sample(centres.expand(b, 2, h, w), grid, mode="nearest", align_corners=False)
        units = torch.tensor([w, h], device=feat.device, dtype=feat.dtype).view(1, 2, 1, 1)
        q = grid.permute(0, 3, 1, 2)
        rel = (q - anchor) * units
        neighbours = F.unfold(anchor, 3, padding=1).view(b, 2, 9, hq, wq)
        sq_dist = ((neighbours - q[:, :, None]) * units[:, :, None]).square().sum(1, keepdim=True)
        kernel = self.rbf1(sq_dist.view(b, 1, 3, 3, hq, wq))
        enc = sine_cosine_encoding(rel, self.num_frequencies, dim=1).to(feat.dtype)
        return self.head(torch.cat([q_feat, enc], dim=1)), kernel

    def forward(self, feat: Tensor, coord: Tensor, eca_means: Sequence[Tensor] | None = None) -> Tensor:
        x, kernel = self.embed(feat, coord)
        r = x
        for i, blk in enumerate(self.blocks):
            r = F.relu(blk(r, kernel, None if eca_means is None else eca_means[i]))
        return self.to_rgb(r + x)

    def eca_means(self, feat: Tensor, coord: Tensor, tile: int) -> list[Tensor]:
        """The ECA channel means of every block over the whole query grid, computed tile by tile (one sweep per
        block; block ``k`` needs the means of blocks ``< k``). Each tile is computed with :data:`DECODER_HALO` and
        only its core is summed."""
        b, hq, wq = coord.shape[:3]
        means: list[Tensor] = []
        for k, blk in enumerate(self.blocks):
            total = torch.zeros(b, blk.norm1.body.dim, dtype=torch.float64, device=feat.device)
            for (ys, xs), (cy, cx) in _query_tiles(hq, wq, tile, DECODER_HALO):
                x, kernel = self.embed(feat, coord[:, ys, xs])
                r = x
                for j in range(k):
                    r = F.relu(self.blocks[j](r, kernel, means[j]))
                _, f = blk.ffn_input(r, kernel)
                total += f[:, :, cy, cx].sum(dim=(2, 3), dtype=torch.float64)
            means.append((total / (hq * wq)).to(feat.dtype))
        return means


def _query_tiles(
    height: int, width: int, tile: int, halo: int
) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """Tiles of a ``height × width`` query grid: ``((rows, cols) with halo, (rows, cols) of the core inside it)``."""
    tiles = []
    for top in range(0, height, tile):
        bottom = min(top + tile, height)
        y0, y1 = max(top - halo, 0), min(bottom + halo, height)
        for left in range(0, width, tile):
            right = min(left + tile, width)
            x0, x1 = max(left - halo, 0), min(right + halo, width)
            tiles.append(
                (
                    (slice(y0, y1), slice(x0, x1)),
                    (slice(top - y0, bottom - y0), slice(left - x0, right - x0)),
                )
            )
    return tiles


# ------------------------------------------------------------------------------------------------------- network
class EQSR(WindowTransformerSR):
    """EQNet (Wang et al., CVPR 2023): arbitrary-scale SR, see the module docstring.

    Args:
        scale: the default output scale when :meth:`forward` is called without one (an int, for the registry's
            common interface; the network itself is scale-agnostic).
        embed_dim: backbone channels C (180).
        depths: attention blocks per group: ``depth - 1`` HABs and the OCAB, after the AFE block (paper "6 × 5":
            ``(5,) * 6``).
        num_heads: attention heads per group.
        window_size: attention window M (16); the LR is padded to a multiple of it.
        overlap_ratio: γ of the OCAB (``Mo = M + int(γM)``, 0.5).
        mlp_ratio: MLP expansion of the attention blocks (2).
        drop_path_rate: stochastic depth, linear over ``sum(depths)`` entries (0.1).
        scale_code: ``"r"`` | ``"cell"`` (choice E1).
        num_frequencies: sine-cosine frequencies of the scale code and of the decoder's offsets (40 → 81 values).
        afe_demod, afe_bias: choices E3, E2.
        decoder_dim, decoder_blocks: latent channels (256) and involution blocks (2) of the query decoder.
        grad_checkpointing: checkpoint each group while training.
        img_range, resi_connection, qkv_bias: as HAT.
    """

    arbitrary_scale = True

    def __init__(
        self,
        scale: int = 4,
        embed_dim: int = 180,
        depths: Sequence[int] = (5, 5, 5, 5, 5, 5),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 16,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        scale_code: ScaleCode = "r",
        num_frequencies: int = 40,
        afe_demod: bool = True,
        afe_bias: bool = False,
        decoder_dim: int = 256,
        decoder_blocks: int = 2,
        grad_checkpointing: bool = False,
        img_range: float = 1.0,
        resi_connection: str = "1conv",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        depths, num_heads = check_window_transformer_args(
            "EQSR",
            scale=scale,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            num_feat=None,
            resi_connection=resi_connection,
            img_range=img_range,
        )
        if scale_code not in SCALE_CODES:
            raise ValueError(f"EQSR: scale_code must be one of {SCALE_CODES} (choice E1), got {scale_code!r}")
        for name, value in (("num_frequencies", num_frequencies), ("decoder_blocks", decoder_blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"EQSR: {name} must be an int >= 0, got {value!r}")
        if isinstance(decoder_dim, bool) or not isinstance(decoder_dim, int) or decoder_dim < 8 or decoder_dim % 8:
            raise ValueError(
                f"EQSR: decoder_dim must be a positive multiple of 8 (involution groups), got {decoder_dim}"
            )
        overlap = int(window_size * overlap_ratio)
        if not overlap_ratio >= 0 or overlap % 2:
            raise ValueError(
                f"EQSR: window_size={window_size} and overlap_ratio={overlap_ratio} give an OCAB overlap "
                f"int(window_size * overlap_ratio) = {overlap}, which must be an even number >= 0"
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
        self.overlap_ratio = overlap_ratio
        self.scale_code = scale_code
        self.num_frequencies = num_frequencies
        self.code_dim = 1 + 2 * num_frequencies
        self.shift_mask = ShiftMaskCache(window_size, window_size // 2)
        self.register_buffer("relative_position_index_SA", calculate_rpi_sa(window_size))
        self.register_buffer("relative_position_index_OCA", calculate_rpi_oca(window_size, window_size + overlap))
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            start = sum(depths[:i])
            body = EQSRGroupBlocks(
                embed_dim,
                depth,
                heads,
                window_size,
                overlap_ratio,
                mlp_ratio,
                dpr[start : start + depth],
                qkv_bias,
                self.code_dim,
                afe_demod,
                afe_bias,
            )
            self.layers.append(ResidualTokenGroup(body, embed_dim, resi_connection))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()
        self.upsample = QueryDecoder(embed_dim, decoder_dim, decoder_blocks, num_frequencies)
        self.apply(init_transformer_weights)

    def block_params(self, height: int, width: int, ref: Tensor) -> dict[str, Tensor | None]:
        return {
            "attn_mask": self.shift_mask(height, width, ref.dtype, ref.device),
            "rpi_sa": self.relative_position_index_SA,
            "rpi_oca": self.relative_position_index_OCA,
        }

    # ------------------------------------------------------------------ scale handling
    def _per_sample(
        self, value: float | Tensor | Sequence[float], batch: int, name: str, device: torch.device
    ) -> Tensor:
        t = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ValueError(f"EQSR: {name} has {t.numel()} values for a batch of {batch}")
        # checked eagerly (the data pipeline's scales); under torch.compile the check would break the graph and
        # synchronise with the device every step
        if not torch.compiler.is_compiling() and (not bool(torch.isfinite(t).all()) or bool((t <= 0).any())):
            raise ValueError(f"EQSR: {name} must be finite and > 0, got {t.tolist()}")
        return t

    def scale_code_of(
        self, batch: int, device: torch.device, scale: Any = None, cell: Any = None, query_height: int | None = None
    ) -> Tensor:
        """The ``(B, 1 + 2F)`` AFE input (choice E1): the encoded scale ``r`` or the encoded ``cell = 2 / H_q``."""
        if self.scale_code == "r":
            value = self._per_sample(self.scale if scale is None else scale, batch, "scale", device)
        else:
            if cell is None:
                if query_height is None:
                    raise ValueError(
                        "EQSR(scale_code='cell'): pass cell = 2 / (height of the queried HR grid) with explicit coord"
                    )
                cell = 2.0 / query_height
            value = self._per_sample(cell, batch, "cell", device)
        return sine_cosine_encoding(value[:, None], self.num_frequencies)

    def output_size(self, lr_size: tuple[int, int], scale: float) -> tuple[int, int]:
        """``(round(h·s), round(w·s))``: the HR size of an ``h × w`` LR at scale ``s`` (EQSR evaluation protocol)."""
        h, w = lr_size
        return max(1, round(h * float(scale))), max(1, round(w * float(scale)))

    # ------------------------------------------------------------------ stages
    def features(self, x: Tensor, code: Tensor) -> Tensor:
        """Backbone: LR ``(B, 3, h, w)`` in [0, 1] and scale codes → features ``(B, C, h, w)`` (padding removed)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"EQSR expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = (x - self.mean.to(x.dtype)) * self.img_range
        x, (ph, pw) = pad_to_multiple(x, self.window_size, mode=self.pad_mode)
        f0 = self.conv_first(x)
        f = self.conv_after_body(self.forward_features(f0, {"scale_code": code})) + f0
        return crop_to_scale(f, h, w, 1) if (ph or pw) else f

    def decode(self, feat: Tensor, coord: Tensor, query_tile: int | None = None) -> Tensor:
        """Query decoder + mean: RGB ``(B, 3, Hq, Wq)`` at ``coord`` ``(B, Hq, Wq, 2)``. ``query_tile``: compute the
        query grid in tiles of that side (halo :data:`DECODER_HALO`, ECA means gathered first; equal to untiled)."""
        hq, wq = coord.shape[1:3]
        if query_tile is None or (hq <= query_tile and wq <= query_tile):
            rgb = self.upsample(feat, coord)
        else:
            if query_tile < 1:
                raise ValueError(f"EQSR: query_tile must be >= 1, got {query_tile}")
            means = self.upsample.eca_means(feat, coord, query_tile)
            rgb = feat.new_empty(feat.shape[0], 3, hq, wq)
            for (ys, xs), (cy, cx) in _query_tiles(hq, wq, query_tile, DECODER_HALO):
                part = self.upsample(feat, coord[:, ys, xs], means)
                rgb[:, :, ys, xs][:, :, cy, cx] = part[:, :, cy, cx]
        return rgb / self.img_range + self.mean.to(rgb.dtype)

    def forward(
        self,
        x: Tensor,
        scale: float | Tensor | None = None,
        *,
        out_size: tuple[int, int] | None = None,
        coord: Tensor | None = None,
        cell: float | Tensor | None = None,
        query_tile: int | None = None,
    ) -> Tensor:
        """Super-resolve ``x`` ``(B, 3, h, w)`` in [0, 1].

        Args:
            scale: output scale (a number or one per sample; default :attr:`scale`). It sets the output size
                ``round(h·s) × round(w·s)`` unless ``out_size``/``coord`` are given, and is the AFE input when
                ``scale_code='r'``.
            out_size: ``(H, W)`` of the output grid (every pixel centre); with ``scale`` unset the scale is
                ``H / h`` (the height ratio).
            coord: explicit queries ``(B, Hq, Wq, 2)``, ``(y, x)`` LIIF coordinates (training windows).
            cell: ``2 / H_q`` per sample for ``scale_code='cell'`` (default ``2 / H`` of the output grid).
            query_tile: tile side of the decoder's query grid (bounded memory; exact).
        """
        if x.dim() != 4:
            raise ValueError(f"EQSR expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        query_height: int | None = None
        if coord is None:
            if out_size is None:
                s = self.scale if scale is None else scale
                values = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
                if values.numel() > 1 and not bool((values == values[0]).all()):
                    raise ValueError("EQSR: samples with different scales need explicit coord or out_size")
                out_size = self.output_size((h, w), float(values[0]))
            elif scale is None:
                scale = out_size[0] / h
            hq, wq = int(out_size[0]), int(out_size[1])
            if hq < 1 or wq < 1:
                raise ValueError(f"EQSR: out_size must be positive, got {out_size}")
            coord = make_coord((hq, wq), device=x.device, dtype=torch.float32).expand(b, hq, wq, 2)
            query_height = hq
        elif coord.dim() != 4 or coord.shape[0] != b or coord.shape[-1] != 2:
            raise ValueError(f"EQSR: coord must be (B, Hq, Wq, 2) for a batch of {b}, got {tuple(coord.shape)}")
        elif scale is None and self.scale_code == "r":
            raise ValueError("EQSR(scale_code='r'): pass the scale of each sample together with explicit coord")
        code = self.scale_code_of(b, x.device, scale, cell, query_height)
        return self.decode(self.features(x, code), coord, query_tile)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, depths={self.depths}, num_heads={self.num_heads}, "
            f"window_size={self.window_size}, overlap_ratio={self.overlap_ratio}, scale_code={self.scale_code!r}, "
            f"default scale={self.scale}"
        )


# ------------------------------------------------------------------------------------------------ registered variants
@register_arch(family="eqsr")
def eqsr(
    scale: int = 4,
    embed_dim: int = 180,
    depths: Sequence[int] = (5, 5, 5, 5, 5, 5),
    num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
    window_size: int = 16,
    gamma: float = 0.5,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    scale_code: str = "r",
    num_frequencies: int = 40,
    afe_demod: bool = True,
    afe_bias: bool = False,
    decoder_dim: int = 256,
    decoder_blocks: int = 2,
    grad_checkpointing: bool = False,
    img_range: float = 1.0,
) -> EQSR:
    """EQNet, the paper's final model IV (6 groups × 5 blocks): 13,619,510 parameters (supplement Table 1: 13.6 M).

    ``gamma`` is the OCAB overlap ratio (HAT's name); ``scale`` is only the default output scale. The other rows of
    Table 1 are registered as ``eqsr_<groups>x<depth>`` with the same arguments.
    """
    kwargs = dict(locals())
    return EQSR(overlap_ratio=kwargs.pop("gamma"), **kwargs)


def _table1_variant(groups: int, depth: int, params: str) -> Any:
    """Register ``eqsr_<groups>x<depth>``: :func:`eqsr` with the defaults ``depths = (depth,) * groups`` and
    ``num_heads = (6,) * groups`` (supplement Table 1). Its signature (what the registry checks and reads) is
    :func:`eqsr`'s with those two defaults changed."""
    base = inspect.signature(eqsr)
    changed = {"depths": (depth,) * groups, "num_heads": (6,) * groups}
    sig = base.replace(parameters=[p.replace(default=changed.get(p.name, p.default)) for p in base.parameters.values()])

    def variant(**kwargs: Any) -> EQSR:
        bound = sig.bind(**kwargs)
        bound.apply_defaults()
        return eqsr(**bound.arguments)

    name = f"eqsr_{groups}x{depth}"
    variant.__name__ = variant.__qualname__ = name
    variant.__signature__ = sig  # type: ignore[attr-defined]
    variant.__annotations__ = dict(eqsr.__annotations__)
    variant.__doc__ = f"EQNet, supplement Table 1 row {groups} groups × {depth} blocks: {params} parameters."
    return register_arch(variant, family="eqsr")


eqsr_4x4 = _table1_variant(4, 4, "8,515,106")
eqsr_4x5 = _table1_variant(4, 5, "9,582,890")
eqsr_5x5 = _table1_variant(5, 5, "11,601,200")
eqsr_6x6 = _table1_variant(6, 6, "15,221,186")


# ------------------------------------------------------------------------------------------------ state-dict detector
@register_detector("eqsr", priority=30)
def detect_eqsr(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Recognise an official-layout EQSR state dict (keys ``layers.0.residual_group.mbconv.net2.weight`` and
    ``upsample.rbf1.lengthscale``) and infer C, M, γ, depths, heads, mlp ratio, frequencies, AFE bias and the decoder
    width/blocks. Not recoverable from the weights: ``scale_code`` (returned as the default ``"r"``; the released
    official checkpoints were trained with ``"cell"``: ``load_model(path, scale_code="cell")``), drop path, img_range.
    """
    if "layers.0.residual_group.mbconv.net2.weight" not in state_dict or "upsample.rbf1.lengthscale" not in state_dict:
        return None
    dim, m, layer_ids = window_transformer_layout(state_dict, "EQSR")
    depths: list[int] = []
    num_heads: list[int] = []
    for i in layer_ids:
        pre = f"layers.{i}.residual_group.blocks."
        ids = sorted({int(k[len(pre) :].split(".", 1)[0]) for k in state_dict if k.startswith(pre)})
        if ids != list(range(len(ids))):
            raise ValueError(f"EQSR state dict: group layers.{i} has non-contiguous block indices {ids}")
        depths.append(len(ids) + 1)  # depth counts the HABs and the OCAB (spec A5)
        table = state_dict[f"layers.{i}.residual_group.overlap_attn.relative_position_bias_table"]
        num_heads.append(int(table.shape[1]))
    mo = math.isqrt(int(state_dict["relative_position_index_OCA"].shape[1]))
    gamma = (mo - m) / m
    fc1 = int(state_dict["layers.0.residual_group.overlap_attn.mlp.fc1.weight"].shape[0])
    code_dim = int(state_dict["layers.0.residual_group.mbconv.net2.to_style.weight"].shape[1])
    if code_dim % 2 != 1:
        raise ValueError(f"EQSR state dict: to_style takes {code_dim} inputs, not 1 + 2·frequencies")
    decoder_dim = int(state_dict["upsample.head.0.weight"].shape[0])
    blocks = 0
    while f"upsample.inv{blocks + 1}.conv1.weight" in state_dict:
        blocks += 1
    kwargs: dict[str, Any] = {
        "embed_dim": dim,
        "depths": depths,
        "num_heads": num_heads,
        "window_size": m,
        "gamma": gamma,
        "mlp_ratio": fc1 / dim,
        "num_frequencies": (code_dim - 1) // 2,
        "afe_bias": "layers.0.residual_group.mbconv.net2.bias" in state_dict,
        "decoder_dim": decoder_dim,
        "decoder_blocks": blocks,
    }

    def differing(name: str) -> dict[str, Any]:
        d = arch_defaults(name)
        return {k: v for k, v in kwargs.items() if (list(d[k]) if isinstance(d[k], tuple) else d[k]) != v}

    for name in ("eqsr", *list_archs("eqsr_*")):
        if not differing(name):
            return name, {}
    return "eqsr", differing("eqsr")
