"""HAT through the toolkit: config → network → weights → sresolve-test with tiling and ×8 self-ensemble."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from sresolve import archs
from sresolve.checkpoints import export_basicsr, load_model
from sresolve.cli.test import run_test

TINY = [
    "model=hat",
    "model.embed_dim=24",
    "model.depths=[1,1]",
    "model.num_heads=[2,2]",
    "model.window_size=8",
    "model.squeeze_factor=6",
    "model.drop_path_rate=0.0",
]


@pytest.fixture(scope="module")
def hat_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = archs.create(
        "hat",
        scale=4,
        embed_dim=24,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=8,
        squeeze_factor=6,
        drop_path_rate=0.0,
    )
    with torch.no_grad():  # keep the random output in range so the metrics see real differences
        net.conv_last.weight.mul_(0.05)
        net.conv_last.bias.fill_(0.5)
    path = tmp_path_factory.mktemp("hat") / "HAT_tiny_SRx4.pth"
    export_basicsr(path, net.state_dict(), net.state_dict())
    return path


def test_hat_benchmark_table_tiled_equals_untiled(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, hat_weights: Path
) -> None:
    common = [*TINY, "data=samples_holdout", f"ckpt={hat_weights}", "device=cpu", "bicubic_baseline=false"]
    full = run_test(make_cfg("test", [*common, "max_pixels=10000000"], tmp_path / "full"))["results"][0]
    # 4096 LR px per tile (64 x 64, window-aligned) on 128 x 128 .. 100 x 150 LR images: every image is tiled
    tiled = run_test(make_cfg("test", [*common, "max_pixels=4096", "tile_overlap=32"], tmp_path / "tiled"))["results"][
        0
    ]
    assert full.names == tiled.names == ["astronaut", "chelsea", "coffee"]
    for a, b in zip(full.psnr, tiled.psnr, strict=True):
        assert abs(a - b) < 0.05
    plus = run_test(make_cfg("test", [*common, "tta=x8"], tmp_path / "plus"))["results"][0]
    assert plus.method == "hat+" and all(p > 0 for p in plus.psnr)


def test_hat_weights_round_trip_through_load_model(hat_weights: Path) -> None:
    net = load_model(hat_weights)
    assert (type(net).__name__, net.scale, net.tile_align) == ("HAT", 4, 8)
    x = torch.rand(1, 3, 19, 27)  # not a multiple of the window: padded inside, cropped after
    with torch.no_grad():
        assert net(x).shape == (1, 3, 76, 108)
