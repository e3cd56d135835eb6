"""Tests of the evaluation protocol (`sresolve.metrics`): goldens, independent references, DDP reduction, bad input.

Reference numbers (`/work/shared/specs/frameworks.md` §2.4-2.6, §4.5): astronaut[:504, :504], LR = MATLAB bicubic
×1/4 rounded to 8 bit, SR = MATLAB bicubic ×4 of LR rounded, shave 4, BT.601 studio Y.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sresolve.metrics import (
    PSNRY,
    SSIM_C1,
    SSIM_C2,
    SSIMY,
    EvalProtocol,
    gaussian_window,
    psnr_rgb,
    psnr_y,
    quantize,
    rgb_to_y,
    shave,
    ssim_rgb,
    ssim_y,
)

# Golden values of the float64 (MATLAB-exact) pipeline: our imresize matches MATLAB's double arithmetic, so these are
# the numbers MATLAB's Evaluate_PSNR_SSIM.m would give on MATLAB-made LR/SR images.
GOLD_PSNR_Y = 26.83621613171624
GOLD_SSIM_Y = 0.8421248674815253
GOLD_PSNR_RGB = 25.334737116537557
GOLD_SSIM_RGB = 0.8135965626851644
# The survey's numbers come from BasicSR's float32 resize port. float32 rounding moves LR values that lie within
# ~1e-5 of a half 8-bit level to the other level (the nearest here is 12.5000005/255), which shifts the SSIM by ~2e-7.
BSR_PSNR_Y = 26.836217
BSR_SSIM_Y = 0.8421250404
BSR_PSNR_RGB = 25.3347
BSR_PSNR_Y_FULL_RANGE = 25.514294
STUDIO_TO_FULL_DB = 20.0 * math.log10(255.0 / 219.0)  # 1.3219 dB: kornia/pyiqa full-range luma vs studio Y


# ---------------------------------------------------------------------------------------------------------------------
# helpers and fixtures


def _np_y(img: np.ndarray) -> np.ndarray:
    """Independent numpy BT.601 studio Y of an RGB (3, H, W) array in [0, 1], on the [0, 255] scale."""
    return 16.0 + 65.481 * img[0] + 128.553 * img[1] + 24.966 * img[2]


def _np_round8(img: np.ndarray) -> np.ndarray:
    """The uint8 round trip of BasicSR's tensor2img, in numpy."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8).astype(np.float64) / 255.0


def _np_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0**2 / mse))


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0)
    )


def _pair(n: int, h: int, w: int, seed: int, noise: float = 0.04) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random HR images in [0, 1] (8-bit levels) and an SR = HR + noise (not quantised)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, h // 4 + 2, w // 4 + 2, generator=g, dtype=torch.float64)
    hr = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    hr = quantize(hr + 0.05 * torch.rand(n, 3, h, w, generator=g, dtype=torch.float64))
    sr = (hr + noise * torch.randn(n, 3, h, w, generator=g, dtype=torch.float64)).clamp(-0.05, 1.05)
    return sr, hr


def _real_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Real photographs with a blur-and-upsample SR stand-in that does not depend on sresolve's resizer."""
    import skimage.data

    pairs = []
    for img in (skimage.data.chelsea()[:96, :120], skimage.data.coffee()[100:180, 200:300]):
        hr = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).double()[None] / 255.0
        lr = F.avg_pool2d(hr, 2)
        sr = F.interpolate(lr, size=hr.shape[-2:], mode="bilinear", align_corners=False)
        pairs.append((sr, hr))
    return pairs


@pytest.fixture(scope="module")
def astronaut() -> tuple[torch.Tensor, torch.Tensor]:
    """(SR, HR), each 3×504×504 float64 in [0, 1] at 8-bit levels, made with the MATLAB-exact bicubic."""
    import skimage.data

    from sresolve.data.degradation import imresize

    hr = torch.from_numpy(skimage.data.astronaut()[:504, :504]).permute(2, 0, 1).to(torch.float64) / 255.0
    lr = quantize(imresize(hr, 1 / 4))
    sr = quantize(imresize(lr, 4))
    assert lr.shape == (3, 126, 126) and sr.shape == hr.shape
    return sr, hr


# ---------------------------------------------------------------------------------------------------------------------
# goldens


def test_golden_astronaut_y(astronaut: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = astronaut
    psnr, ssim = psnr_y(sr, hr, 4), ssim_y(sr, hr, 4)
    assert psnr.dtype == ssim.dtype == torch.float64 and psnr.shape == ssim.shape == (1,)
    assert psnr.item() == pytest.approx(GOLD_PSNR_Y, abs=1e-8)
    assert ssim.item() == pytest.approx(GOLD_SSIM_Y, abs=1e-10)
    # the survey's BasicSR numbers (float32 resize port) agree up to the float32 tie-rounding of a few LR pixels
    assert psnr.item() == pytest.approx(BSR_PSNR_Y, abs=1e-5)
    assert ssim.item() == pytest.approx(BSR_SSIM_Y, abs=5e-7)


def test_golden_astronaut_rgb_and_protocol(astronaut: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = astronaut
    assert psnr_rgb(sr, hr, 4).item() == pytest.approx(GOLD_PSNR_RGB, abs=1e-8)
    assert psnr_rgb(sr, hr, 4).item() == pytest.approx(BSR_PSNR_RGB, abs=1e-4)
    assert ssim_rgb(sr, hr, 4).item() == pytest.approx(GOLD_SSIM_RGB, abs=1e-10)
    scores = EvalProtocol(crop_border=4).score(sr, hr)
    assert set(scores) == {"psnr", "ssim"}
    assert scores["psnr"].item() == pytest.approx(GOLD_PSNR_Y, abs=1e-8)
    assert scores["ssim"].item() == pytest.approx(GOLD_SSIM_Y, abs=1e-10)
    rgb = EvalProtocol(crop_border=4, y_channel=False).score(sr, hr)
    assert rgb["psnr"].item() == pytest.approx(GOLD_PSNR_RGB, abs=1e-8)
    assert rgb["ssim"].item() == pytest.approx(GOLD_SSIM_RGB, abs=1e-10)
    # each protocol step changes the numbers: the goldens catch a dropped shave
    assert abs(psnr_y(sr, hr, 0).item() - GOLD_PSNR_Y) > 0.01
    assert abs(ssim_y(sr, hr, 0).item() - GOLD_SSIM_Y) > 1e-4


def test_golden_matches_skimage_and_numpy_on_astronaut(astronaut: tuple[torch.Tensor, torch.Tensor]) -> None:
    sr, hr = astronaut
    y_sr = _np_y(_np_round8(sr.numpy()))[4:-4, 4:-4]
    y_hr = _np_y(_np_round8(hr.numpy()))[4:-4, 4:-4]
    assert _np_psnr(y_sr, y_hr) == pytest.approx(GOLD_PSNR_Y, abs=1e-9)
    assert _sk_ssim(y_sr, y_hr) == pytest.approx(GOLD_SSIM_Y, abs=1e-10)
    # RGB: BasicSR's test_y_channel=false (PSNR over all channels, SSIM = mean of per-channel SSIM)
    s, h = (_np_round8(t.numpy())[:, 4:-4, 4:-4] * 255.0 for t in (sr, hr))
    assert _np_psnr(s, h) == pytest.approx(GOLD_PSNR_RGB, abs=1e-9)
    assert np.mean([_sk_ssim(s[c], h[c]) for c in range(3)]) == pytest.approx(GOLD_SSIM_RGB, abs=1e-10)


def test_default_libraries_would_be_caught(astronaut: tuple[torch.Tensor, torch.Tensor]) -> None:
    """torchmetrics' and kornia's defaults are not the protocol; switching to them must break the goldens."""
    import kornia
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    sr, hr = astronaut
    y_sr, y_hr = (rgb_to_y(t)[None, :, 4:-4, 4:-4] for t in (sr, hr))
    # torchmetrics default: reflect padding + mean over the whole map -> +0.0024
    tm_default = tm_ssim(y_sr, y_hr, data_range=255.0).item()
    assert tm_default - GOLD_SSIM_Y == pytest.approx(0.00236, abs=5e-5)
    # ... and its exact recipe ('valid' crop of the full map) is our number
    _, tm_map = tm_ssim(y_sr, y_hr, data_range=255.0, return_full_image=True)
    assert tm_map[..., 5:-5, 5:-5].mean().item() == pytest.approx(GOLD_SSIM_Y, abs=1e-12)
    # kornia: 'valid' SSIM on our Y is exact, its default 'same' padding is not
    assert kornia.metrics.ssim(y_sr, y_hr, 11, max_val=255.0, padding="valid").mean().item() == pytest.approx(
        GOLD_SSIM_Y, abs=1e-12
    )
    assert kornia.metrics.ssim(y_sr, y_hr, 11, max_val=255.0).mean().item() - GOLD_SSIM_Y > 2e-3
    # kornia's full-range (JPEG) luma is exactly 20 log10(255/219) = 1.3219 dB below studio Y
    k_sr, k_hr = (kornia.color.rgb_to_y(t[None])[..., 4:-4, 4:-4] * 255.0 for t in (sr, hr))
    k_psnr = kornia.metrics.psnr(k_sr, k_hr, 255.0).item()
    assert k_psnr == pytest.approx(GOLD_PSNR_Y - STUDIO_TO_FULL_DB, abs=1e-9)
    assert k_psnr == pytest.approx(BSR_PSNR_Y_FULL_RANGE, abs=1e-5)
    assert abs(STUDIO_TO_FULL_DB - 1.3219) < 1e-4


# ---------------------------------------------------------------------------------------------------------------------
# independent references on random and real images


@pytest.mark.parametrize("crop_border", [0, 2, 3])
def test_matches_skimage_and_numpy_on_random_images(crop_border: int) -> None:
    sr, hr = _pair(3, 40, 52, seed=crop_border)
    ours_p, ours_s = psnr_y(sr, hr, crop_border), ssim_y(sr, hr, crop_border)
    ours_pr, ours_sr = psnr_rgb(sr, hr, crop_border), ssim_rgb(sr, hr, crop_border)
    assert ours_p.shape == ours_s.shape == (3,)
    for i in range(3):
        s, h = _np_round8(sr[i].numpy()), _np_round8(hr[i].numpy())
        if crop_border:
            s, h = (
                s[:, crop_border:-crop_border, crop_border:-crop_border],
                h[:, crop_border:-crop_border, crop_border:-crop_border],
            )
        assert ours_p[i].item() == pytest.approx(_np_psnr(_np_y(s), _np_y(h)), abs=1e-9)
        assert ours_s[i].item() == pytest.approx(_sk_ssim(_np_y(s), _np_y(h)), abs=1e-10)
        assert ours_pr[i].item() == pytest.approx(_np_psnr(s * 255.0, h * 255.0), abs=1e-9)
        ref_rgb = np.mean([_sk_ssim(s[c] * 255.0, h[c] * 255.0) for c in range(3)])
        assert ours_sr[i].item() == pytest.approx(ref_rgb, abs=1e-10)


def test_matches_skimage_on_real_images() -> None:
    for sr, hr in _real_pairs():
        s, h = _np_round8(sr[0].numpy()), _np_round8(hr[0].numpy())
        ssim = ssim_y(sr, hr, 2).item()
        assert ssim == pytest.approx(_sk_ssim(_np_y(s)[2:-2, 2:-2], _np_y(h)[2:-2, 2:-2]), abs=1e-10)
        assert psnr_y(sr, hr, 2).item() == pytest.approx(_np_psnr(_np_y(s)[2:-2, 2:-2], _np_y(h)[2:-2, 2:-2]), abs=1e-9)
        assert 0.3 < ssim < 0.99


def test_quantize_inputs_flag() -> None:
    sr, hr = _pair(2, 32, 32, seed=7)
    q = psnr_y(sr, hr, 2)
    assert torch.allclose(q, psnr_y(quantize(sr), hr, 2, quantize_inputs=False), rtol=0, atol=1e-12)
    raw = psnr_y(sr, hr, 2, quantize_inputs=False)
    s, h = sr.numpy(), hr.numpy()
    for i in range(2):
        assert raw[i].item() == pytest.approx(_np_psnr(_np_y(s[i])[2:-2, 2:-2], _np_y(h[i])[2:-2, 2:-2]), abs=1e-9)
    assert (raw - q).abs().min() > 1e-4  # rounding is part of the protocol
    raw_ssim = ssim_y(sr, hr, 2, quantize_inputs=False)
    assert raw_ssim[0].item() == pytest.approx(_sk_ssim(_np_y(s[0])[2:-2, 2:-2], _np_y(h[0])[2:-2, 2:-2]), abs=1e-10)


# ---------------------------------------------------------------------------------------------------------------------
# building blocks


def test_rgb_to_y_pure_colours_and_range() -> None:
    colours = {
        (0, 0, 0): 16.0,
        (1, 1, 1): 235.0,
        (1, 0, 0): 16.0 + 65.481,
        (0, 1, 0): 16.0 + 128.553,
        (0, 0, 1): 16.0 + 24.966,
        (1, 1, 0): 16.0 + 65.481 + 128.553,
    }
    for rgb, expected in colours.items():
        img = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, 2, 3)
        y = rgb_to_y(img)
        assert y.shape == (1, 2, 3) and y.dtype == torch.float64
        assert torch.allclose(y, torch.full_like(y, expected), rtol=0, atol=1e-12)
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    y = rgb_to_y(x)
    assert y.shape == (4, 1, 16, 16)
    assert y.min() >= 16.0 and y.max() <= 235.0
    assert torch.allclose(y[:, 0], torch.from_numpy(np.stack([_np_y(img) for img in x.numpy()])), rtol=0, atol=1e-12)
    # uint8 input = 8-bit levels
    u8 = torch.randint(0, 256, (3, 5, 5), dtype=torch.uint8)
    assert torch.allclose(rgb_to_y(u8), rgb_to_y(u8.double() / 255.0), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\).*\(4, 5, 5\)"):
        rgb_to_y(torch.rand(4, 5, 5))


def test_quantize_is_the_uint8_round_trip() -> None:
    x = torch.cat([torch.rand(2000, dtype=torch.float64) * 1.2 - 0.1, torch.tensor([0.5 / 255, 1.5 / 255, 2.5 / 255])])
    q = quantize(x)
    assert q.dtype == torch.float64
    assert np.array_equal(q.numpy(), _np_round8(x.numpy()))
    assert torch.equal(quantize(q), q)
    assert q.min() >= 0 and q.max() <= 1
    assert quantize(x.float()).dtype == torch.float32
    u8 = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(quantize(u8), torch.arange(256, dtype=torch.float64) / 255.0)
    with pytest.raises(ValueError, match="int64"):
        quantize(torch.arange(3))


def test_shave_and_window() -> None:
    x = torch.arange(2 * 3 * 10 * 12).view(2, 3, 10, 12)
    assert torch.equal(shave(x, 0), x)
    assert torch.equal(shave(x, 3), x[..., 3:7, 3:9])
    with pytest.raises(ValueError, match=r"border=5.*10×12"):
        shave(x, 5)
    with pytest.raises(ValueError, match="non-negative"):
        shave(x, -1)
    g = gaussian_window()
    assert g.shape == (11,) and g.dtype == torch.float64
    assert g.sum().item() == pytest.approx(1.0, abs=1e-15)
    d = np.arange(11) - 5.0
    w2 = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * 1.5**2))  # MATLAB fspecial('gaussian', 11, 1.5)
    assert np.allclose(np.outer(g.numpy(), g.numpy()), w2 / w2.sum(), rtol=0, atol=1e-15)
    assert math.isclose(SSIM_C1, (0.01 * 255) ** 2) and math.isclose(SSIM_C2, (0.03 * 255) ** 2)


def test_identical_images_and_input_forms() -> None:
    sr, hr = _pair(2, 24, 30, seed=3)
    assert torch.isinf(psnr_y(hr, hr, 2)).all() and (psnr_y(hr, hr, 2) > 0).all()
    assert torch.allclose(ssim_y(hr, hr, 2), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    # 3-D input = batch of one; float32 and uint8 inputs give the float64 answer
    assert torch.allclose(psnr_y(sr[1], hr[1], 2), psnr_y(sr, hr, 2)[1:], rtol=0, atol=1e-12)
    assert torch.allclose(ssim_y(sr[1], hr[1], 2), ssim_y(sr, hr, 2)[1:], rtol=0, atol=1e-12)
    assert torch.allclose(psnr_y(sr.float(), hr.float(), 2), psnr_y(sr, hr, 2), rtol=0, atol=1e-9)
    sr8, hr8 = ((quantize(t) * 255).round().to(torch.uint8) for t in (sr, hr))
    assert torch.allclose(ssim_y(sr8, hr8, 2), ssim_y(sr, hr, 2), rtol=0, atol=1e-12)
    # scores are symmetric in their arguments
    assert torch.allclose(ssim_y(hr, sr, 2), ssim_y(sr, hr, 2), rtol=0, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    sr, hr = _pair(2, 48, 40, seed=11)
    for fn in (psnr_y, ssim_y, psnr_rgb, ssim_rgb):
        out = fn(sr.cuda().float(), hr.cuda().float(), 4)
        assert out.device.type == "cuda" and out.dtype == torch.float64
        assert torch.allclose(out.cpu(), fn(sr, hr, 4), rtol=0, atol=1e-9)
    m = SSIMY(4).cuda()
    m.update(sr.cuda(), hr.cuda())
    assert m.compute().item() == pytest.approx(ssim_y(sr, hr, 4).mean().item(), abs=1e-10)


# ---------------------------------------------------------------------------------------------------------------------
# EvalProtocol


def test_eval_protocol_describe_and_validation() -> None:
    p = EvalProtocol(crop_border=4)
    assert p.describe() == "PSNR/SSIM on Y (BT.601 studio), 8-bit rounded, shave 4 px, mean of per-image values"
    q = EvalProtocol(crop_border=2, y_channel=False, quantize=False)
    assert q.describe() == (
        "PSNR/SSIM on RGB (SSIM: mean of per-channel values), float (not rounded to 8 bit), shave 2 px, "
        "mean of per-image values"
    )
    with pytest.raises(AttributeError):
        p.crop_border = 3  # type: ignore[misc]
    assert p == EvalProtocol(4, True, True) and hash(p) == hash(EvalProtocol(4))
    for bad in (-1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="crop_border"):
            EvalProtocol(crop_border=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="y_channel"):
        EvalProtocol(crop_border=4, y_channel=1)  # type: ignore[arg-type]
    sr, hr = _pair(2, 30, 30, seed=5)
    s = q.score(sr, hr)
    assert torch.equal(s["psnr"], psnr_rgb(sr, hr, 2, quantize_inputs=False))
    assert torch.equal(s["ssim"], ssim_rgb(sr, hr, 2, quantize_inputs=False))
    assert torch.equal(p.psnr(sr, hr), psnr_y(sr, hr, 4)) and torch.equal(p.ssim(sr, hr), ssim_y(sr, hr, 4))


# ---------------------------------------------------------------------------------------------------------------------
# bad input


def test_bad_input_errors() -> None:
    a = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"sr \(2, 3, 32, 32\) and hr \(2, 3, 32, 30\)"):
        psnr_y(a, torch.rand(2, 3, 32, 30), 4)
    with pytest.raises(ValueError, match=r"B×3×H×W.*sr \(2, 4, 32, 32\)"):
        ssim_y(torch.rand(2, 4, 32, 32), torch.rand(2, 4, 32, 32), 4)
    with pytest.raises(ValueError, match=r"B×3×H×W.*sr \(32, 32\)"):
        psnr_y(torch.rand(32, 32), torch.rand(32, 32), 0)
    with pytest.raises(
        ValueError, match=r"crop_border=11 leaves 10×10 px.*sr \(2, 3, 32, 32\).*SSIM needs at least 11×11"
    ):
        ssim_y(a, a, 11)
    with pytest.raises(ValueError, match=r"crop_border=16 leaves 0×0 px.*PSNR"):
        psnr_y(a, a, 16)
    assert torch.isfinite(psnr_y(a, a.flip(-1), 15)).all()  # 2×2 px is enough for PSNR
    with pytest.raises(ValueError, match="crop_border must be a non-negative int, got -1"):
        psnr_y(a, a, -1)
    with pytest.raises(ValueError, match=r"dtype torch\.int64"):
        psnr_y(a.long(), a.long(), 0)
    with pytest.raises(TypeError, match="ndarray"):
        psnr_y(a.numpy(), a, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sr \(2, 3, 32, 32\) and hr \(2, 3, 32, 30\)"):
        PSNRY(4).update(a, torch.rand(2, 3, 32, 30))


# ---------------------------------------------------------------------------------------------------------------------
# torchmetrics classes


def test_metric_classes_are_mean_of_per_image_values() -> None:
    batches = [_pair(b, 36, 28 + 4 * b, seed=20 + b) for b in (2, 1, 3)]  # different sizes and shapes
    psnr_m, ssim_m = PSNRY(crop_border=3), SSIMY(crop_border=3)
    assert psnr_m.higher_is_better and ssim_m.higher_is_better and psnr_m.full_state_update is False
    per_p, per_s = [], []
    for sr, hr in batches:
        batch_value = psnr_m(sr, hr)  # forward: value of this batch, and accumulates
        assert batch_value.item() == pytest.approx(psnr_y(sr, hr, 3).mean().item(), abs=1e-12)
        ssim_m.update(sr, hr)
        per_p.append(psnr_y(sr, hr, 3))
        per_s.append(ssim_y(sr, hr, 3))
    all_p, all_s = torch.cat(per_p), torch.cat(per_s)
    assert psnr_m.total.dtype == torch.float64 and psnr_m.count.dtype == torch.int64 and psnr_m.count.item() == 6
    assert psnr_m.compute().item() == pytest.approx(all_p.mean().item(), abs=1e-12)
    assert ssim_m.compute().item() == pytest.approx(all_s.mean().item(), abs=1e-12)
    assert psnr_m.compute().dtype == torch.float64
    # not the PSNR of the pooled MSE (torchmetrics' PeakSignalNoiseRatio default), nor the mean of batch means
    pooled_mse = torch.cat([(10 ** (-p / 10)) for p in per_p]).mean() * 255.0**2
    assert abs(10 * math.log10(255.0**2 / pooled_mse.item()) - psnr_m.compute().item()) > 1e-3
    assert abs(torch.stack([p.mean() for p in per_p]).mean().item() - psnr_m.compute().item()) > 1e-4
    # RGB variant and reset
    rgb = PSNRY(3, y_channel=False)
    rgb.update(*batches[0])
    assert rgb.compute().item() == pytest.approx(psnr_rgb(*batches[0], 3).mean().item(), abs=1e-12)
    psnr_m.reset()
    assert psnr_m.count.item() == 0 and psnr_m.total.item() == 0.0
    assert "crop_border=3, y_channel=True" in repr(ssim_m)


def _ddp_images() -> tuple[torch.Tensor, torch.Tensor]:
    return _pair(5, 32, 32, seed=123)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size, timeout=timedelta(seconds=120)
    )
    try:
        sr, hr = _ddp_images()
        shard = slice(0, 3) if rank == 0 else slice(3, 5)  # disjoint, unpadded: 3 + 2 images
        psnr_m, ssim_m = PSNRY(crop_border=4), SSIMY(crop_border=4)
        s, h = sr[shard], hr[shard]
        for i in range(0, s.shape[0], 2):
            psnr_m.update(s[i : i + 2], h[i : i + 2])
            ssim_m.update(s[i : i + 2], h[i : i + 2])
        result = {"psnr": psnr_m.compute().item(), "ssim": ssim_m.compute().item(), "local": psnr_m.count.item()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_metric_ddp_two_processes_give_exact_dataset_mean(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    # not fork: a child forked from this process deadlocks in the OpenMP pool the parent has used. A fork server
    # imports torch and torchmetrics once and forks both ranks from that clean process (spawn would import twice).
    mp.get_context("forkserver").set_forkserver_preload(["torch", "numpy", "pytest", "sresolve.metrics"])
    ctx = mp.start_processes(
        _ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=False, start_method="forkserver"
    )
    deadline = time.monotonic() + 240.0
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the 2-process gloo metric test did not finish within 240 s")
    sr, hr = _ddp_images()
    p, s = psnr_y(sr, hr, 4), ssim_y(sr, hr, 4)
    for rank, local in ((0, 3), (1, 2)):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["local"] == local
        assert result["psnr"] == pytest.approx(p.mean().item(), abs=1e-12)
        assert result["ssim"] == pytest.approx(s.mean().item(), abs=1e-12)
    # a mean of the two ranks' means would be a different number
    assert abs((p[:3].mean() + p[3:].mean()).item() / 2 - p.mean().item()) > 1e-6
