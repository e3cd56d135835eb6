"""LPIPS (:mod:`sresolve.metrics.lpips`, Zhang et al. CVPR 2018): the plumbing around torchmetrics' network with random
backbone weights (identity, symmetry, monotonic response to noise and blur, float32 under autocast, the protocol's
rounding and shave, the data-set mean of the validation metric), and the backbone file handling (found in the torch hub
cache and copied into the network, missing → a message naming the file and folder, corrupt or mismatched → an error
naming the file)."""

from __future__ import annotations

import itertools
import logging
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sresolve.data.samples import load_sample
from sresolve.metrics import (
    LPIPS,
    LPIPSBackboneError,
    LPIPSBackboneNotFoundError,
    LPIPSMetric,
    load_lpips,
    perceptual_from_config,
    quantize,
    shave,
)
from sresolve.metrics.lpips import LPIPS_NETS, backbone_file

CROP = 128


@pytest.fixture(scope="module")
def alex() -> LPIPS:
    return load_lpips("alex", "random")


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Two 128×128 crops of held-out sample photographs, float32 in [0, 1]."""
    crops = [load_sample(n)[:CROP, 100 : 100 + CROP] for n in ("astronaut", "coffee")]
    return torch.stack([torch.from_numpy(c).permute(2, 0, 1).float() / 255 for c in crops])


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TORCH_HOME without any weights; returns its hub/checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x.dtype)
    out = F.pad(x, (radius,) * 4, mode="replicate")
    out = F.conv2d(out, g.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(out, g.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


def test_identity_symmetry_and_monotonic_distortion(alex: LPIPS, photos: torch.Tensor) -> None:
    x = photos
    same = alex(x, x)
    assert same.shape == (2,) and same.dtype == torch.float64
    assert same.abs().max().item() < 1e-7
    gen = torch.Generator().manual_seed(0)
    noisy = [(x + std * torch.randn(x.shape, generator=gen)).clamp(0, 1) for std in (0.02, 0.05, 0.1, 0.2)]
    by_noise = [alex(x, n) for n in noisy]
    # measured with the seed-0 random AlexNet (mean of the two crops): 0.0015, 0.0085, 0.0277, 0.0675
    for a, b in itertools.pairwise(by_noise):
        assert (a < b).all(), by_noise
    assert by_noise[0].min().item() > 0
    torch.testing.assert_close(alex(noisy[2], x), by_noise[2], rtol=1e-5, atol=1e-7)  # symmetric
    by_blur = [alex(x, _blur(x, s)) for s in (0.5, 1.0, 2.0)]  # measured: 0.0006, 0.0038, 0.0102
    assert all((a < b).all() for a, b in itertools.pairwise(by_blur)), by_blur
    # per image in a batch = the image alone; a 3-D image is a batch of one
    torch.testing.assert_close(alex(x[1], noisy[1][1]), by_noise[1][1:], rtol=1e-5, atol=1e-7)


def test_random_backbone_is_deterministic_and_leaves_the_rng(photos: torch.Tensor) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = load_lpips("squeeze", "random"), load_lpips("squeeze", "random")
    assert torch.equal(torch.rand(3), expected)  # building the metric consumed no random number
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert a.random_backbone and "RANDOM" in a.describe()
    assert not any(p.requires_grad for p in a.parameters()) and not a.network.training


def test_float32_outside_autocast_and_protocol(alex: LPIPS, photos: torch.Tensor) -> None:
    x, y = photos[:1], (photos[:1] * 0.9 + 0.05).clamp(0, 1)
    ref = alex(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = alex(x.bfloat16(), y.bfloat16())
    # the inputs were rounded to bf16 by the caller; the network itself ran in float32
    torch.testing.assert_close(under, alex(x.bfloat16().float(), y.bfloat16().float()), rtol=1e-6, atol=1e-8)
    assert abs(under.item() - ref.item()) < 0.05 * ref.item()
    # score = 8-bit rounding then shave, then LPIPS on RGB
    off_grid = (y + 0.4 / 255).clamp(0, 1)
    scored = alex.score(x, off_grid, crop_border=4)
    torch.testing.assert_close(scored, alex(shave(quantize(x), 4), shave(quantize(off_grid), 4)))
    assert scored.item() != pytest.approx(alex(x, off_grid).item(), rel=1e-6)
    with pytest.raises(ValueError, match="at least 31×31"):
        alex(x[..., :20, :20], y[..., :20, :20])


def test_validation_metric_is_the_mean_and_stays_out_of_state_dicts(alex: LPIPS, photos: torch.Tensor) -> None:
    metric = LPIPSMetric(alex, crop_border=4)
    noisy = (photos + 0.05 * torch.randn(photos.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    metric.update(photos[:1], noisy[:1])
    metric.update(photos[1:], noisy[1:])
    per_image = alex.score(photos, noisy, 4)
    assert metric.compute().item() == pytest.approx(per_image.mean().item(), rel=1e-9)
    assert metric.higher_is_better is False
    module = torch.nn.ModuleDict({"m": metric})
    assert module.state_dict() == {} and list(module.parameters()) == []


def test_backbone_file_from_the_hub_cache_is_loaded(empty_hub: Path, photos: torch.Tensor, alex: LPIPS) -> None:
    import torchvision

    torch.manual_seed(7)
    reference = torchvision.models.alexnet(weights=None).state_dict()
    path = empty_hub / LPIPS_NETS["alex"][1]
    torch.save(reference, path)
    assert backbone_file("alex") == path
    metric = load_lpips("alex")
    assert metric.source == str(path) and not metric.random_backbone and path.name in metric.describe()
    features = metric.network.net
    for index, slice_ in ((0, features.slice1), (3, features.slice2), (6, features.slice3), (10, features.slice5)):
        layer = getattr(slice_, str(index))  # torchmetrics keeps torchvision's layer numbers as module names
        assert torch.equal(layer.weight, reference[f"features.{index}.weight"])
        assert torch.equal(layer.bias, reference[f"features.{index}.bias"])
    random = alex  # the seed-0 random backbone
    assert not torch.equal(random.network.net.slice1[0].weight, features.slice1[0].weight)
    # an explicit path gives the same network; the linear layers are torchmetrics' shipped ones in both
    explicit = load_lpips("alex", str(path))
    assert torch.equal(explicit(photos, photos.flip(-1)), metric(photos, photos.flip(-1)))
    assert torch.equal(metric.network.lin0.model[1].weight, random.network.lin0.model[1].weight)


def test_missing_backbone_names_the_file_and_is_skipped(
    empty_hub: Path, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with pytest.raises(LPIPSBackboneNotFoundError) as info:
        load_lpips("vgg")
    assert isinstance(info.value, FileNotFoundError)
    assert "vgg16-397923af.pth" in str(info.value) and str(empty_hub) in str(info.value)
    assert "lpips_backbone=<path>" in str(info.value)
    with pytest.raises(FileNotFoundError, match=re.escape("lpips_backbone='/nowhere/alex.pth': no such file")):
        load_lpips("alex", "/nowhere/alex.pth")
    with caplog.at_level(logging.WARNING):
        metrics = perceptual_from_config(lpips=True, niqe=False, prefix="val.")
    assert metrics.lpips is None and not metrics
    lines = [r.getMessage() for r in caplog.records if "LPIPS" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("LPIPS skipped:")
    assert "alexnet-owt-7be5be79.pth" in lines[0] and str(empty_hub) in lines[0] and "val.lpips_backbone" in lines[0]


def test_corrupt_or_mismatched_backbone_names_the_file(empty_hub: Path, tmp_path: Path) -> None:
    import torchvision

    corrupt = empty_hub / LPIPS_NETS["alex"][1]
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(LPIPSBackboneError, match=re.escape(f"{corrupt}: cannot read the LPIPS-alex backbone")):
        load_lpips("alex")
    wrong = tmp_path / "squeeze_as_alex.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), wrong)
    with pytest.raises(
        LPIPSBackboneError, match=re.escape("squeeze_as_alex.pth: does not fit the LPIPS-alex backbone")
    ) as info:
        load_lpips("alex", wrong)
    assert "shape mismatch" in str(info.value) and "features.3.weight" in str(info.value)
    not_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_dict)
    with pytest.raises(LPIPSBackboneError, match=re.escape("tensor.pth: expected a state dict")):
        load_lpips("squeeze", not_dict)
    # errors of the config keys name the key
    with pytest.raises(ValueError, match=r"lpips_net='resnet': unknown LPIPS network; allowed: \['alex', 'squeeze'"):
        perceptual_from_config(lpips=True, lpips_net="resnet")
    with pytest.raises(ValueError, match=re.escape("val.lpips must be true or false, got 'yes'")):
        perceptual_from_config(lpips="yes", prefix="val.")
    with pytest.raises(ValueError, match="unknown LPIPS network"):
        load_lpips("alexnet", "random")
