"""Benchmark HAT ×4 (the full ``hat`` variant, 20.8 M params) against spandrel's independent HAT on the same weights.

Both implementations run in the same process on the same random weights (LayerNorms and bias tables perturbed too):

* **training step** — forward + L1 loss + backward in ``train()`` mode (stochastic depth on), batch ``--train-batch``
  (4) of ``--train-size`` (64×64) LR patches, the official recipe's per-GPU batch and patch; median / min time over
  ``--train-runs`` steps after ``--warmup`` steps, the two implementations interleaved so that machine noise hits both
  alike;
* **inference** — one ``--infer-size`` (128×128) LR image in ``eval()`` mode under ``no_grad``: median / min time;
* **peak memory** of one training step and of one inference pass: on the CPU the growth of the peak RSS (VmHWM reset
  through ``/proc/self/clear_refs``, else ``ru_maxrss``) measured in a fresh subprocess per implementation and workload,
  the approach of ``benchmarks/bench_safmn.py`` (whose ``/proc`` reader is reused); on CUDA the growth of
  ``torch.cuda.max_memory_allocated``;
* the max abs difference of the eval outputs (must be ~0) and the ours/reference ratios of time and memory.

``--gpu``: when CUDA is available, the models move to the GPU and every workload is also timed under bf16 autocast and
with ``torch.compile`` (fp32 and bf16 autocast), each against fp32 eager; without CUDA the section is skipped with a
message. Compilation failures of one implementation are reported, not fatal.

Usage: ``python benchmarks/bench_hat.py [--train-runs 3] [--infer-runs 3] [--warmup 1] [--threads N] [--gpu]
[--json out.json]``. On a 2-core CPU the default run takes about 4 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_safmn import _sync, peak_meter  # device sync and peak-memory meter of the SAFMN benchmark
from sresolve.archs import create

IMPLS = ("ours", "reference")


# ------------------------------------------------------------------------------------------------ models and workloads
def build_pair(variant: str = "hat", scale: int = 4, seed: int = 0) -> dict[str, nn.Module]:
    """Our ``variant`` with perturbed random weights and spandrel's HAT built with the same hyper-parameters and
    loaded with the same state dict (``strict=True``)."""
    from spandrel.architectures.HAT import HAT as RefHAT

    torch.manual_seed(seed)
    ours = create(variant, scale=scale)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    blk = ours.layers[0].residual_group.blocks[0]
    ref = RefHAT(
        upscale=scale,
        embed_dim=ours.embed_dim,
        depths=ours.depths,
        num_heads=ours.num_heads,
        window_size=ours.window_size,
        compress_ratio=ours.compress_ratio,
        squeeze_factor=ours.embed_dim // blk.conv_block.cab[3].attention[1].out_channels,
        conv_scale=ours.conv_scale,
        overlap_ratio=ours.overlap_ratio,
        mlp_ratio=blk.mlp.fc1.out_features / ours.embed_dim,
        drop_path_rate=0.1,
    )
    ref.load_state_dict(ours.state_dict(), strict=True)
    return {"ours": ours, "reference": ref}


def make_inputs(kind: str, args: argparse.Namespace, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """Deterministic LR input (and HR target for ``kind='train'``)."""
    g = torch.Generator().manual_seed(1)
    if kind == "train":
        h, w = args.train_size
        x = torch.rand(args.train_batch, 3, h, w, generator=g)
        y = torch.rand(args.train_batch, 3, h * args.scale, w * args.scale, generator=g)
        return x.to(device), y.to(device)
    return torch.rand(1, 3, *args.infer_size, generator=g).to(device), None


def train_step(model: nn.Module, x: Tensor, y: Tensor, autocast: torch.dtype | None = None) -> None:
    """One optimisation step minus the optimiser: zero grads, forward, L1 loss (in fp32), backward."""
    model.zero_grad(set_to_none=True)
    with _autocast(x.device, autocast):
        out = model(x)
    F.l1_loss(out.float(), y).backward()


def infer(model: nn.Module, x: Tensor, autocast: torch.dtype | None = None) -> Tensor:
    with torch.no_grad(), _autocast(x.device, autocast):
        return model(x)


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield


def workload(
    kind: str, model: nn.Module, x: Tensor, y: Tensor | None, autocast: torch.dtype | None = None
) -> Callable[[], Any]:
    """A no-argument callable running one step of ``kind`` ('train' or 'infer'); sets the module mode."""
    if kind == "train":
        model.train()
        assert y is not None
        return lambda: train_step(model, x, y, autocast)
    model.eval()
    return lambda: infer(model, x, autocast)


def time_interleaved(
    fns: dict[str, Callable[[], Any]], warmup: int, runs: int, device: torch.device
) -> dict[str, list[float]]:
    """Wall-clock seconds of ``runs`` calls of each function after ``warmup`` calls, implementations interleaved."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + runs):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------------------------ memory
def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: peak-RSS growth (MiB) of one ``args.mem_kind`` step of implementation ``args.mem_child``.

    The model and the inputs are built first; the kernel's high-water mark is then reset (``clear_refs`` = 5) so that
    imports and construction do not hide the step. Gradient buffers are allocated inside the measured training step
    (as in the first step of a run).
    """
    device = torch.device("cpu")
    model = build_pair(args.variant, args.scale)[args.mem_child]
    x, y = make_inputs(args.mem_kind, args, device)
    fn = workload(args.mem_kind, model, x, y)
    growth, method = peak_meter()
    fn()
    print(json.dumps({"peak_rss_growth_mib": growth(), "method": method}))


def cpu_peak_memory(impl: str, kind: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--mem-child", impl, "--mem-kind", kind, "--variant", args.variant]
    cmd += ["--scale", str(args.scale), "--train-batch", str(args.train_batch)]
    cmd += ["--train-size", *map(str, args.train_size), "--infer-size", *map(str, args.infer_size)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"memory subprocess {impl}/{kind} failed (rc {res.returncode}):\n{res.stderr[-2000:]}")
    return float(json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"])


def cuda_peak_memory(fn: Callable[[], Any]) -> float:
    """Growth of ``torch.cuda.max_memory_allocated`` (MiB) during one call of ``fn``."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ------------------------------------------------------------------------------------------------ GPU section
def gpu_section(models: dict[str, nn.Module], args: argparse.Namespace) -> dict[str, Any]:
    """fp32 eager vs bf16 autocast vs ``torch.compile`` (fp32, bf16 autocast) on CUDA, for both implementations."""
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(device)}
    for impl, model in models.items():
        model.to(device)
        compiled = torch.compile(model)
        variants: dict[str, tuple[nn.Module, torch.dtype | None]] = {
            "eager_fp32": (model, None),
            "eager_bf16_autocast": (model, torch.bfloat16),
            "compile_fp32": (compiled, None),
            "compile_bf16_autocast": (compiled, torch.bfloat16),
        }
        res: dict[str, Any] = {}
        for kind in ("train", "infer"):
            x, y = make_inputs(kind, args, device)
            for name, (net, ac) in variants.items():
                key = f"{kind}/{name}"
                try:
                    fn = workload(kind, net, x, y, ac)
                    t = time_interleaved({key: fn}, warmup=max(args.warmup, 3), runs=args.gpu_runs, device=device)[key]
                    res[key] = {
                        "median_ms": 1e3 * statistics.median(t),
                        "min_ms": 1e3 * min(t),
                        "peak_mem_mib": cuda_peak_memory(fn),
                    }
                except Exception as e:
                    res[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            for name in variants:
                base, cur = res[f"{kind}/eager_fp32"], res[f"{kind}/{name}"]
                if "median_ms" in base and "median_ms" in cur:
                    cur["speedup_vs_eager_fp32"] = base["median_ms"] / cur["median_ms"]
        out[impl] = res
        model.to("cpu")
        del compiled
        torch.cuda.empty_cache()
    return out


def _print_gpu(res: dict[str, Any]) -> None:
    print(f"\nGPU ({res['device']}), fp32 without TF32 as the eager baseline")
    print(f"{'impl':<10} {'workload':<28} {'median ms':>10} {'min ms':>10} {'peak MiB':>10} {'speedup':>8}")
    for impl in IMPLS:
        for key, r in res[impl].items():
            if "error" in r:
                print(f"{impl:<10} {key:<28} {r['error']}")
            else:
                print(
                    f"{impl:<10} {key:<28} {r['median_ms']:>10.2f} {r['min_ms']:>10.2f} {r['peak_mem_mib']:>10.1f} "
                    f"{r.get('speedup_vs_eager_fp32', float('nan')):>8.2f}"
                )


# ------------------------------------------------------------------------------------------------ main
def _progress(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="hat", choices=["hat", "hat_s", "hat_l"])
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--train-size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    ap.add_argument("--infer-size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    ap.add_argument("--train-runs", type=int, default=3)
    ap.add_argument("--infer-runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    ap.add_argument("--gpu", action="store_true", help="also time bf16 autocast and torch.compile on CUDA")
    ap.add_argument("--gpu-runs", type=int, default=20)
    ap.add_argument("--no-mem", action="store_true", help="skip the CPU peak-memory subprocesses")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mem-kind", default="train", choices=["train", "infer"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mem_child:
        memory_child(args)
        return

    cpu = torch.device("cpu")
    t_start = time.perf_counter()
    # Memory first, one fresh subprocess at a time, while this process holds no model: a HAT x4 training step of
    # batch 4 at 64x64 peaks at several GiB on the CPU, and two such processes at once can exhaust a small machine.
    mem: dict[tuple[str, str], float] = {}
    for kind in ("train", "infer"):
        for impl in IMPLS:
            mem[impl, kind] = float("nan") if args.no_mem else cpu_peak_memory(impl, kind, args)
            _progress(f"peak memory {impl}/{kind}: {mem[impl, kind]:.0f} MiB", t_start)

    models = build_pair(args.variant, args.scale)
    n_params = sum(p.numel() for p in models["ours"].parameters())
    res: dict[str, Any] = {
        "workload": f"{args.variant} x{args.scale} ({n_params / 1e6:.3f} M params), cpu, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}",
        "train": f"batch {args.train_batch} x 3 x {args.train_size[0]} x {args.train_size[1]}, fwd + L1 + bwd, train()",
        "infer": f"1 x 3 x {args.infer_size[0]} x {args.infer_size[1]}, eval(), no_grad",
    }
    xi, _ = make_inputs("infer", args, cpu)
    outs = {impl: infer(m.eval(), xi) for impl, m in models.items()}
    res["max_abs_diff_infer"] = (outs["ours"] - outs["reference"]).abs().max().item()
    del outs

    mem_kind = "peak RSS growth of one step, fresh subprocess"
    for kind, runs in (("train", args.train_runs), ("infer", args.infer_runs)):
        x, y = make_inputs(kind, args, cpu)
        fns = {impl: workload(kind, m, x, y) for impl, m in models.items()}
        times = time_interleaved(fns, args.warmup, runs, cpu)
        for impl in IMPLS:
            res.setdefault(impl, {})[kind] = {
                "median_ms": 1e3 * statistics.median(times[impl]),
                "min_ms": 1e3 * min(times[impl]),
                "peak_mem_mib": mem[impl, kind],
            }
        o, r = res["ours"][kind], res["reference"][kind]
        res[f"ratio_{kind}"] = {
            "time": o["median_ms"] / r["median_ms"],
            "memory": o["peak_mem_mib"] / max(r["peak_mem_mib"], 1e-9),
        }
        _progress(f"timed {kind}", t_start)
    for m in models.values():
        m.zero_grad(set_to_none=True)

    print(res["workload"])
    print(f"train: {res['train']};  infer: {res['infer']}")
    print(f"eval outputs: max |ours - reference| = {res['max_abs_diff_infer']:.3g}")
    print(f"{'impl':<10} {'workload':<7} {'median ms':>10} {'min ms':>10} {'peak MiB':>10}   ({mem_kind})")
    for kind in ("train", "infer"):
        for impl in IMPLS:
            r = res[impl][kind]
            print(f"{impl:<10} {kind:<7} {r['median_ms']:>10.1f} {r['min_ms']:>10.1f} {r['peak_mem_mib']:>10.1f}")
    for kind in ("train", "infer"):
        q = res[f"ratio_{kind}"]
        print(f"ours/reference {kind}: time {q['time']:.3f}, peak memory {q['memory']:.3f}")

    if args.gpu:
        if torch.cuda.is_available():
            res["gpu"] = gpu_section(models, args)
            _print_gpu(res["gpu"])
        else:
            print("\n--gpu: CUDA is not available, GPU section skipped")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
