"""Benchmark: MATLAB-bicubic ``imresize`` (two dense matmuls) vs a per-output-index loop reference.

The reference follows the shape of the classic CPU port of MATLAB ``imresize`` (what BasicSR's
``matlab_functions.imresize`` does): per axis, a table of ``P`` tap indices and weights per output index, then a
Python loop over output rows (then columns), each output line a weighted sum of its taps. It is written here from the
algorithm (frameworks spec §2.1), not copied.

Run: ``python benchmarks/bench_resize.py [--repeats 5] [--ref-repeats 2] [--device cpu|cuda]``.
Prints timings (median), the speed-up ``reference_time / imresize_time`` and the max abs difference.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sresolve.data.degradation import clear_weight_cache, imresize


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))


def _taps(in_len: int, out_len: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output index: P mirrored 0-based input indices and their normalised weights (MATLAB contributions)."""
    aa = scale < 1
    width = 4.0 / scale if aa else 4.0
    u = np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    idx = left[:, None] + np.arange(math.ceil(width) + 2)[None, :]
    w = scale * _cubic(scale * (u[:, None] - idx)) if aa else _cubic(u[:, None] - idx)
    w = w / w.sum(1, keepdims=True)
    j = idx.astype(np.int64) - 1
    j = np.where(j < 0, -j - 1, j)  # symmetric, edge repeated (enough for taps within one image length)
    j = np.where(j >= in_len, 2 * in_len - 1 - j, j)
    return torch.from_numpy(j), torch.from_numpy(w).float()


def reference_imresize(img: torch.Tensor, scale: float) -> torch.Tensor:
    """Loop reference for a (C, H, W) float32 tensor: one weighted tap sum per output row, then per output column."""
    c, h, w = img.shape
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    idx_h, wt_h = _taps(h, out_h, scale)
    idx_w, wt_w = _taps(w, out_w, scale)
    tmp = img.new_empty(c, out_h, w)
    for i in range(out_h):
        tmp[:, i, :] = torch.einsum("p,cpw->cw", wt_h[i], img[:, idx_h[i], :])
    out = img.new_empty(c, out_h, out_w)
    for j in range(out_w):
        out[:, :, j] = torch.einsum("p,chp->ch", wt_w[j], tmp[:, :, idx_w[j]])
    return out


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")

    # 1) one DIV2K-sized image, x4 down
    img = torch.rand(3, 1356, 2040, generator=gen)
    img_dev = img.to(device)
    clear_weight_cache()
    cold = _time(lambda: imresize(img_dev, 1 / 4), 1, device)[0]
    fast = statistics.median(_time(lambda: imresize(img_dev, 1 / 4), args.repeats, device))
    ref_out = reference_imresize(img, 1 / 4)
    ref = statistics.median(_time(lambda: reference_imresize(img, 1 / 4), args.ref_repeats, torch.device("cpu")))
    diff = (imresize(img_dev, 1 / 4).cpu() - ref_out).abs().max().item()
    print("3x1356x2040 float32, x4 down -> 3x339x510")
    print(f"  imresize (matmul, {device}): {fast * 1e3:9.2f} ms  (first call incl. weight build: {cold * 1e3:.2f} ms)")
    print(f"  reference (loop, cpu):      {ref * 1e3:9.2f} ms")
    print(f"  speed-up reference/imresize: {ref / fast:.1f}x   max |diff| = {diff:.2e}")

    # 2) training use: a batch of 16 HR patches 3x256x256 -> 3x64x64
    batch = torch.rand(16, 3, 256, 256, generator=gen)
    batch_dev = batch.to(device)
    imresize(batch_dev, 1 / 4)  # warm the weight cache
    fast_b = statistics.median(_time(lambda: imresize(batch_dev, 1 / 4), args.repeats, device))
    ref_b = statistics.median(
        _time(lambda: [reference_imresize(x, 1 / 4) for x in batch], args.ref_repeats, torch.device("cpu"))
    )
    interp = statistics.median(
        _time(
            lambda: F.interpolate(batch_dev, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False),
            args.repeats,
            device,
        )
    )
    ref_batch = torch.stack([reference_imresize(x, 1 / 4) for x in batch])
    diff_b = (imresize(batch_dev, 1 / 4).cpu() - ref_batch).abs().max().item()
    print("16x3x256x256 float32, x4 down -> 16x3x64x64")
    print(f"  imresize (matmul, {device}): {fast_b * 1e3:9.2f} ms")
    print(f"  reference (loop per image, cpu): {ref_b * 1e3:9.2f} ms")
    print(f"  F.interpolate(bicubic, antialias) (not MATLAB at borders): {interp * 1e3:9.2f} ms")
    print(f"  speed-up reference/imresize: {ref_b / fast_b:.1f}x   max |diff| = {diff_b:.2e}")


if __name__ == "__main__":
    main()
