"""Tiled inference with overlap blending, for images too large to upscale in one pass.

Tiles are laid out in LR space with a fixed overlap; each tile is upscaled on its own and written into an HR canvas
with a separable weight that is 0 within ``margin`` pixels of an inner tile edge and ramps linearly to 1 across the
middle of the overlap. The two ramps of neighbouring tiles sum to exactly 1, so the result is a convex blend, and it
equals the untiled output when ``margin`` (in LR px) is at least the network's receptive-field radius: every pixel
with a non-zero weight was then computed with its full context. ``margin = overlap * (1 - blend) / 2``.
Tile origins are multiples of ``align`` so that size-dependent pooling grids (SAFMN's adaptive pooling, window
partitions) line up with those of the whole image. Unlike the official HAT ``tile_process``, errors are not
swallowed, and tiles are blended, not hard-pasted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor


def _starts(length: int, tile: int, overlap: int, align: int) -> list[int]:
    """Tile origins on one axis: stride ``tile - overlap`` rounded down to ``align``; the last tile ends at the edge."""
    if length <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    starts = list(range(0, length - tile, stride))
    last = (length - tile) // align * align
    if last > starts[-1]:
        starts.append(last)
    return starts


def _ramp(n: int, lo_neighbour: bool, hi_neighbour: bool, margin: float, width: float) -> Tensor:
    """1-D weight of length ``n``: 0 within ``margin`` of an edge with a neighbour, then a linear ramp of ``width``."""
    pos = torch.arange(n, dtype=torch.float64) + 0.5
    w = torch.ones(n, dtype=torch.float64)
    if lo_neighbour:
        w = torch.minimum(w, ((pos - margin) / width).clamp(0, 1))
    if hi_neighbour:
        w = torch.minimum(w, ((n - pos - margin) / width).clamp(0, 1))
    return w


def iter_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(top, left, h, w)`` LR tiles covering an ``height × width`` image; last tiles absorb the remainder."""
    ys, xs = _starts(height, tile, overlap, align), _starts(width, tile, overlap, align)
    for i, top in enumerate(ys):
        h = height - top if i == len(ys) - 1 else tile
        for j, left in enumerate(xs):
            w = width - left if j == len(xs) - 1 else tile
            yield top, left, h, w


@torch.no_grad()
def tiled_forward(
    fn: Callable[[Tensor], Tensor],
    lr: Tensor,
    scale: int,
    tile: int = 256,
    overlap: int = 32,
    blend: float = 0.5,
    align: int = 8,
    out_device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Upscale ``lr`` (B×C×H×W) tile by tile with ``fn`` and blend the overlaps; returns B×C×sH×sW.

    Args:
        fn: the network (or any callable mapping an LR tile to its ×``scale`` output).
        tile: LR tile side in pixels (the last row/column of tiles may be up to ``align - 1`` px larger).
        overlap: LR pixels shared by neighbouring tiles.
        blend: fraction of the overlap used for the linear cross-fade; the rest is a margin that is discarded.
        align: tile origins are multiples of this (keep it a multiple of the network's pooling/window grid).
        out_device: where the HR canvas lives (default: the input's device); use "cpu" to bound GPU memory.
        progress: called with 1 after each tile (e.g. ``tqdm.update``).
    """
    if lr.ndim != 4:
        raise ValueError(f"tiled_forward expects a B×C×H×W tensor, got shape {tuple(lr.shape)}")
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"tile must be > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if not 0.0 < blend <= 1.0:
        raise ValueError(f"blend must be in (0, 1], got {blend}")
    if align <= 0 or tile % align:
        raise ValueError(f"tile ({tile}) must be a positive multiple of align ({align})")
    b, _, height, width = lr.shape
    if height <= tile and width <= tile:
        out = fn(lr)
        if progress is not None:
            progress(1)
        return out if out_device is None else out.to(out_device)
    device = torch.device(out_device) if out_device is not None else lr.device
    margin = overlap * (1.0 - blend) / 2.0 * scale
    ramp_width = max(overlap * blend * scale, 1e-6)
    canvas: Tensor | None = None
    weight = torch.zeros(1, 1, height * scale, width * scale, dtype=torch.float64, device=device)
    for top, left, h, w in iter_tiles(height, width, tile, overlap, align):
        sr = fn(lr[:, :, top : top + h, left : left + w])
        if sr.shape[-2:] != (h * scale, w * scale):
            raise RuntimeError(f"network returned {tuple(sr.shape[-2:])} for a {h}×{w} tile at ×{scale}")
        if canvas is None:
            canvas = torch.zeros(b, sr.shape[1], height * scale, width * scale, dtype=torch.float64, device=device)
        wy = _ramp(h * scale, top > 0, top + h < height, margin, ramp_width)
        wx = _ramp(w * scale, left > 0, left + w < width, margin, ramp_width)
        wt = (wy[:, None] * wx[None, :]).to(device)
        ys, xs = slice(top * scale, (top + h) * scale), slice(left * scale, (left + w) * scale)
        canvas[:, :, ys, xs] += sr.to(device, torch.float64) * wt
        weight[:, :, ys, xs] += wt
        if progress is not None:
            progress(1)
    assert canvas is not None
    return (canvas / weight).to(lr.dtype)


def num_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> int:
    """How many tiles :func:`tiled_forward` runs for an image of this size."""
    if height <= tile and width <= tile:
        return 1
    return sum(1 for _ in iter_tiles(height, width, tile, overlap, align))


def auto_tile(height: int, width: int, max_pixels: int, align: int = 8) -> int | None:
    """Tile side for a pixel budget: ``None`` (no tiling) when the image fits, else the largest aligned square side."""
    if height * width <= max_pixels:
        return None
    side = math.isqrt(max_pixels) // align * align
    return max(side, 4 * align)


def _tile_plan(
    net: torch.nn.Module, lr: Tensor, tile: int | None, overlap: int, max_pixels: int | None
) -> tuple[int | None, int, int]:
    """``(tile, overlap, align)`` for ``lr``: the tile from ``tile`` or the pixel budget, rounded to the network's
    ``tile_align`` (its window / pooling grid), the overlap capped below the tile; ``tile=None``: no tiling."""
    align = int(getattr(net, "tile_align", 8))
    if tile is None and max_pixels is not None:
        tile = auto_tile(lr.shape[-2], lr.shape[-1], max_pixels, align)
    if tile is None:
        return None, overlap, align
    tile = max(align, tile // align * align)
    return tile, min(overlap, tile - align), align


@torch.no_grad()
def upscale(
    net: torch.nn.Module,
    lr: Tensor,
    *,
    scale: float | None = None,
    tile: int | None = None,
    overlap: int = 32,
    max_pixels: int | None = None,
    query_tile: int | None = None,
    out_device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
    tta: bool = False,
) -> Tensor:
    """Run an SR network on a B×3×H×W batch in [0,1], tiled when ``tile`` is set or the image exceeds ``max_pixels``,
    optionally as the ×8 geometric self-ensemble (``tta``, :mod:`sresolve.ops.ensemble`; each transform is tiled).

    The one inference path shared by validation, ``sresolve-test`` and ``sresolve-upscale``. The output is clamped to
    [0, 1] (BasicSR clamps in ``tensor2img``); quantisation to 8 bits is left to the metrics / the image writer.

    ``scale``: the output scale. Fixed-scale networks accept only their own (``None`` = ``net.scale``);
    arbitrary-scale networks (``net.arbitrary_scale``, e.g. EQSR) produce ``round(H·s) × round(W·s)`` pixels, see
    :func:`upscale_arbitrary` (``query_tile`` only applies to them).
    """
    if tta:
        from sresolve.ops.ensemble import self_ensemble

        def one(x: Tensor) -> Tensor:
            return upscale(
                net,
                x,
                scale=scale,
                tile=tile,
                overlap=overlap,
                max_pixels=max_pixels,
                query_tile=query_tile,
                out_device=out_device,
                progress=progress,
            )

        return self_ensemble(one, lr).clamp_(0.0, 1.0)
    if getattr(net, "arbitrary_scale", False):
        return upscale_arbitrary(
            net,
            lr,
            scale=scale,
            tile=tile,
            overlap=overlap,
            max_pixels=max_pixels,
            query_tile=query_tile,
            out_device=out_device,
            progress=progress,
        )
    if scale is not None and float(scale) != float(net.scale):
        raise ValueError(
            f"{type(net).__name__} is a fixed x{net.scale} network; it cannot upscale by {scale:g} "
            "(use an arbitrary-scale model such as eqsr)"
        )
    scale = int(net.scale)
    tile, overlap, align = _tile_plan(net, lr, tile, overlap, max_pixels)
    if tile is None:
        out = net(lr)
        if progress is not None:
            progress(1)
    else:
        out = tiled_forward(
            net, lr, scale, tile=tile, overlap=overlap, align=align, out_device=out_device, progress=progress
        )
    return out.clamp_(0.0, 1.0)


@torch.no_grad()
def upscale_arbitrary(
    net: torch.nn.Module,
    lr: Tensor,
    *,
    scale: float | None = None,
    tile: int | None = None,
    overlap: int = 32,
    max_pixels: int | None = None,
    query_tile: int | None = None,
    out_device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Arbitrary-scale inference (EQSR, spec choice E5) with bounded memory: output ``round(H·s) × round(W·s)``.

    Two stages, each tiled on its own: the backbone ``net.features`` on LR tiles with overlap blending, exactly like
    :func:`tiled_forward` at scale 1 (``tile`` / ``max_pixels``; approximate like every tiled transformer, the
    margin sets the error), then the query decoder ``net.decode`` on tiles of the HR query grid (``query_tile``,
    default ``isqrt(max_pixels) // 2`` when the output has more than that many pixels squared), which is exact: the
    decoder's receptive field is covered by its halo and its global channel statistics are gathered first.
    """
    from sresolve.ops.coords import make_coord

    s = float(net.scale if scale is None else scale)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    b, _, height, width = lr.shape
    out_h, out_w = net.output_size((height, width), s)
    code = net.scale_code_of(b, lr.device, s, None, out_h)
    tile, overlap, align = _tile_plan(net, lr, tile, overlap, max_pixels)
    if tile is None:
        feat = net.features(lr, code)
    else:
        feat = tiled_forward(
            lambda t: net.features(t, code), lr, 1, tile=tile, overlap=overlap, align=align, progress=progress
        )
    if query_tile is None and max_pixels is not None and out_h * out_w > max_pixels:
        query_tile = max(64, math.isqrt(max_pixels) // 2)
    coord = make_coord((out_h, out_w), device=lr.device).expand(b, out_h, out_w, 2)
    out = net.decode(feat, coord, query_tile=query_tile)
    if progress is not None and tile is None:
        progress(1)
    out = out.clamp_(0.0, 1.0)
    return out if out_device is None else out.to(out_device)
