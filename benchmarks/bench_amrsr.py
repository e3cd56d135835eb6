"""Benchmark AMRSR's reference matching: time and peak memory of the part-based trade-off (spec B11, supp. Table 7).

Default workload: one random 125×125 LR image (``torch.rand``, fixed seed) matched against N_M random 500×500
references by :class:`sresolve.ops.refmatch.ReferenceMatcher` (``vgg_weights="random"``: there is no weights file here
and the cost does not depend on the weight values; N_C = 4 subvectors with the paper's subvector division "input"
(split at level 1 only, supp. Table 4; RESULTS_amrsr.md up to now was measured with the former behaviour "both",
whose levels 2/3 also ran per subvector: cheap next to level 1), cosine, joint level 1, "same" padding), i.e.
``matcher(lr, [refs])`` under ``torch.inference_mode()`` with the VGG features included. Configurations (N_I, N_R, N_M,
mode):

* the streamed grid N_R ∈ {1, 4, 16} × N_M ∈ {1, 2, 4, 8} at N_I = 1 (running best over candidates, the default);
* ``batched`` rows (``stream=False``: every candidate stored, one argmax over all of them, the literal Algorithm 1) for
  N_R = 1 at each N_M, to show that streaming keeps memory flat in N_M while the batched form grows;
* the supplement's (N_I, N_R) = (4, 4) row at N_M = 4.

Each configuration runs in a fresh subprocess (so peak memory is clean): one tiny warm-up match (kernel selection,
lazy init), then the peak-memory meter is started (:func:`sresolve.analysis.complexity.peak_memory_meter`; CPU: growth
of the RSS high-water mark, VmHWM reset through ``/proc/self/clear_refs``; CUDA: ``max_memory_allocated`` growth) and
``--repeats`` timed matches follow (wall clock, CUDA-synchronised; the median is reported). Inputs, the VGG and the
matcher exist before the meter starts, so the growth is the matching's working memory (VGG activations, level-1 score
volume, swapped maps, running bests or stored candidates). The child also reports its CPU time over the same span
(``time.process_time``, all threads: less sensitive than wall time to other jobs sharing the CPU; host time only on
CUDA) and the 1-minute load average when it ends (``load``; about the thread count when the benchmark runs alone).

Next to the measured memory the analytic level-1 score volume of B11 is printed: (H·W/N_I)·(Hr·Wr/16/N_R) float32
(H×W the LR, Hr×Wr a reference; channel groups are streamed, so one group's volume is alive at a time), and the size
of one set of swapped maps O (1792·H·W floats: 256 + 128·4 + 64·16 channel-areas). Ratios: time and memory against the
(N_I=1, N_R=1, N_M=1, streamed) row, always measured in the same run, and the largest against the smallest N_M
measured per (N_I, N_R, mode) (N_M = 8 vs 1 on the default grid).

Usage: ``python benchmarks/bench_amrsr.py [--quick] [--lr-size 125] [--ref-size 500] [--nr 1 4 16] [--nm 1 2 4 8]
[--batched-nm 1 2 4 8] [--no-ni-row] [--cells N_I:N_R:N_M:s|b ...] [--repeats 1] [--device cpu|cuda] [--threads N]
[--json out.json]``. ``--cells 1:16:2:s 1:1:4:b`` measures only those cells (s: streamed, b: batched) plus the
reference row. On a 2-core CPU one full-size match at N_R = N_M = 1 takes about 30 s (time grows about linearly with
N_M), so the full grid takes over half an hour; ``--quick`` (64×64 LR, 256×256 references) runs it in about 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sresolve.analysis.complexity import peak_memory_meter
from sresolve.ops.refmatch import ReferenceMatcher

N_SUBVECTORS = 4
SUBVECTOR_DIVISION = "input"  # supp. Table 4, the paper's AMRSR (the matcher's default)
O_CHANNEL_AREAS = 256 + 128 * 4 + 64 * 16  # swapped maps o3/o2/o1 per LR pixel (B11)
Config = tuple[int, int, int, bool]  # (N_I, N_R, N_M, stream)
REFERENCE: Config = (1, 1, 1, True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(lr_size: int, ref_size: int, n_refs: int, seed: int, device: torch.device) -> tuple[Any, list[Any]]:
    """LR 1×3×s×s and ``n_refs`` references 3×S×S, uniform noise from one fixed-seed generator (on the CPU, then moved:
    the same values on every device)."""
    gen = torch.Generator().manual_seed(seed)
    lr = torch.rand(1, 3, lr_size, lr_size, generator=gen)
    refs = [torch.rand(3, ref_size, ref_size, generator=gen) for _ in range(n_refs)]
    return lr.to(device), [r.to(device) for r in refs]


def score_volume_mib(lr_size: int, ref_size: int, n_i: int, n_r: int) -> float:
    """B11: (H·W/N_I)·(Hr·Wr/16/N_R) float32 values of one (input part, reference part) level-1 volume, in MiB."""
    return (lr_size * lr_size / n_i) * (ref_size * ref_size / 16 / n_r) * 4 / 2**20


def o_maps_mib(lr_size: int) -> float:
    """One set of swapped maps (o3, o2, o1) for the whole LR, float32, in MiB."""
    return O_CHANNEL_AREAS * lr_size * lr_size * 4 / 2**20


def child(args: argparse.Namespace) -> None:
    """Fresh process: warm up, then ``--repeats`` timed matches of one configuration under the memory meter."""
    n_i, n_r, n_m, stream = args.child
    device = torch.device(args.device)
    matcher = ReferenceMatcher(
        vgg_weights="random",
        n_input_parts=n_i,
        n_ref_parts=n_r,
        n_subvectors=N_SUBVECTORS,
        stream=bool(stream),
        subvector_division=SUBVECTOR_DIVISION,
    ).to(device)
    lr, refs = make_inputs(args.lr_size, args.ref_size, n_m, args.seed, device)
    with torch.inference_mode():  # tiny warm-up (kernel selection, lazy init): negligible cost
        side = matcher.min_ref_size
        matcher(lr[..., :8, :8], [[r[:, :side, :side] for r in refs[:2]]])
        _sync(device)
        growth, method = peak_memory_meter(device)
        times, cpu_times = [], []
        for _ in range(args.repeats):
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            out = matcher(lr, [refs])
            _sync(device)
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
            del out
        peak = growth()
    load = float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else None
    print(json.dumps({"times_s": times, "cpu_s": cpu_times, "peak_mib": peak, "method": method, "load1": load}))


def measure(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", *map(str, (cfg[0], cfg[1], cfg[2], int(cfg[3])))]
    cmd += ["--lr-size", str(args.lr_size), "--ref-size", str(args.ref_size), "--repeats", str(args.repeats)]
    cmd += ["--seed", str(args.seed), "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode:
        tail = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "(killed: out of memory?)"
        return {"error": f"rc {res.returncode}: {tail}"}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["time_s"] = statistics.median(out["times_s"])
    out["cpu_s"] = statistics.median(out["cpu_s"])
    return out


def configs(args: argparse.Namespace) -> list[Config]:
    """The reference row first, then the streamed grid, the batched rows, the N_I row (duplicates dropped); or the
    reference row and ``--cells``."""
    cfgs: list[Config] = [REFERENCE]
    if args.cells:
        return list(dict.fromkeys(cfgs + args.cells))
    cfgs += [(1, n_r, n_m, True) for n_r in args.nr for n_m in args.nm]
    cfgs += [(1, 1, n_m, False) for n_m in args.batched_nm]
    if args.ni_row:
        cfgs.append((4, 4, 4, True))
    return list(dict.fromkeys(cfgs))


def parse_cell(text: str) -> Config:
    """``"N_I:N_R:N_M:s"`` (streamed) or ``"...:b"`` (batched, ``stream=False``) → a configuration."""
    parts = text.split(":")
    if len(parts) != 4 or parts[3] not in ("s", "b") or not all(p.isdigit() for p in parts[:3]):
        raise argparse.ArgumentTypeError(f"cell {text!r}: expected N_I:N_R:N_M:s|b, e.g. 1:16:2:s")
    return int(parts[0]), int(parts[1]), int(parts[2]), parts[3] == "s"


def _ratio(num: float | None, den: float | None) -> str:
    return "-" if num is None or not den else f"{num / den:.2f}"


def report(results: dict[Config, dict[str, Any]], args: argparse.Namespace, header: str) -> list[str]:
    """Markdown tables: per configuration, then N_M = max against N_M = min per (N_I, N_R, mode)."""
    ref = results.get(REFERENCE, {})
    lines = [header, ""]
    lines.append(
        "| N_I | N_R | N_M | mode | time s | CPU s | peak MiB | B11 volume MiB | time / ref | CPU / ref | mem / ref "
        "| load |"
    )
    lines.append("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (n_i, n_r, n_m, stream), res in results.items():
        mode = "stream" if stream else "batched"
        vol = score_volume_mib(args.lr_size, args.ref_size, n_i, n_r)
        lead = f"| {n_i} | {n_r} | {n_m} | {mode} |"
        if "error" in res:
            lines.append(f"{lead} {res['error']} | | | {vol:.1f} | | | | |")
            continue
        ratios = [_ratio(res[k], ref.get(k)) for k in ("time_s", "cpu_s", "peak_mib")]
        load = "-" if res.get("load1") is None else f"{res['load1']:.1f}"
        lines.append(
            f"{lead} {res['time_s']:.2f} | {res['cpu_s']:.1f} | {res['peak_mib']:.0f} | {vol:.1f} | "
            + " | ".join(ratios)
            + f" | {load} |"
        )
    rows = []
    for n_i, n_r, stream in sorted({(c[0], c[1], c[3]) for c in results}):
        ok = sorted(c[2] for c, r in results.items() if c[:2] == (n_i, n_r) and c[3] == stream and "error" not in r)
        if len(ok) < 2:
            continue
        a, b = results[(n_i, n_r, ok[0], stream)], results[(n_i, n_r, ok[-1], stream)]
        ratios = [_ratio(b[k], a[k]) for k in ("time_s", "cpu_s", "peak_mib")]
        rows.append(
            f"| {n_i} | {n_r} | {'stream' if stream else 'batched'} | {ok[-1]} / {ok[0]} | " + " | ".join(ratios) + " |"
        )
    if rows:
        lines += [
            "",
            "| N_I | N_R | mode | N_M | time ratio | CPU ratio | mem ratio |",
            "|---:|---:|---|---|---:|---:|---:|",
        ]
        lines += rows
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64×64 LR with 256×256 references (overrides the sizes)")
    ap.add_argument("--lr-size", type=int, default=125, help="LR side (square)")
    ap.add_argument("--ref-size", type=int, default=500, help="reference side (square)")
    ap.add_argument("--nr", type=int, nargs="+", default=[1, 4, 16], help="N_R of the streamed grid")
    ap.add_argument("--nm", type=int, nargs="+", default=[1, 2, 4, 8], help="N_M of the streamed grid")
    ap.add_argument("--batched-nm", type=int, nargs="*", default=[1, 2, 4, 8], help="N_M of the stream=False rows")
    ap.add_argument("--ni-row", action=argparse.BooleanOptionalAction, default=True, help="the (4, 4) row at N_M=4")
    ap.add_argument("--repeats", type=int, default=1, help="timed matches per configuration (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument(
        "--cells",
        nargs="+",
        type=parse_cell,
        default=None,
        help="only these N_I:N_R:N_M:s|b cells (+ the reference row)",
    )
    ap.add_argument("--child", type=int, nargs=4, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.lr_size, args.ref_size = 64, 256
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    if args.child:
        child(args)
        return

    cfgs = configs(args)
    header = (
        f"AMRSR reference matching, LR {args.lr_size}×{args.lr_size}, references {args.ref_size}×{args.ref_size}, "
        f"N_C={N_SUBVECTORS} (division {SUBVECTOR_DIVISION}), random VGG, {args.device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, "
        f"median of {args.repeats}; memory: "
        + ("CUDA max_memory_allocated growth" if args.device == "cuda" else "peak RSS growth (VmHWM), fresh process")
        + f"; one set of swapped maps O = {o_maps_mib(args.lr_size):.1f} MiB"
    )
    print(header, flush=True)
    results: dict[Config, dict[str, Any]] = {}
    t_all = time.perf_counter()
    for cfg in cfgs:
        t0 = time.perf_counter()
        results[cfg] = measure(cfg, args)
        print(
            f"[{time.perf_counter() - t0:6.1f} s] N_I={cfg[0]} N_R={cfg[1]} N_M={cfg[2]} stream={cfg[3]}: "
            f"{ {k: v for k, v in results[cfg].items() if k != 'times_s'} }",
            flush=True,
        )
    print(f"total {time.perf_counter() - t_all:.0f} s\n")
    print("\n".join(report(results, args, header)))
    if args.json:
        with open(args.json, "w") as f:
            payload = {"header": header, "lr_size": args.lr_size, "ref_size": args.ref_size}
            payload["runs"] = [{"n_i": c[0], "n_r": c[1], "n_m": c[2], "stream": c[3], **r} for c, r in results.items()]
            json.dump(payload, f, indent=1)


if __name__ == "__main__":
    main()
