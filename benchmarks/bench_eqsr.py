"""Benchmark EQSR (EQNet 6×5, 13.6 M params) inference at arbitrary scales: untiled vs tiled (spec choice E5).

For every scale (default ×2.5 and ×6) on one random ``--size``² LR image (default 256², as the issue asks), two modes
run, each in a fresh subprocess so that peak memory is clean:

* ``untiled`` — the whole LR through the backbone and every HR query through the decoder at once (the official
  inference; the reference of the ratios);
* ``tiled`` — :func:`sresolve.ops.tiling.upscale_arbitrary`: the backbone on ``--tile``² LR tiles with
  ``--overlap`` px overlap blending, the decoder on ``--query-tile``² tiles of the HR query grid (exact: halo 4 and
  global ECA statistics gathered first).

Reported per (scale, mode): wall time of one forward (``no_grad``), peak memory growth of that forward (CPU: peak
RSS via VmHWM reset through ``/proc/self/clear_refs``; CUDA: ``torch.cuda.max_memory_allocated``), max |diff| from
the untiled output (the backbone tiling is approximate; ``--tile 0`` tiles only the decoder, which is exact), then
the ratios ``tiled / untiled``. An untiled run whose decoder would need more than ``--max-gib`` (estimated from the
query count: about 12 maps of 256 float32 channels per HR pixel) is not started and reported as skipped.

Usage: ``python benchmarks/bench_eqsr.py [--size 256] [--scales 2.5 6] [--gpu] [--json out.json]``. On the 2-core CPU
one forward at 256² takes minutes per mode; ``--size 96`` is a quick check.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_safmn import _sync, peak_meter  # device sync and peak-memory meter of the SAFMN benchmark
from sresolve.archs import create
from sresolve.ops.tiling import upscale_arbitrary

MODES = ("untiled", "tiled")
BYTES_PER_QUERY = 12 * 256 * 4  # decoder maps alive at once per HR pixel, float32 (estimate for the memory guard)


def build(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    net = create("eqsr")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net.eval().to(device)


def run_mode(args: argparse.Namespace) -> None:
    """Child process: one timed forward of ``args.child`` at ``args.scale``; prints JSON, saves the output."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device("cuda" if args.gpu and torch.cuda.is_available() else "cpu")
    net = build(device)
    torch.manual_seed(1)
    x = torch.rand(1, 3, args.size, args.size, device=device)
    tiled = args.child == "tiled"
    kwargs = {"tile": args.tile or None, "overlap": args.overlap, "query_tile": args.query_tile} if tiled else {}
    if device.type == "cuda":
        with torch.no_grad():
            upscale_arbitrary(net, x[..., :32, :32], scale=args.scale)  # warm-up kernels outside the measurement
    peak_of, _ = peak_meter(device)
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        y = upscale_arbitrary(net, x, scale=args.scale, **kwargs)
    _sync(device)
    elapsed = time.perf_counter() - t0
    peak = peak_of()
    torch.save(y.cpu(), args.out)
    print(json.dumps({"time_s": elapsed, "peak_mib": peak, "device": device.type, "out": list(y.shape[-2:])}))


def measure(mode: str, scale: float, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--out", str(out), "--size", str(args.size)]
    cmd += ["--child-scale", str(scale), "--tile", str(args.tile), "--overlap", str(args.overlap)]
    cmd += ["--query-tile", str(args.query_tile)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.gpu:
        cmd.append("--gpu")
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "(killed: out of memory?)"
        return {"error": f"rc {res.returncode}: {tail}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="LR side")
    ap.add_argument("--scales", type=float, nargs="+", default=[2.5, 6.0])
    ap.add_argument("--tile", type=int, default=128, help="backbone LR tile (0 = backbone untiled)")
    ap.add_argument("--overlap", type=int, default=32, help="backbone tile overlap (LR px)")
    ap.add_argument("--query-tile", type=int, default=256, help="decoder tile side on the HR query grid")
    ap.add_argument("--max-gib", type=float, default=18.0, help="skip untiled runs estimated above this")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", choices=MODES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-scale", dest="scale", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_mode(args)
        return

    results: dict[str, Any] = {"size": args.size, "tile": args.tile, "query_tile": args.query_tile, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            out_side = round(args.size * scale)
            estimate_gib = out_side * out_side * BYTES_PER_QUERY / 2**30
            outputs: dict[str, torch.Tensor] = {}
            runs: dict[str, Any] = {}
            for mode in MODES:
                if mode == "untiled" and not args.gpu and estimate_gib > args.max_gib:
                    runs[mode] = {"error": f"skipped: decoder estimated {estimate_gib:.1f} GiB > --max-gib"}
                    print(f"x{scale:g} {mode}: {runs[mode]['error']}", flush=True)
                    continue
                t0 = time.perf_counter()
                path = Path(tmp) / f"{mode}_{scale:g}.pt"
                runs[mode] = measure(mode, scale, args, path)
                if "error" not in runs[mode]:
                    outputs[mode] = torch.load(path, weights_only=True)
                print(f"[{time.perf_counter() - t0:6.0f} s] x{scale:g} {mode}: {runs[mode]}", flush=True)
            if "untiled" in outputs and "tiled" in outputs:
                ref, tiled = runs["untiled"], runs["tiled"]
                tiled["time_ratio"] = tiled["time_s"] / ref["time_s"]
                tiled["mem_ratio"] = tiled["peak_mib"] / ref["peak_mib"]
                tiled["max_abs_diff"] = (outputs["tiled"] - outputs["untiled"]).abs().max().item()
            results["runs"][f"x{scale:g}"] = runs

    print(
        f"\nEQSR 6x5, one {args.size}x{args.size} LR image; tiled = backbone tile {args.tile or 'none'} "
        f"(overlap {args.overlap}) + decoder query tile {args.query_tile} (reference: untiled)"
    )
    head = f"{'scale':<7}{'mode':<9}{'out':>11}{'time s':>9}{'peak MiB':>10}"
    print(head + f"{'time/ref':>10}{'mem/ref':>9}{'max|diff|':>11}")
    for key, runs in results["runs"].items():
        for mode, res in runs.items():
            if "error" in res:
                print(f"{key:<7}{mode:<9} {res['error']}")
                continue
            out = "x".join(str(v) for v in res["out"])
            ratios = (
                f"{res['time_ratio']:>10.3f}{res['mem_ratio']:>9.3f}{res['max_abs_diff']:>11.2e}"
                if "time_ratio" in res
                else f"{'1.000':>10}{'1.000':>9}{'':>11}"
                if mode == "untiled"
                else ""
            )
            print(f"{key:<7}{mode:<9}{out:>11}{res['time_s']:>9.1f}{res['peak_mib']:>10.0f}{ratios}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
