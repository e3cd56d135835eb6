"""Benchmark HMA ×4 (69.9 M params) inference on one LR tile: grid attention computed three ways.

Modes (same random weights, same input, each in a fresh subprocess so that peak memory is clean):

* ``official`` — the release's formulation: explicit ``q @ kᵀ`` + bias + softmax + ``@ v`` over every grid group at
  once (the reference; patched in here, the package does not ship it);
* ``direct`` — ours with ``grid_chunk_mb=0``: scaled-dot-product attention with the bias, every group at once;
* ``chunked`` — ours with the default budget (``--chunk-mb``, 512 MiB of scores per block of groups / query rows).

Reported per mode: wall time of one forward (``no_grad``), peak memory growth of that forward (CPU: the process's
peak RSS, VmHWM reset through ``/proc/self/clear_refs``; CUDA: ``torch.cuda.max_memory_allocated``), and the max abs
difference of the output from the ``official`` mode; then the ratios ``mode / official``. The issue's target: a
256×256 LR tile under 8 GB.

``--gpu`` with CUDA available: the modes run on the GPU, and a training step (batch 4 of 64×64 LR patches, L1,
backward) is timed eager vs ``torch.compile`` in fp32 and bf16 autocast. Without CUDA the section is skipped.

Usage: ``python benchmarks/bench_hma.py [--size 256] [--modes official direct chunked] [--json out.json]``; on a 2-core
CPU one forward at 256×256 takes a few minutes per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_safmn import _sync, peak_meter  # device sync and peak-memory meter of the SAFMN benchmark
from sresolve.archs import create
from sresolve.archs.hma import GridAttentionStep

MODES = ("official", "direct", "chunked")


def _official_step(self: GridAttentionStep, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """The release's attention step: materialised scores, bias added, softmax, matmul."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
    return attn.softmax(-1) @ v


def build(mode: str, scale: int, chunk_mb: float, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create("hma", scale=scale, grid_chunk_mb=0.0 if mode in ("official", "direct") else chunk_mb)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    if mode == "official":
        GridAttentionStep.forward = _official_step  # type: ignore[method-assign]
    return net.eval().to(device)


def run_mode(args: argparse.Namespace) -> None:
    """Child process: one timed forward of ``args.child`` mode; prints JSON, saves the output for comparison."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device("cuda" if args.gpu and torch.cuda.is_available() else "cpu")
    net = build(args.child, args.scale, args.chunk_mb, device)
    torch.manual_seed(1)
    x = torch.rand(1, 3, args.size, args.size, device=device)
    if device.type == "cuda":
        with torch.no_grad():
            net(x[..., :64, :64])  # warm-up kernels outside the measurement
    peak_of, _ = peak_meter(device)
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        y = net(x)
    _sync(device)
    elapsed = time.perf_counter() - t0
    peak = peak_of()
    torch.save(y.cpu(), args.out)
    print(json.dumps({"time_s": elapsed, "peak_mib": peak, "device": device.type}))


def measure(mode: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--out", str(out), "--size", str(args.size)]
    cmd += ["--scale", str(args.scale), "--chunk-mb", str(args.chunk_mb)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.gpu:
        cmd.append("--gpu")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        return {"error": f"rc {res.returncode}: {res.stderr.strip().splitlines()[-1] if res.stderr else ''}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def train_step_section(args: argparse.Namespace) -> dict[str, Any]:
    """CUDA only: training-step time (batch 4, 64×64 LR, L1 + backward), eager vs compiled, fp32 and bf16 autocast."""
    device = torch.device("cuda")
    net = build("chunked", args.scale, args.chunk_mb, device).train()
    compiled = torch.compile(net)
    x = torch.rand(4, 3, 64, 64, device=device)
    y = torch.rand(4, 3, 64 * args.scale, 64 * args.scale, device=device)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(device)}
    for name, model, dtype in (
        ("eager_fp32", net, None),
        ("eager_bf16_autocast", net, torch.bfloat16),
        ("compile_fp32", compiled, None),
        ("compile_bf16_autocast", compiled, torch.bfloat16),
    ):
        times = []
        try:
            for i in range(args.warmup + args.train_runs):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = F.l1_loss(model(x), y)
                loss.backward()
                net.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
            out[name] = min(times)
        except Exception as exc:  # report, keep going
            out[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
    base = out["eager_fp32"]
    for name in ("eager_bf16_autocast", "compile_fp32", "compile_bf16_autocast"):
        if isinstance(out[name], float) and isinstance(base, float):
            out[f"{name}_speedup"] = base / out[name]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="LR tile side")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--chunk-mb", type=float, default=512.0)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gpu", action="store_true", help="run on CUDA and add the training-step section")
    ap.add_argument("--train-runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", choices=MODES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_mode(args)
        return

    results: dict[str, Any] = {"size": args.size, "scale": args.scale, "chunk_mb": args.chunk_mb, "modes": {}}
    outputs: dict[str, Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            t0 = time.perf_counter()
            path = Path(tmp) / f"{mode}.pt"
            res = measure(mode, args, path)
            results["modes"][mode] = res
            if "error" not in res:
                outputs[mode] = torch.load(path, weights_only=True)
            print(f"[{time.perf_counter() - t0:6.0f} s] {mode}: {res}", flush=True)
    ref_mode = "official" if "official" in outputs else next(iter(outputs), None)
    print(f"\nHMA x{args.scale}, one {args.size}x{args.size} LR tile, grid attention per mode (reference: {ref_mode})")
    print(f"{'mode':<10}{'time s':>10}{'peak MiB':>12}{'time/ref':>10}{'mem/ref':>10}{'max|diff|':>12}")
    ref = results["modes"].get(ref_mode, {})
    for mode, res in results["modes"].items():
        if "error" in res:
            print(f"{mode:<10} {res['error']}")
            continue
        diff = (outputs[mode] - outputs[ref_mode]).abs().max().item()
        res["time_ratio"] = res["time_s"] / ref["time_s"]
        res["mem_ratio"] = res["peak_mib"] / ref["peak_mib"]
        res["max_abs_diff"] = diff
        print(
            f"{mode:<10}{res['time_s']:>10.1f}{res['peak_mib']:>12.0f}{res['time_ratio']:>10.3f}"
            f"{res['mem_ratio']:>10.3f}{diff:>12.2e}"
        )
    if args.gpu:
        if torch.cuda.is_available():
            results["train_step"] = train_step_section(args)
            print("\ntraining step (batch 4, 64x64 LR):", json.dumps(results["train_step"], indent=1))
        else:
            print("\n--gpu: CUDA is not available; training-step eager vs compiled section skipped")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
