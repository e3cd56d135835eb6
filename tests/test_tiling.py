"""Tiled inference: blending weights form a partition of unity and the tiled output equals the untiled one when the
discarded margin covers the receptive field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sresolve import archs
from sresolve.ops.tiling import _ramp, auto_tile, iter_tiles, num_tiles, tiled_forward, upscale


class LocalSR(nn.Module):
    """A ×2 network with a known receptive-field radius of 3 LR pixels (three 3×3 convs)."""

    scale = 2
    tile_align = 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "align"),
    [(50, 77, 16, 6, 1), (64, 64, 32, 8, 8), (33, 100, 24, 8, 8), (10, 10, 16, 4, 1)],
)
def test_tiles_cover_image_and_weights_partition_unity(
    height: int, width: int, tile: int, overlap: int, align: int
) -> None:
    cover = torch.zeros(height, width)
    for top, left, h, w in iter_tiles(height, width, tile, overlap, align):
        assert top % align == 0 and left % align == 0
        assert h >= min(tile, height) and w >= min(tile, width)
        cover[top : top + h, left : left + w] += 1
    assert cover.min() >= 1
    ones = lambda x: torch.ones(x.shape[0], 3, x.shape[2] * 2, x.shape[3] * 2, dtype=x.dtype)  # noqa: E731
    out = tiled_forward(ones, torch.rand(1, 3, height, width, dtype=torch.float64), 2, tile, overlap, align=align)
    torch.testing.assert_close(out, torch.ones_like(out), rtol=0, atol=1e-12)


def test_ramps_of_neighbours_sum_to_one() -> None:
    overlap, scale = 8, 2
    margin, width = overlap * 0.25 * scale, overlap * 0.5 * scale
    left_tile = _ramp(40, False, True, margin, width)
    right_tile = _ramp(40, True, False, margin, width)
    shared = overlap * scale
    torch.testing.assert_close(left_tile[-shared:] + right_tile[:shared], torch.ones(shared, dtype=torch.float64))
    assert left_tile[-int(margin) :].eq(0).all() and right_tile[: int(margin)].eq(0).all()


def test_tiled_equals_untiled_when_margin_covers_receptive_field() -> None:
    net = LocalSR().double().eval()
    x = torch.rand(2, 3, 45, 70, dtype=torch.float64)
    with torch.no_grad():
        full = net(x)
    # margin = overlap * (1 - blend) / 2 = 16 * 0.5 / 2 = 4 >= receptive radius 3
    tiled = tiled_forward(net, x, 2, tile=20, overlap=16, blend=0.5, align=1)
    assert (tiled - full).abs().max() < 1e-12
    # a margin below the receptive field is measurably different (the test can fail)
    rough = tiled_forward(net, x, 2, tile=20, overlap=4, blend=1.0, align=1)
    assert (rough - full).abs().max() > 1e-4


def test_safmn_tiled_matches_untiled_within_1e4() -> None:
    """A 2-block SAFMN (receptive radius about 33 LR px, measured below): grid-aligned tiles (align 8) whose discarded
    margin (80 * (1 - 0.1) / 2 = 36 px) covers it give the untiled output."""
    torch.manual_seed(1)
    net = archs.create("safmn", scale=2, dim=16, n_blocks=2).eval()
    x = torch.rand(1, 3, 128, 200)
    with torch.no_grad():
        full = net(x)
        poked = x.clone()
        poked[..., 64, 100] += 1
        reach = (net(poked) - full).abs().sum(1)[0].gt(1e-7).nonzero()
    radius = max((reach[:, 0].max() // 2 - 64).item(), (reach[:, 1].max() // 2 - 100).item())
    assert 20 <= radius <= 36
    tiled = tiled_forward(net, x, 2, tile=120, overlap=80, blend=0.1, align=8)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max() < 1e-4
    assert upscale(net, x, tile=96, overlap=64).shape == full.shape


def test_auto_tile_and_bad_arguments() -> None:
    assert auto_tile(100, 100, 100 * 100) is None
    assert auto_tile(1000, 1000, 256 * 256, align=16) == 256
    assert num_tiles(10, 10, 16, 4) == 1
    with pytest.raises(ValueError, match="overlap < tile"):
        tiled_forward(nn.Identity(), torch.rand(1, 3, 40, 40), 1, tile=16, overlap=16)
    with pytest.raises(ValueError, match="B×C×H×W"):
        tiled_forward(nn.Identity(), torch.rand(3, 40, 40), 1, tile=16, overlap=4)
    with pytest.raises(ValueError, match="multiple of align"):
        tiled_forward(nn.Identity(), torch.rand(1, 3, 40, 40), 1, tile=20, overlap=4, align=8)
