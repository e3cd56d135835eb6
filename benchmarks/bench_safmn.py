"""Benchmark SAFMN inference against spandrel's independent implementation (the in-run reference).

Default workload: SAFMN ×4 (dim 36, 8 blocks) on a 1×3×180×320 LR input (720p output, the setting of the SAFMN
paper's FLOP count), on the CPU. Reports, for ours and the reference on the *same weights*:

* median / min latency over ``--runs`` forward passes (after ``--warmup`` passes), the two implementations
  interleaved so that machine noise hits both alike;
* peak memory of one forward pass: on CUDA ``torch.cuda.max_memory_allocated`` growth; on the CPU the growth of the
  process's peak RSS (``resource.getrusage().ru_maxrss``) measured in a fresh subprocess per implementation;
* the max abs difference of the outputs (must be ~0), and the ours/reference ratios.

Usage: ``python benchmarks/bench_safmn.py [--variant safmn] [--scale 4] [--size 180 320] [--runs 10] [--device cpu]
[--threads N] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

from sresolve.analysis.complexity import peak_memory_meter as peak_meter
from sresolve.archs import create


def build_pair(variant: str, scale: int, seed: int = 0) -> dict[str, nn.Module]:
    """Our network with random weights (LayerNorms perturbed too) and spandrel's SAFMN loaded with the same weights."""
    from spandrel.architectures.SAFMN import SAFMN as RefSAFMN

    torch.manual_seed(seed)
    ours = create(variant, scale=scale)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ref = RefSAFMN(dim=ours.dim, n_blocks=ours.n_blocks, ffn_scale=ours.ffn_scale, upscaling_factor=scale)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return {"ours": ours.eval(), "reference": ref.eval()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_child(args: argparse.Namespace) -> None:
    """Run in a fresh process: growth of the peak RSS (MiB) during one forward pass of ``args.mem_child``.

    The kernel's high-water mark (VmHWM) is reset by writing 5 to /proc/self/clear_refs just before the pass, so the
    import and model-building peaks do not hide the pass; without that file, ``ru_maxrss`` is used (less precise).
    """
    model = build_pair(args.variant, args.scale)[args.mem_child]
    x = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(1))
    growth, method = peak_meter()
    with torch.inference_mode():
        y = model(x)
    print(json.dumps({"peak_rss_growth_mib": growth(), "method": method, "out_shape": list(y.shape)}))


def cpu_peak_memory(impl: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--mem-child", impl, "--variant", args.variant, "--scale", str(args.scale)]
    cmd += ["--size", *map(str, args.size)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"])


def cuda_peak_memory(model: nn.Module, x: torch.Tensor) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.inference_mode():
        model(x)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="safmn", choices=["safmn", "safmn_c48n12", "safmn_l"])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mem_child:
        memory_child(args)
        return

    device = torch.device(args.device)
    models = {impl: m.to(device) for impl, m in build_pair(args.variant, args.scale).items()}
    x = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        outs = {impl: m(x) for impl, m in models.items()}
    max_diff = (outs["ours"] - outs["reference"]).abs().max().item()
    del outs

    times: dict[str, list[float]] = {impl: [] for impl in models}
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            for impl, m in models.items():
                _sync(device)
                t0 = time.perf_counter()
                m(x)
                _sync(device)
                if i >= args.warmup:
                    times[impl].append(time.perf_counter() - t0)

    if device.type == "cuda":
        mem = {impl: cuda_peak_memory(m, x) for impl, m in models.items()}
        mem_kind = "CUDA max_memory_allocated growth"
    else:
        mem = {impl: cpu_peak_memory(impl, args) for impl in models}
        mem_kind = "peak RSS growth of one pass, fresh subprocess"

    res: dict[str, Any] = {
        "workload": f"{args.variant} x{args.scale}, input 1x3x{args.size[0]}x{args.size[1]}, {device.type}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}",
        "runs": args.runs,
        "max_abs_diff": max_diff,
    }
    for impl in models:
        res[impl] = {
            "median_ms": 1e3 * statistics.median(times[impl]),
            "min_ms": 1e3 * min(times[impl]),
            "peak_mem_mib": mem[impl],
        }
    res["ratio_median_latency"] = res["ours"]["median_ms"] / res["reference"]["median_ms"]
    res["ratio_peak_mem"] = res["ours"]["peak_mem_mib"] / max(res["reference"]["peak_mem_mib"], 1e-9)

    print(res["workload"])
    print(f"outputs: max |ours - reference| = {max_diff:.3g}")
    print(f"{'impl':<10} {'median ms':>10} {'min ms':>10} {'peak MiB':>10}   ({mem_kind})")
    for impl in models:
        r = res[impl]
        print(f"{impl:<10} {r['median_ms']:>10.1f} {r['min_ms']:>10.1f} {r['peak_mem_mib']:>10.1f}")
    print(f"ours/reference: latency {res['ratio_median_latency']:.3f}, peak memory {res['ratio_peak_mem']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
