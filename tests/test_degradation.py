"""Tests for the MATLAB-exact bicubic resize (`sresolve.data.degradation`).

The reference below is written from MATLAB's documented ``imresize`` algorithm (``contributions`` + ``cubic`` +
``resizeAlongDim``): one output pixel at a time, taps mirrored by repeated reflection, float64 throughout. It shares no
code with the implementation under test (which builds dense weight matrices with a modulo-based mirror). The
``sresolve-prepare`` tests at the end check LR files against the same reference and sub-images against plain slicing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sresolve.cli.prepare import extract_subimages, main, make_lr, read_image_exact, subimage_starts
from sresolve.data.degradation import (
    bicubic_degrade,
    clear_weight_cache,
    imresize,
    modcrop,
    resize_weights,
)

# ----------------------------------------------------------------------------------------------------------------------
# Independent reference: a literal, loop-based float64 port of MATLAB imresize(..., 'bicubic').


def _ref_cubic(t: float) -> float:
    a = abs(t)
    if a <= 1.0:
        return 1.5 * a**3 - 2.5 * a**2 + 1.0
    if a <= 2.0:
        return -0.5 * a**3 + 2.5 * a**2 - 4.0 * a + 2.0
    return 0.0


def _ref_mirror(k: int, n: int) -> int:
    """1-based index ``k`` reflected into ``1..n`` with the edge pixel repeated (…, 2, 1 | 1, 2, …, n | n, n-1, …)."""
    while k < 1 or k > n:
        k = 1 - k if k < 1 else 2 * n + 1 - k
    return k


def _ref_resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    src = np.moveaxis(img, axis, 0)
    n = src.shape[0]
    stretch = antialias and scale < 1.0
    width = 4.0 / scale if stretch else 4.0
    out = np.zeros((out_len, *src.shape[1:]), dtype=np.float64)
    for i in range(out_len):
        u = (i + 1) / scale + 0.5 * (1.0 - 1.0 / scale)
        left = math.floor(u - width / 2.0)
        taps = [left + p for p in range(math.ceil(width) + 2)]
        weights = [scale * _ref_cubic(scale * (u - j)) if stretch else _ref_cubic(u - j) for j in taps]
        total = sum(weights)
        acc = np.zeros(src.shape[1:], dtype=np.float64)
        for j, w in zip(taps, weights, strict=True):
            if w != 0.0:
                acc = acc + (w / total) * src[_ref_mirror(j, n) - 1]
        out[i] = acc
    return np.moveaxis(out, 0, axis)


def ref_imresize(
    img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None, antialias: bool = True
) -> np.ndarray:
    """MATLAB bicubic imresize of the last two axes of a float64 array (..., H, W)."""
    h, w = img.shape[-2:]
    if size is not None:
        out, scales = size, (size[0] / h, size[1] / w)
    else:
        assert scale is not None
        out, scales = (math.ceil(h * scale), math.ceil(w * scale)), (scale, scale)
    y = np.asarray(img, dtype=np.float64)
    # MATLAB order: the dimension with the smaller scale first, rows first on ties.
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    for d in order:
        y = _ref_resize_axis(y, y.ndim - 2 + d, out[d], scales[d], antialias)
    return y


# ----------------------------------------------------------------------------------------------------------------------


def _rand(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)


CASES = [
    pytest.param((3, 36, 48), {"scale": 1 / 2}, True, id="x2-down"),
    pytest.param((3, 37, 41), {"scale": 1 / 2}, True, id="x2-down-odd"),
    pytest.param((3, 37, 41), {"scale": 1 / 3}, True, id="x3-down-odd"),
    pytest.param((3, 37, 41), {"scale": 1 / 4}, True, id="x4-down-odd"),
    pytest.param((3, 13, 11), {"scale": 4}, True, id="x4-up"),
    pytest.param((3, 37, 41), {"scale": 1 / 1.5}, True, id="x1.5-down"),
    pytest.param((3, 37, 41), {"scale": 1 / 2.7}, True, id="x2.7-down"),
    pytest.param((3, 9, 12), {"scale": 3.3}, True, id="x3.3-up"),
    pytest.param((3, 37, 41), {"size": (20, 33)}, True, id="size-down-both"),
    pytest.param((3, 37, 41), {"size": (50, 17)}, True, id="size-up-h-down-w"),
    pytest.param((3, 37, 41), {"scale": 1 / 4}, False, id="x4-down-no-aa"),
    pytest.param((1, 5, 7), {"scale": 1 / 4}, True, id="tiny-x4-down-wraps"),
    pytest.param((1, 1, 1), {"scale": 3}, True, id="single-pixel-up"),
    pytest.param((2, 2, 3), {"scale": 1 / 3}, True, id="2x3-down"),
]


@pytest.mark.parametrize(("shape", "kwargs", "antialias"), CASES)
def test_matches_reference_float64(shape: tuple[int, ...], kwargs: dict, antialias: bool) -> None:
    x = _rand(shape, seed=sum(shape))
    ref = ref_imresize(x.numpy(), antialias=antialias, **kwargs)
    out = imresize(x, antialias=antialias, **kwargs)
    assert out.dtype == torch.float64
    assert tuple(out.shape) == ref.shape
    assert np.abs(out.numpy() - ref).max() <= 1e-9  # float64 rounding only; the brief's bound is 1e-6


@pytest.mark.parametrize(("shape", "kwargs", "antialias"), CASES)
def test_matches_reference_float32(shape: tuple[int, ...], kwargs: dict, antialias: bool) -> None:
    x = _rand(shape, seed=sum(shape) + 1, dtype=torch.float32)
    ref = ref_imresize(x.double().numpy(), antialias=antialias, **kwargs)
    out = imresize(x, antialias=antialias, **kwargs)
    assert out.dtype == torch.float32
    assert tuple(out.shape) == ref.shape
    assert np.abs(out.double().numpy() - ref).max() <= 1e-5


def test_output_sizes_are_ceil() -> None:
    x = torch.zeros(3, 37, 41)
    assert imresize(x, 1 / 4).shape == (3, 10, 11)
    assert imresize(x, 1 / 3).shape == (3, 13, 14)
    assert imresize(x, 1 / 2.7).shape == (3, 14, 16)
    assert imresize(x, 3.3).shape == (3, 123, 136)
    assert imresize(x, size=(5, 90)).shape == (3, 5, 90)
    assert imresize(torch.zeros(3, 1356, 2040), 1 / 3).shape == (3, 452, 680)


def test_batched_equals_per_image_and_leading_dims() -> None:
    x = _rand((4, 3, 29, 31), seed=7)
    batched = imresize(x, 1 / 3)
    for i in range(4):
        torch.testing.assert_close(batched[i], imresize(x[i], 1 / 3), rtol=0, atol=1e-12)
    nested = imresize(x.reshape(2, 2, 3, 29, 31), 1 / 3)
    torch.testing.assert_close(nested.reshape(batched.shape), batched, rtol=0, atol=1e-12)
    plain_2d = imresize(x[0, 0], 1 / 3)
    torch.testing.assert_close(plain_2d, batched[0, 0], rtol=0, atol=1e-12)


def test_non_contiguous_input() -> None:
    x = _rand((3, 40, 30), seed=3)
    xt = x.transpose(-1, -2)  # (3, 30, 40), non-contiguous
    assert not xt.is_contiguous()
    torch.testing.assert_close(imresize(xt, 0.5), imresize(xt.contiguous(), 0.5), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"scale": 1 / 4}, {"scale": 1 / 2.7}, {"scale": 3.3}, {"size": (7, 60)}])
def test_constant_image_stays_constant(kwargs: dict) -> None:
    x = torch.full((3, 23, 19), 0.37, dtype=torch.float64)
    out = imresize(x, **kwargs)
    assert (out - 0.37).abs().max().item() <= 1e-14


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_linear_ramp_interior_is_exact_downscale(factor: int) -> None:
    # For an integer downscale the taps are symmetric around u, so a ramp f(j) = j (1-based) is reproduced exactly
    # wherever no tap is mirrored: output x lands on u(x) = factor * x - (factor - 1) / 2.
    w = 60
    ramp = torch.arange(1, w + 1, dtype=torch.float64).expand(1, 5, w)
    out = imresize(ramp, 1 / factor)[0, 0]
    x = torch.arange(1, out.numel() + 1, dtype=torch.float64)
    expected = factor * x - (factor - 1) / 2
    margin = factor + 1  # stretched kernel half-width 2 * factor input px, i.e. ~2 output px
    torch.testing.assert_close(out[margin:-margin], expected[margin:-margin], rtol=0, atol=1e-12)
    assert (out[0] - expected[0]).abs() > 1e-3  # the mirrored border is not linear (shows the check bites)


def test_quadratic_interior_is_exact_upscale() -> None:
    # Keys' a = -0.5 cubic reproduces polynomials up to degree 2 exactly.
    w, s = 16, 4
    j = torch.arange(1, w + 1, dtype=torch.float64)
    img = (0.5 * j**2 - 3 * j + 2).expand(1, 3, w)
    out = imresize(img, s)[0, 0]
    u = torch.arange(1, w * s + 1, dtype=torch.float64) / s + 0.5 * (1 - 1 / s)
    expected = 0.5 * u**2 - 3 * u + 2
    torch.testing.assert_close(out[3 * s : -3 * s], expected[3 * s : -3 * s], rtol=0, atol=1e-10)


def test_hand_derived_step_values() -> None:
    # x = [0,0,0,0,1,1,1,1] shrunk by 2: the normalised taps are cubic(d/2)/2 at d = ±0.5, ±1.5, ±2.5, ±3.5 with
    # cubic(0.25) = 0.8671875, cubic(0.75) = 0.2265625, cubic(1.25) = -0.0703125, cubic(1.75) = -0.0234375; with
    # MATLAB's mirror (index 0 -> 1, -1 -> 2, 9 -> 8, ...) this gives exactly these dyadic values.
    x = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]], dtype=torch.float64)
    expected = torch.tensor([[-0.01171875, 0.06640625, 0.93359375, 1.01171875]], dtype=torch.float64)
    torch.testing.assert_close(imresize(x, size=(1, 4)), expected, rtol=0, atol=0)
    torch.testing.assert_close(imresize(x.T.contiguous(), size=(4, 1)), expected.T, rtol=0, atol=0)
    w = resize_weights(8, 4, 0.5)
    half = torch.tensor([-0.0234375, -0.0703125, 0.2265625, 0.8671875], dtype=torch.float64) / 2
    # output 2: u = 3.5, taps -1..8 at d = 4.5 .. -4.5; tap 0 mirrors onto pixel 1, the outer taps weigh 0.
    expected_row2 = torch.tensor(
        [half[0] + half[1], half[2], half[3], half[3], half[2], half[1], half[0], 0.0], dtype=torch.float64
    )
    torch.testing.assert_close(w[1], expected_row2, rtol=0, atol=0)


@pytest.mark.parametrize(("n_in", "n_out", "scale"), [(41, 11, 1 / 4), (41, 15, 1 / 2.7), (9, 30, 3.3), (5, 2, 1 / 3)])
def test_weight_rows_sum_to_one(n_in: int, n_out: int, scale: float) -> None:
    w = resize_weights(n_in, n_out, scale)
    assert w.shape == (n_out, n_in)
    torch.testing.assert_close(w.sum(1), torch.ones(n_out, dtype=torch.float64), rtol=0, atol=1e-14)


def test_differs_from_torch_antialias_only_at_border() -> None:
    # torch/PIL antialiased bicubic has the same kernel and centres but truncates + renormalises taps at the border
    # instead of mirroring: interior equal, border 2 output px differ (this is what the reference comparison catches).
    x = _rand((1, 3, 48, 52), seed=11)
    ours = imresize(x, 1 / 4)
    theirs = F.interpolate(x, scale_factor=1 / 4, mode="bicubic", antialias=True, align_corners=False)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() > 1e-3
    assert (ours - theirs)[..., 2:-2, 2:-2].abs().max().item() <= 1e-9


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    skdata = pytest.importorskip("skimage.data")
    img = skdata.astronaut()[:504, :504]  # uint8 HWC, as in the frameworks spec goldens
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).to(torch.float64) / 255.0


# sum of round(255 * imresize(astronaut[:504, :504] / 255, 1/4)) over all 3*126*126 values, computed with ref_imresize
# above (float64) and checked against it in the test; pins the MATLAB protocol (kernel, border, size, rounding).
ASTRONAUT_X4_UINT8_SUM = 5_525_492


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)  # MATLAB im2uint8: round half away, clip


def test_astronaut_golden(astronaut: torch.Tensor) -> None:
    lr = imresize(astronaut, 1 / 4)
    assert lr.shape == (3, 126, 126)
    ref = ref_imresize(astronaut[:, :, :].numpy(), scale=1 / 4)
    assert np.abs(lr.numpy() - ref).max() <= 1e-12
    q = _to_uint8(lr)
    assert torch.equal(q, _to_uint8(torch.from_numpy(ref)))
    assert int(q.sum(dtype=torch.int64)) == ASTRONAUT_X4_UINT8_SUM
    # float32 path (BasicSR's precision): a handful of .5-boundary pixels may flip, nothing more.
    q32 = _to_uint8(imresize(astronaut.float(), 1 / 4).double())
    assert (q32 != q).sum().item() <= 3
    # uint8 input behaves like MATLAB on uint8 images: computed in double, rounded half away from zero.
    as_uint8 = torch.round(astronaut * 255).to(torch.uint8)
    assert torch.equal(imresize(as_uint8, 1 / 4), q)


def test_low_precision_dtypes_compute_in_float32() -> None:
    x = _rand((2, 3, 32, 32), seed=5, dtype=torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        out = imresize(x.to(dtype), 1 / 4)
        assert out.dtype == dtype
        expected = imresize(x.to(dtype).float(), 1 / 4).to(dtype)
        assert torch.equal(out, expected)


def test_autocast_does_not_lower_precision() -> None:
    x = _rand((1, 3, 40, 40), seed=9, dtype=torch.float32)
    plain = imresize(x, 1 / 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = imresize(x, 1 / 4)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain)


def test_gradients_flow() -> None:
    x = _rand((1, 1, 6, 7), seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 1 / 2.7), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, size=(9, 4)), (x,))


def test_scale_one_is_identity_copy() -> None:
    x = _rand((3, 9, 10), seed=4)
    out = imresize(x, 1.0)
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()


def test_weight_cache_is_reused_and_clearable() -> None:
    from sresolve.data import degradation

    clear_weight_cache()
    x = torch.rand(3, 20, 24)
    imresize(x, 0.5)
    imresize(x, 0.5)
    info = degradation._weights_tensor.cache_info()
    assert info.hits >= 2 and info.misses == 2
    clear_weight_cache()
    assert degradation._weights_tensor.cache_info().currsize == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros((3, 8, 8)), 0.5), {}, "torch.Tensor"),
        ((torch.zeros(8), 0.5), {}, "ndim >= 2"),
        ((torch.zeros(3, 0, 8), 0.5), {}, "empty spatial"),
        ((torch.zeros(3, 8, 8), 0.0), {}, "scale"),
        ((torch.zeros(3, 8, 8), -2.0), {}, "scale"),
        ((torch.zeros(3, 8, 8), float("nan")), {}, "scale"),
        ((torch.zeros(3, 8, 8), "2"), {}, "scale"),
        ((torch.zeros(3, 8, 8),), {"size": (0, 4)}, "out_h"),
        ((torch.zeros(3, 8, 8),), {"size": (4, -1)}, "out_w"),
        ((torch.zeros(3, 8, 8),), {"size": (4,)}, "pair"),
        ((torch.zeros(3, 8, 8), 0.5), {"size": (4, 4)}, "exactly one"),
        ((torch.zeros(3, 8, 8),), {}, "exactly one"),
        ((torch.zeros(3, 8, 8, dtype=torch.bool), 0.5), {}, "dtype"),
        ((torch.zeros(3, 8, 8, dtype=torch.complex64), 0.5), {}, "dtype"),
    ],
)
def test_invalid_inputs_raise_clear_errors(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        imresize(*args, **kwargs)


def test_bicubic_degrade_clamps_and_matches_imresize() -> None:
    hr = (_rand((2, 3, 3, 9), seed=12, dtype=torch.float32) > 0.5).float().repeat_interleave(8, -2)
    hr = hr.repeat_interleave(4, -1)  # hard 0/1 blocks: bicubic over- and undershoots at their edges
    lr = bicubic_degrade(hr, 4)
    assert lr.shape == (2, 3, 6, 9)
    assert lr.min() >= 0 and lr.max() <= 1
    raw = imresize(hr, 1 / 4)
    assert raw.min() < 0 and raw.max() > 1  # the clamp is exercised
    torch.testing.assert_close(lr, raw.clamp(0, 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="floating-point"):
        bicubic_degrade(torch.zeros(3, 8, 8, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="scale"):
        bicubic_degrade(hr, 0)


def test_modcrop_tensor_and_numpy() -> None:
    t = torch.arange(2 * 3 * 14 * 19).reshape(2, 3, 14, 19)
    out = modcrop(t, 4)
    assert out.shape == (2, 3, 12, 16)
    assert torch.equal(out, t[..., :12, :16])
    a = np.arange(14 * 19 * 3).reshape(14, 19, 3)
    assert np.array_equal(modcrop(a, 12), a[:12, :12])
    assert modcrop(a[..., 0], 5).shape == (10, 15)
    assert modcrop(t, 1).shape == t.shape
    with pytest.raises(ValueError, match="modulo"):
        modcrop(t, 0)
    with pytest.raises(ValueError, match="smaller than the modulo"):
        modcrop(t, 15)
    with pytest.raises(ValueError, match=r"numpy image of shape"):
        modcrop(np.zeros((2, 2, 2, 2)), 2)
    with pytest.raises(ValueError, match=r"torch\.Tensor or numpy"):
        modcrop([[1, 2]], 2)  # type: ignore[type-var]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = _rand((4, 3, 64, 72), seed=13, dtype=torch.float32)
    cpu = imresize(x, 1 / 3)
    gpu = imresize(x.cuda(), 1 / 3)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    x64 = x.double()
    ref = ref_imresize(x64[0].numpy(), scale=1 / 3)
    assert np.abs(imresize(x64.cuda(), 1 / 3)[0].cpu().numpy() - ref).max() <= 1e-9


# ----------------------------------------------------------------------------------------------------------------------
# sresolve-prepare (CLI): LR generation and sub-image extraction on small PNGs.


def _write_png(path: Path, arr: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _rand_uint8(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _expected_lr(hr_uint8: np.ndarray, scale: int) -> np.ndarray:
    """round(imresize(hr / 255, 1 / scale) * 255) with the independent reference, as uint8 HWC."""
    hr = hr_uint8.transpose(2, 0, 1).astype(np.float64) / 255.0
    lr = ref_imresize(hr, scale=1 / scale)
    return np.clip(np.floor(lr * 255.0 + 0.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_prepare_lr_names_sizes_and_pixels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write_png(tmp_path / "hr" / "0001.png", _rand_uint8(50, 46, seed=1))
    b = _write_png(tmp_path / "hr" / "0002.png", _rand_uint8(37, 41, seed=2))
    rc = main(["lr", "--hr", str(tmp_path / "hr"), "--out", str(tmp_path / "lr"), "--scale", "2", "3", "4", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.relative_to(tmp_path / "lr").as_posix() for p in (tmp_path / "lr").rglob("*.png"))
    assert names == [f"X{s}/000{i}x{s}.png" for s in (2, 3, 4) for i in (1, 2)]
    for stem, hr in (("0001", a), ("0002", b)):
        for s in (2, 3, 4):
            got = _read_png(tmp_path / "lr" / f"X{s}" / f"{stem}x{s}.png")
            crop = hr[: hr.shape[0] - hr.shape[0] % s, : hr.shape[1] - hr.shape[1] % s]  # per-scale modcrop
            assert got.shape == (crop.shape[0] // s, crop.shape[1] // s, 3)
            assert np.array_equal(got, _expected_lr(crop, s)), (stem, s)
    assert "wrote 6 images" in capsys.readouterr().out


def test_prepare_lr_hr_out_uses_one_modcrop(tmp_path: Path) -> None:
    hr = _write_png(tmp_path / "hr" / "img.png", _rand_uint8(53, 38, seed=3))
    written = make_lr(tmp_path / "hr", tmp_path / "lr", [2, 3], hr_out=tmp_path / "gt", progress=False)
    assert len(written) == 3
    gt = _read_png(tmp_path / "gt" / "img.png")
    assert np.array_equal(gt, hr[:48, :36])  # lcm(2, 3) = 6: GTmod6, top-left
    for s in (2, 3):
        lr = _read_png(tmp_path / "lr" / f"X{s}" / f"imgx{s}.png")
        assert lr.shape == (48 // s, 36 // s, 3)
        assert np.array_equal(lr, _expected_lr(gt, s))


def test_prepare_lr_modcrop_template_and_workers(tmp_path: Path) -> None:
    hrs = [_write_png(tmp_path / "hr" / f"im{i}.png", _rand_uint8(40 + i, 30 + 2 * i, seed=10 + i)) for i in range(3)]
    make_lr(tmp_path / "hr", tmp_path / "a", [4], modulo=12, filename_tmpl="{}", progress=False)
    make_lr(tmp_path / "hr", tmp_path / "b", [4], modulo=12, filename_tmpl="{}", workers=2, progress=False)
    for i in range(3):
        one, two = _read_png(tmp_path / "a" / "X4" / f"im{i}.png"), _read_png(tmp_path / "b" / "X4" / f"im{i}.png")
        assert one.shape == (9, 6, 3)  # GTmod12: 36 x 24 for all three sizes, / 4
        assert np.array_equal(one, _expected_lr(hrs[i][:36, :24], 4))
        assert np.array_equal(one, two)


def test_read_image_exact_recovers_levels(tmp_path: Path) -> None:
    arr = _write_png(tmp_path / "a.png", _rand_uint8(5, 6, seed=4))
    x = read_image_exact(tmp_path / "a.png")
    assert x.dtype == torch.float64
    assert torch.equal(x, torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float64) / 255.0))
    g16 = np.random.default_rng(5).integers(0, 65536, size=(4, 7), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    y = read_image_exact(tmp_path / "g16.png")
    assert torch.equal(y[0], torch.from_numpy(g16.astype(np.float64) / 65535.0))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--scale", "2"], "image folder not found"),
        (["--scale", "3", "--modcrop", "8"], "--modcrop 8 is not a multiple of scale"),
        (["--scale", "2", "--filename-tmpl", "lr_{scale}"], "must contain"),
        (["--scale", "1"], "integers >= 2"),
    ],
)
def test_prepare_lr_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], match: str) -> None:
    hr = tmp_path / ("missing" if "not found" in match else "hr")
    if "not found" not in match:
        _write_png(hr / "x.png", _rand_uint8(16, 16, seed=0))
    rc = main(["lr", "--hr", str(hr), "--out", str(tmp_path / "out"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert rc == 1
    assert match in err
    if "not found" in match:
        assert str(hr) in err


def test_prepare_lr_empty_folder_and_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["lr", "--hr", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--scale", "2", "--quiet"]) == 1
    assert str(tmp_path / "empty") in capsys.readouterr().err
    _write_png(tmp_path / "hr" / "good.png", _rand_uint8(8, 8, seed=0))
    (tmp_path / "hr" / "bad.png").write_bytes(b"this is not a png")
    assert main(["lr", "--hr", str(tmp_path / "hr"), "--out", str(tmp_path / "o"), "--scale", "2", "--quiet"]) == 1
    assert "bad.png" in capsys.readouterr().err
    (tmp_path / "hr" / "bad.png").unlink()
    _write_png(tmp_path / "hr" / "tiny.png", _rand_uint8(3, 8, seed=0))
    assert main(["lr", "--hr", str(tmp_path / "hr"), "--out", str(tmp_path / "o"), "--scale", "4", "--quiet"]) == 1
    assert "tiny.png" in capsys.readouterr().err


def test_subimage_starts_rule() -> None:
    assert subimage_starts(100, 48, 24) == [0, 24, 48, 52]  # 4 px uncovered > thresh 0: edge-aligned crop
    assert subimage_starts(96, 48, 24) == [0, 24, 48]  # exact fit: nothing to add
    assert subimage_starts(130, 48, 24, thresh=10) == [0, 24, 48, 72]  # 10 px left, not > 10
    assert subimage_starts(130, 48, 24, thresh=9) == [0, 24, 48, 72, 82]
    assert subimage_starts(47, 48, 24) == []
    assert subimage_starts(48, 48, 24) == [0]
    with pytest.raises(ValueError, match="step"):
        subimage_starts(10, 4, 0)


def test_prepare_subimages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = _write_png(tmp_path / "src" / "0001x4.png", _rand_uint8(100, 130, seed=6))
    _write_png(tmp_path / "src" / "small.png", _rand_uint8(20, 200, seed=7))
    argv = ["subimages", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "sub"), "--crop", "48", "--step", "24"]
    assert main([*argv, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "small.png" in captured.err and "skipped" in captured.err
    names = sorted(p.name for p in (tmp_path / "sub").iterdir())
    assert names == [f"0001_s{i:03d}.png" for i in range(1, 21)]  # 4 rows x 5 cols, scale suffix stripped
    tops, lefts = [0, 24, 48, 52], [0, 24, 48, 72, 82]
    for k, (top, left) in enumerate(((t, lf) for t in tops for lf in lefts), start=1):
        tile = _read_png(tmp_path / "sub" / f"0001_s{k:03d}.png")
        assert np.array_equal(tile, img[top : top + 48, left : left + 48]), k

    written, skipped = extract_subimages(
        tmp_path / "src", tmp_path / "keep", crop=48, step=24, thresh=10, strip_scale_suffix=False, progress=False
    )
    assert [p.name for p in written] == [f"0001x4_s{i:03d}.png" for i in range(1, 13)]  # 4 px / 10 px left <= 10
    assert [p.name for p in skipped] == ["small.png"]


def test_prepare_subimages_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_png(tmp_path / "src" / "a.png", _rand_uint8(10, 10, seed=0))
    assert main(["subimages", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    assert "smaller than --crop 480" in capsys.readouterr().err
    assert main(["subimages", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert str(tmp_path / "nope") in capsys.readouterr().err
    _write_png(tmp_path / "src" / "ax2.png", _rand_uint8(10, 10, seed=0))  # strips to "a": collides with a.png
    rc = main(["subimages", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--crop", "4"])
    assert rc == 1 and "would both be written" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["subimages", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--step", "0"])


def test_prepare_lr_reproduces_astronaut_golden(tmp_path: Path, astronaut: torch.Tensor) -> None:
    hr = (astronaut * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    _write_png(tmp_path / "hr" / "astronaut.png", hr)
    (path,) = make_lr(tmp_path / "hr", tmp_path / "lr", [4], progress=False)
    assert path == tmp_path / "lr" / "X4" / "astronautx4.png"
    lr = _read_png(path)
    assert lr.shape == (126, 126, 3)
    assert int(lr.astype(np.int64).sum()) == ASTRONAUT_X4_UINT8_SUM
