"""×8 geometric self-ensemble: exact inverse transforms, equals the explicit average, wired into sresolve-test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from sresolve import archs
from sresolve.ops.ensemble import TRANSFORMS, apply_transform, invert_transform, self_ensemble
from sresolve.ops.tiling import upscale


def test_transforms_are_the_eight_symmetries_and_invert_exactly() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    images = {tuple(apply_transform(x, k, f).flatten().tolist()) for k, f in TRANSFORMS}
    assert len(TRANSFORMS) == 8 and len(images) == 8
    for k, f in TRANSFORMS:
        assert torch.equal(invert_transform(apply_transform(x, k, f), k, f), x)


def test_equivariant_network_is_unchanged_and_general_network_gets_the_mean() -> None:
    x = torch.rand(1, 3, 6, 9, dtype=torch.float64)
    nearest = lambda t: t.repeat_interleave(2, -1).repeat_interleave(2, -2)  # noqa: E731 - equivariant
    torch.testing.assert_close(self_ensemble(nearest, x), nearest(x), rtol=0, atol=1e-12)
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)).double()
    with torch.no_grad():
        manual = (
            conv(x)
            + conv(x.flip(-1)).flip(-1)
            + sum(torch.rot90(conv(torch.rot90(x, k, (-2, -1))), -k, (-2, -1)) for k in (1, 2, 3))
            + sum(torch.rot90(conv(torch.rot90(x.flip(-1), k, (-2, -1))), -k, (-2, -1)).flip(-1) for k in (1, 2, 3))
        ) / 8
        assert (self_ensemble(conv, x) - conv(x)).abs().max() > 1e-3  # the ensemble really changes the output
    torch.testing.assert_close(self_ensemble(conv, x), manual, rtol=0, atol=1e-12)


def test_tta_with_tiling_on_a_non_square_image() -> None:
    torch.manual_seed(0)
    net = archs.create("safmn", scale=2, dim=8, n_blocks=1).eval()
    x = torch.rand(1, 3, 40, 72)
    plain = upscale(net, x, tta=True)
    tiled = upscale(net, x, tile=32, overlap=24, tta=True)
    assert plain.shape == tiled.shape == (1, 3, 80, 144)
    assert (plain - tiled).abs().mean() < 1e-3


def test_sresolve_test_reports_the_plus_row(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    from sresolve.checkpoints import export_basicsr
    from sresolve.cli.test import run_test
    from sresolve.config import ConfigError

    torch.manual_seed(0)
    net = archs.create("safmn", scale=4, dim=8, n_blocks=1)
    with torch.no_grad():  # an unsaturated output, so that the ensemble's change survives the clamp
        net.to_img[0].weight.mul_(0.05)
        net.to_img[0].bias.fill_(0.5)
    export_basicsr(tmp_path / "w.pth", net.state_dict())
    common = [
        "model.dim=8",
        "model.n_blocks=1",
        "data=samples_holdout",
        f"ckpt={tmp_path / 'w.pth'}",
        "device=cpu",
        "bicubic_baseline=false",
    ]
    plain = run_test(make_cfg("test", common, tmp_path / "a"))["results"]
    plus = run_test(make_cfg("test", [*common, "tta=x8"], tmp_path / "b"))["results"]
    assert [r.method for r in plain] == ["safmn"] and [r.method for r in plus] == ["safmn+"]
    assert plus[0].mean_psnr != pytest.approx(plain[0].mean_psnr, abs=1e-6)
    with pytest.raises(ConfigError, match="tta='x4'"):
        run_test(make_cfg("test", [*common, "tta=x4"], tmp_path / "c"))
