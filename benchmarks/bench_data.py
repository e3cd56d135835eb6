"""Training-patch throughput of :class:`sresolve.data.datasets.PairedImageDataset` on DIV2K-sized PNGs.

Makes ``--images`` (default 8) 2040×1356 PNGs in a temporary folder by mirror-tiling the embedded scikit-image
photographs (real photographic detail and PNG entropy, like DIV2K; no download), then measures patches/s of the
on-the-fly ×4 training pipeline (LR patch 64, HR patch 256: crop, MATLAB-bicubic LR, flips) in one process with one
thread (``num_workers=0`` = what one DataLoader worker does):

* ``cache=False``: every patch decodes its full PNG (the reference);
* ``cache=True``: images decoded once (build time reported separately), patches cut from ``uint8`` arrays.

Usage::

    python benchmarks/bench_data.py [--images 8] [--seconds 4] [--scale 4] [--lr-patch-size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sresolve.data.datasets import PairedImageDataset
from sresolve.data.io import write_image
from sresolve.data.samples import load_sample, sample_names

TARGET_PER_WORKER = 100.0  # patches/s one DataLoader worker must sustain
DIV2K_W, DIV2K_H = 2040, 1356


def make_div2k_like(folder: Path, n: int) -> list[Path]:
    """``n`` 2040×1356 RGB PNGs (default zlib level, like DIV2K), mirror-tiled from the sample photographs."""
    names = sample_names()
    paths = []
    for i in range(n):
        src = load_sample(names[i % len(names)])
        reps = (-(-DIV2K_H // src.shape[0]) + 1, -(-DIV2K_W // src.shape[1]) + 1)
        tiled = np.pad(src, ((0, src.shape[0] * (reps[0] - 1)), (0, src.shape[1] * (reps[1] - 1)), (0, 0)), "symmetric")
        paths.append(write_image(folder / f"{i + 1:04d}.png", tiled[:DIV2K_H, :DIV2K_W], compress_level=6))
    return paths


def patches_per_second(ds: PairedImageDataset, seconds: float, min_patches: int = 10) -> tuple[float, int]:
    """Items/s over at least ``seconds`` (and ``min_patches``), cycling through images with fresh seeds."""
    ds[(0, 0)]  # warm-up (weight caches of the resize)
    count, start = 0, time.perf_counter()
    while True:
        ds[(count % len(ds), 12345 + count)]
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= min_patches:
            return count / elapsed, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per configuration")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--lr-patch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker runs with one thread

    with tempfile.TemporaryDirectory(prefix="sresolve_bench_data_") as tmp:
        folder = Path(tmp) / "HR"
        t0 = time.perf_counter()
        paths = make_div2k_like(folder, args.images)
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"made {len(paths)} {DIV2K_W}x{DIV2K_H} PNGs ({size_mb / len(paths):.1f} MB each) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        common = {"scale": args.scale, "lr_patch_size": args.lr_patch_size, "seed": 0, "num_threads": 1}

        plain = PairedImageDataset(folder, cache=False, **common)
        rate_plain, n_plain = patches_per_second(plain, args.seconds)

        t0 = time.perf_counter()
        cached = PairedImageDataset(folder, cache=True, **common)
        build_1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        PairedImageDataset(folder, cache=True, **{**common, "num_threads": None})
        build_n = time.perf_counter() - t0
        rate_cached, n_cached = patches_per_second(cached, args.seconds)
        same = all(
            torch.equal(plain[(i, i)]["lr"], cached[(i, i)]["lr"])
            and torch.equal(plain[(i, i)]["hr"], cached[(i, i)]["hr"])
            for i in range(min(4, len(plain)))
        )

    hr_patch = args.lr_patch_size * args.scale
    print(f"x{args.scale}, LR patch {args.lr_patch_size} (HR {hr_patch}), one process, torch threads 1")
    print(f"  cache=False (decode per patch): {rate_plain:9.1f} patches/s  ({n_plain} patches)")
    print(f"  cache=True  (uint8 arrays)    : {rate_cached:9.1f} patches/s  ({n_cached} patches)")
    print(f"  speed-up                      : {rate_cached / rate_plain:9.1f}x")
    print(
        f"  cache build (one-off)         : {build_1:.2f} s with 1 thread, {build_n:.2f} s with the default pool; "
        f"{cached.decoded_bytes / 2**20:.0f} MiB decoded"
    )
    print(f"  cached == uncached items      : {same}")
    verdict = "met" if rate_cached >= TARGET_PER_WORKER else "NOT met"
    print(f"  target >= {TARGET_PER_WORKER:.0f} patches/s per worker (cache=True): {verdict}")


if __name__ == "__main__":
    main()
