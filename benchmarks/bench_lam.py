"""Benchmark LAM (``sresolve.analysis.lam.lam``) against the per-step loop of the LAM release (the in-run reference).

Default workload: HAT-S ×4 and SAFMN ×4 with random weights, a 64×64 LR crop of a bundled photograph, a 16×16 HR
window in the middle, ``m = 50`` path steps, sigma 1.2, 9×9 kernel (the release's settings), on the CPU.

* reference: the structure of the release (``SaliencyModel/BackProp.py``: ``GaussianBlurPath`` + ``Path_gradient``
  + ``saliency_map_PG``): all ``m`` path images and derivative images ``blur(I, (K_k - K_{k-1}) m)`` built first,
  then one forward/backward pass per step with ``target.backward()`` on a leaf tensor, ``grad * derivative``
  stored per step and averaged. The blur is done with the same torch filter as ours (the release uses
  ``cv2.filter2D``; same numbers, see tests/test_lam.py).
* ours: :func:`sresolve.analysis.lam.lam`, ``--batch`` path steps per forward/backward pass (default: its default,
  5).

Both run with frozen parameters (the release leaves them trainable and computes weight gradients it never uses; that
cost is not counted against it), after a warm-up forward/backward pass at batch 1 and at ``--batch``.

Reports the wall time and the process CPU time of each (CPU time is the robust one on a shared machine: other
processes inflate wall time, not CPU time), the ours/reference ratios, steps per second, the difference of the two
attribution maps (max and L1, relative to the reference) and both DIs, and the peak RSS of the process. The maps
agree to float32 rounding (~1e-7 for HAT-S) except where a kink is hit and rounding picks its side: a tie in SAFMN's
adaptive max pooling or an SR pixel with gradient magnitude ~0 (SAFMN: ~1e-3 max, same DI).

The reference's cost is exactly linear in the steps (one pass each), so on slow machines ``--ref-steps R`` times it
on ``R`` steps and scales the time by ``steps / R`` (marked "extrapolated"; the maps are then not compared). One
HAT-S path step on a 64×64 input takes ~3.6 s on 2 CPU cores (~3 min for the 50-step reference), and ours needs
~2 GB of activations per step of a batch (peak RSS ~12 GB at batch 5).

Usage: ``python benchmarks/bench_lam.py [--models HAT-S=hat_s SAFMN=safmn] [--size 64] [--steps 50] [--batch 10]
[--ref-steps R] [--device cpu] [--threads N] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sresolve.analysis.lam import (
    DEFAULT_BATCH,
    DEFAULT_KERNEL_SIZE,
    DEFAULT_SIGMA,
    blur,
    diffusion_index,
    gaussian_kernel,
    gradient_detector,
    lam,
)
from sresolve.analysis.models import build_model


def reference_lam(
    net: nn.Module, lr: Tensor, box: tuple[int, int, int, int], steps: int, sigma: float, kernel_size: int
) -> Tensor:
    """The release's algorithm, one path step per forward/backward pass; returns the ``(C, h, w)`` attribution."""
    device = next(net.parameters()).device
    img = lr[None].to(device=device, dtype=torch.float64)
    kernels = [gaussian_kernel(kernel_size, s) for s in np.linspace(sigma, 0.0, steps + 1)]
    images = torch.cat([blur(img, kernels[k + 1]) for k in range(steps)]).float()
    derivatives = torch.cat([blur(img, (kernels[k + 1] - kernels[k]) * steps) for k in range(steps)]).float()
    grads = torch.zeros_like(images)
    for k in range(steps):
        x = images[k : k + 1].clone().requires_grad_(True)
        target = gradient_detector(net(x), box).sum()
        target.backward()
        grad = torch.nan_to_num(x.grad, nan=0.0)
        grads[k] = grad[0] * derivatives[k]
    return grads.mean(dim=0).double().cpu()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(spec: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from sresolve.data.samples import load_sample

    torch.manual_seed(0)
    label, net = build_model(spec, args.scale)
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)  # only input gradients are needed (both sides alike)
    photo = torch.from_numpy(load_sample("astronaut")).permute(2, 0, 1).float() / 255
    lr = photo[:, 40 : 40 + args.size, 60 : 60 + args.size].contiguous()
    hr_side = args.size * args.scale
    box = ((hr_side - 16) // 2, (hr_side - 16) // 2, 16, 16)
    for b in sorted({1, args.batch}):  # warm-up (allocator, kernel selection) for both batch sizes
        x = lr[None].expand(b, -1, -1, -1).to(device).clone().requires_grad_(True)
        torch.autograd.grad(gradient_detector(net(x), box).sum(), x)
        del x
    row: dict[str, Any] = {"model": label, "params_m": sum(p.numel() for p in net.parameters()) / 1e6}

    ref_steps = args.ref_steps or args.steps
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    ref = reference_lam(net, lr, box, ref_steps, DEFAULT_SIGMA, DEFAULT_KERNEL_SIZE)
    _sync(device)
    row["reference_s"] = (time.perf_counter() - t0) * args.steps / ref_steps
    row["reference_cpu_s"] = (time.process_time() - c0) * args.steps / ref_steps
    row["reference_extrapolated_from"] = ref_steps if ref_steps != args.steps else None

    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    ours = lam(net, lr.to(device), box, steps=args.steps, batch=args.batch, progress=False)
    _sync(device)
    row["ours_s"] = time.perf_counter() - t0
    row["ours_cpu_s"] = time.process_time() - c0

    row["ratio"] = row["ours_s"] / row["reference_s"]
    row["cpu_ratio"] = row["ours_cpu_s"] / row["reference_cpu_s"]
    row["ours_steps_per_s"] = args.steps / row["ours_s"]
    same = ref_steps == args.steps
    diff = (ours.attribution - ref).abs()
    row["max_rel_diff"] = float(diff.max() / ref.abs().max()) if same else float("nan")
    row["l1_rel_diff"] = float(diff.sum() / ref.abs().sum()) if same else float("nan")
    row["di_ours"] = ours.di
    row["di_reference"] = diffusion_index(ref) if same else float("nan")
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["HAT-S=hat_s", "SAFMN=safmn"], help="model specs")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--size", type=int, default=64, help="LR side")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="path steps per pass of ours")
    p.add_argument("--ref-steps", type=int, default=0, help="time the reference on this many steps, scale linearly")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"LAM x{args.scale}, LR {args.size}x{args.size}, steps {args.steps}, batch {args.batch}, device {device}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    rows = []
    for spec in args.models:
        row = bench_model(spec, args, device)
        rows.append(row)
        from_steps = row["reference_extrapolated_from"]
        extra = f" (extrapolated from {from_steps} steps)" if from_steps else ""
        print(
            f"{row['model']:<8} ({row['params_m']:.2f} M): reference (1 step/pass) {row['reference_s']:.1f} s wall, "
            f"{row['reference_cpu_s']:.1f} s CPU{extra} | ours (batch {args.batch}) {row['ours_s']:.1f} s wall, "
            f"{row['ours_cpu_s']:.1f} s CPU ({row['ours_steps_per_s']:.2f} steps/s) | ours/reference wall "
            f"{row['ratio']:.2f}, CPU {row['cpu_ratio']:.2f} | map diff max {row['max_rel_diff']:.1e} L1 "
            f"{row['l1_rel_diff']:.1e} | DI {row['di_ours']:.2f} vs {row['di_reference']:.2f} | "
            f"peak RSS {row['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
