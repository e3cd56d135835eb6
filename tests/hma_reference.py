"""Test-only oracle: a literal, unoptimised HMANet in the official module layout (spec §2.2-2.3).

Written here from the spec's step-by-step description, independently of :mod:`sresolve.archs.hma`: explicit
``q @ kᵀ`` + softmax attention (no SDPA), its own window partition / shuffle / mask / index code, every grid group at
once, float32 only, no padding (h, w must be multiples of the window). Used to check that our network loads an
official-layout state dict strictly and reproduces its output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

MEAN = (0.4488, 0.4371, 0.4040)


def _partition(x: Tensor, m: int) -> Tensor:  # (b, h, w, c) -> (b*nw, m*m, c)
    b, h, w, c = x.shape
    x = x.view(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(-1, m * m, c)


def _reverse(win: Tensor, m: int, h: int, w: int) -> Tensor:  # (b*nw, m*m, c) -> (b, h, w, c)
    b = win.shape[0] // ((h // m) * (w // m))
    x = win.contiguous().view(b, h // m, w // m, m, m, -1).permute(0, 1, 3, 2, 4, 5).contiguous()
    return x.view(b, h, w, -1)


def _rel_index(gh: int, gw: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += gh - 1
    rel[:, :, 1] += gw - 1
    rel[:, :, 0] *= 2 * gw - 1
    return rel.sum(-1)


def _mask(h: int, w: int, m: int, s: int) -> Tensor:
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -m), slice(-m, -s), slice(-s, None)):
        for ws in (slice(0, -m), slice(-m, -s), slice(-s, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = _partition(img, m).squeeze(-1)
    d = win.unsqueeze(1) - win.unsqueeze(2)
    return d.masked_fill(d != 0, -100.0).masked_fill(d == 0, 0.0)


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefWindowAttention(nn.Module):
    """Takes projected ``[q|k|v]`` (3·dim channels)."""

    def __init__(self, dim: int, m: int, heads: int) -> None:
        super().__init__()
        self.dim, self.m, self.heads = dim, m, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * m - 1) ** 2, heads) * 0.5)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rpi: Tensor, mask: Tensor | None) -> Tensor:
        b_, n, c3 = x.shape
        qkv = x.reshape(b_, n, 3, self.heads, c3 // self.heads // 3).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[rpi.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c3 // 3))


class RefFAB(nn.Module):
    def __init__(self, dim: int, heads: int, m: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.m, self.shift = m, shift
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn = RefWindowAttention(dim, m, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = RefMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, size: tuple[int, int], rpi: Tensor, mask: Tensor) -> Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = self.attn(self.qkv(_partition(y, self.m)), rpi, mask if self.shift else None)
        y = _reverse(y, self.m, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class RefSE(nn.Module):
    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(nn.functional.silu(self.fc1(x.mean((2, 3), keepdim=True)))))


class RefFusedConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.fused_conv = nn.Conv2d(dim, 6 * dim, 3, 1, 1)
        self.norm1 = nn.LayerNorm(6 * dim)
        self.se = RefSE(6 * dim, 3 * dim)
        self.conv3_1x1 = nn.Conv2d(6 * dim, dim, 1)

    def forward(self, x: Tensor, size: tuple[int, int], rpi: Tensor, mask: Tensor) -> Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.pre_norm(x.view(b, h, w, c)).permute(0, 3, 1, 2)
        y = self.fused_conv(y).permute(0, 2, 3, 1)
        y = nn.functional.gelu(self.norm1(y)).permute(0, 3, 1, 2)
        y = self.conv3_1x1(self.se(y)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        return y + x


class RefPosBias(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        p = dim // 4
        self.pos_proj = nn.Linear(2, p)
        self.pos1 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(), nn.Linear(p, p))
        self.pos2 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(), nn.Linear(p, p))
        self.pos3 = nn.Sequential(nn.LayerNorm(p), nn.ReLU(), nn.Linear(p, heads))

    def forward(self, t: Tensor) -> Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(t))))


class RefTransform(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.scale = (dim // heads) ** -0.5
        self.pos = RefPosBias(dim // 4, heads)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, gh: int, gw: int) -> Tensor:
        attn = (q * self.scale) @ k.transpose(-2, -1)
        table = (
            torch.stack(torch.meshgrid(torch.arange(1 - gh, gh), torch.arange(1 - gw, gw), indexing="ij"))
            .flatten(1)
            .t()
            .float()
        )
        n = gh * gw
        bias = self.pos(table)[_rel_index(gh, gw).view(-1)].view(n, n, -1).permute(2, 0, 1)
        return (attn + bias.unsqueeze(0)).softmax(-1) @ v


class RefGridAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_transform1 = RefTransform(dim, heads)
        self.attn_transform2 = RefTransform(dim, heads)

    def forward(self, qkv: Tensor, grid: Tensor, gh: int, gw: int) -> Tensor:
        b_, n, c = grid.shape
        qkv = qkv.reshape(b_, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        g = grid.reshape(b_, n, self.heads, -1).permute(0, 2, 1, 3)
        t = self.attn_transform1(g, qkv[1], qkv[2], gh, gw)
        return self.attn_transform2(qkv[0], g, t, gh, gw).transpose(1, 2).reshape(b_, n, c)


def _shuffle(x: Tensor, i: int) -> Tensor:  # (b, h, w, c) -> (b*i*i, gh*gw, c)
    _, h, w, c = x.shape
    x = x.view(-1, h // i, i, w // i, i, c).permute(0, 2, 4, 1, 3, 5).contiguous()
    return x.view(-1, (h // i) * (w // i), c)


def _unshuffle(x: Tensor, b: int, h: int, w: int, i: int) -> Tensor:
    x = x.view(b, i, i, h // i, w // i, -1).permute(0, 3, 1, 4, 2, 5).contiguous()
    return x.view(b, h * w, -1)


class RefGAB(nn.Module):
    def __init__(self, dim: int, heads: int, m: int, interval: int, mlp_ratio: float) -> None:
        super().__init__()
        self.m, self.shift, self.i = m, m // 2, interval
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.grid_proj = nn.Linear(dim, dim // 2)
        self.grid_attn = RefGridAttention(dim // 2, heads // 2)
        self.window_attn = RefWindowAttention(dim // 4, m, heads // 2)
        self.window_attn_s = RefWindowAttention(dim // 4, m, heads // 2)
        self.fc = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = RefMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, size: tuple[int, int], rpi: Tensor, mask: Tensor) -> Tensor:
        h, w = size
        b, _, c = x.shape
        m, s, i = self.m, self.shift, self.i
        shortcut = x
        qkv = self.qkv(x)
        x_window, x_qkv = qkv[..., : 3 * c // 2], qkv[..., 3 * c // 2 :]
        grid = self.grid_proj(_shuffle(x.view(b, h, w, c), i))
        g = self.grid_attn(_shuffle(x_qkv.reshape(b, h, w, -1), i), grid, h // i, w // i)
        g = _unshuffle(g, b, h, w, i)
        xw = x_window.reshape(b, h, w, -1)
        x_a, x_s = xw[..., : 3 * c // 4], xw[..., 3 * c // 4 :]
        a = _reverse(self.window_attn(_partition(x_a, m), rpi, None), m, h, w).reshape(b, h * w, -1)
        x_s = torch.roll(x_s, (-s, -s), (1, 2)).reshape(-1, m * m, 3 * c // 4)  # raster strips (release quirk)
        y = _reverse(self.window_attn_s(x_s, rpi, mask), m, h, w).reshape(b, h * w, -1)
        y = torch.roll(y, (s, s), (1, 2))  # rolls tokens and channels (release quirk)
        x = shortcut + self.norm1(self.fc(torch.cat([a, y, g], -1)))
        return x + self.norm2(self.mlp(x))


class RefAttenBlocks(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, m: int, interval: int, mlp_ratio: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for k in range(depth):
            if k % 2 == 0:
                blocks += [RefFusedConv(dim), RefFAB(dim, heads, m, 0, mlp_ratio)]
            else:
                blocks.append(RefFAB(dim, heads, m, m // 2, mlp_ratio))
        self.blocks = nn.ModuleList(blocks)
        self.gab = RefGAB(dim, heads, m, interval, mlp_ratio)
        self.scale = nn.Parameter(torch.randn(dim) * 0.5)


class RefRHTB(nn.Module):
    def __init__(self, dim: int, **kw: int | float) -> None:
        super().__init__()
        self.residual_group = RefAttenBlocks(dim, **kw)  # type: ignore[arg-type]
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)


class RefHMA(nn.Module):
    def __init__(
        self,
        scale: int,
        embed_dim: int,
        depths: list[int],
        num_heads: list[int],
        window_size: int,
        interval_size: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        self.m, self.scale = window_size, scale
        self.register_buffer("relative_position_index_SA", _rel_index(window_size, window_size))
        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = nn.Module()
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        self.layers = nn.ModuleList(
            RefRHTB(
                embed_dim,
                depth=d,
                heads=h,
                m=window_size,
                interval=interval_size,
                mlp_ratio=mlp_ratio,
            )
            for d, h in zip(depths, num_heads, strict=True)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, 64, 3, 1, 1), nn.LeakyReLU(inplace=True))
        ups: list[nn.Module] = []
        if scale == 3:
            ups += [nn.Conv2d(64, 576, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            for _ in range(scale.bit_length() - 1):
                ups += [nn.Conv2d(64, 256, 3, 1, 1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*ups)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        x = x - mean
        h, w = x.shape[-2:]
        assert h % self.m == 0 and w % self.m == 0
        f0 = self.conv_first(x)
        b, c = f0.shape[:2]
        mask = _mask(h, w, self.m, self.m // 2)
        rpi = self.relative_position_index_SA
        t = self.patch_embed.norm(f0.flatten(2).transpose(1, 2))
        for layer in self.layers:
            y = t
            grp = layer.residual_group
            for blk in grp.blocks:
                y = blk(y, (h, w), rpi, mask)
            y = y + grp.gab(y, (h, w), rpi, mask) * grp.scale
            y = layer.conv(y.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            t = y + t
        f = self.norm(t).transpose(1, 2).reshape(b, c, h, w)
        f = self.conv_after_body(f) + f0
        return self.conv_last(self.upsample(self.conv_before_upsample(f))) + mean
