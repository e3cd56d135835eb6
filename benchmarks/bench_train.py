"""Training throughput of a full Lightning training step (data pipeline included) per network family and mode.

For each family (``hat``, ``hma``, ``safmn``, ``eqsr``) the real run is composed from ``conf/train.yaml`` like
``sresolve-train`` does (``model=<family>``; EQSR with ``data=samples_arbitrary``; the embedded sample photographs,
no download), the LightningModule and DataModule come from :func:`sresolve.cli.train.build_module` /
:func:`~sresolve.cli.train.build_datamodule`, and ``trainer.fit`` runs ``--warmup`` + ``--steps`` optimizer steps
with no validation, no checkpoints and no logger. Modes (``--modes``):

* ``fp32``: eager, ``trainer.precision=32-true`` — the official BasicSR-style training step, reproduced with our own
  code and flags; the reference of every ratio (same family, same run);
* ``bf16``: ``trainer.precision=bf16-mixed`` (autocast);
* ``bf16+compile``: bf16 and ``model.compile=true`` (``torch.compile`` of the training forward, inductor);
* ``channels_last``: fp32 and ``model.channels_last=true`` (NHWC networks and batches);
* ``bf16+compile+channels_last``: all three.

All five run by default on a GPU and with ``--full``; on a CPU the default is the three eager modes (a cold inductor
compile of one reduced transformer took ~5 minutes on 2 shared cores): add the compile modes with ``--modes``.

A callback times every step: *data* = wall time from the end of the previous step (``on_train_batch_end``) to
``on_train_batch_start`` (waiting on the loader, host-to-device transfer, Lightning bookkeeping such as the scheduler
step); *compute* = ``on_train_batch_start`` to ``on_train_batch_end`` (forward, loss, backward, optimizer, EMA), with
``torch.cuda.synchronize()`` at both ends on a GPU. The warm-up steps (loader start, ``torch.compile``) are left out
of the figures and reported as *warm-up s* (of the first, cold fit). Reported per family x mode: patches/s (batch /
mean step time), ms/step, data share of the step, compute ms, and the speed-up against ``fp32`` of the same family.
Each cell is fitted ``--repeats`` times, the cells interleaved round-robin so that noise from other processes on the
machine hits every mode alike; the table shows the repeat with the median patches/s and lists all repeats.

Default (sized for a small CPU): batch 4, LR patch 32, reduced networks (HAT / HMA / EQSR: C 48, 2 groups x 2
blocks, window 8; SAFMN full), ``data.num_workers=2``, 3 warm-up + 8 timed steps, 3 repeats. ``--full``: the paper
batch and patch sizes of ``conf/model/<family>.yaml`` (HAT / HMA / EQSR 32, SAFMN 64; LR patch 64, EQSR 48) with the
full networks, ``data.num_workers=8``, 20 timed steps, 1 repeat — meant for one GPU.

Usage::

    python benchmarks/bench_train.py [--families hat hma safmn eqsr] [--modes fp32 bf16 ...] [--full]
        [--steps 8] [--warmup 3] [--repeats 3] [--batch-size B] [--lr-patch-size P] [--num-workers N] [--device cuda]
        [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

FAMILIES = ("hat", "hma", "safmn", "eqsr")


@dataclass(frozen=True)
class Mode:
    """One training configuration: Lightning precision and the model recipe switches."""

    precision: str
    compile: bool
    channels_last: bool


MODES: dict[str, Mode] = {
    "fp32": Mode("32-true", False, False),
    "bf16": Mode("bf16-mixed", False, False),
    "bf16+compile": Mode("bf16-mixed", True, False),
    "channels_last": Mode("32-true", False, True),
    "bf16+compile+channels_last": Mode("bf16-mixed", True, True),
}
REFERENCE_MODE = "fp32"
#: Default modes on a CPU: a cold inductor compile of one reduced transformer took ~5 min on 2 shared cores.
CPU_DEFAULT_MODES = ("fp32", "bf16", "channels_last")

#: Reduced networks of the default (CPU) run: C 48, 2 groups x 2 blocks, window 8 (SAFMN is small: kept full).
REDUCED_NETS: dict[str, list[str]] = {
    "hat": [
        "model.embed_dim=48",
        "model.depths=[2,2]",
        "model.num_heads=[2,2]",
        "model.window_size=8",
        "model.squeeze_factor=8",
    ],
    "hma": ["model.embed_dim=48", "model.depths=[2,2]", "model.num_heads=[2,2]", "model.window_size=8"],
    "safmn": [],
    "eqsr": [
        "model.embed_dim=48",
        "model.depths=[2,2]",
        "model.num_heads=[2,2]",
        "model.window_size=8",
        "model.decoder_dim=48",
        "model.num_frequencies=6",
    ],
}

#: Goals of the issue (one GPU, 8 loader workers).
GOAL_DATA_SHARE = 0.05
GOAL_COMPILE_SPEEDUP = 2.0


class StepTimer(Callback):
    """Per-step data time (previous step's end → ``on_train_batch_start``) and compute time
    (``on_train_batch_start`` → ``on_train_batch_end``), synchronising the GPU at each mark."""

    def __init__(self, sync_cuda: bool) -> None:
        self.sync_cuda = sync_cuda
        self.data: list[float] = []
        self.compute: list[float] = []
        self._prev_end = 0.0
        self._start = 0.0

    def _now(self) -> float:
        if self.sync_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._prev_end = self._now()

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = self._now()
        self.data.append(self._start - self._prev_end)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._prev_end = self._now()
        self.compute.append(self._prev_end - self._start)


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, torch threads, bf16 CPU support, GPU name and library versions."""
    import lightning

    cpu, flags = platform.processor() or "?", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("?", "x86_64", ""):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    bf16_hw = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
    isa = [f for f in ("avx2", "avx512f") if f in flags.split()]
    info: dict[str, Any] = {
        "device": device.type,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_isa": isa,
        "cpu_bf16_hardware": bf16_hw or None,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def compose_run(family: str, mode: Mode, args: argparse.Namespace, work: Path, device: torch.device) -> Any:
    """The training config of ``family`` in ``mode``, composed from the real config tree with the bench overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from sresolve.config import conf_dir

    overrides = [
        f"model={family}",
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"trainer.precision={mode.precision}",
        f"model.compile={str(mode.compile).lower()}",
        f"model.channels_last={str(mode.channels_last).lower()}",
        f"model.total_iter={args.warmup + args.steps}",
        f"data.num_workers={args.num_workers}",
        f"paths.data_dir={work / 'datasets'}",
        "logger=none",
        "export=false",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"trainer.log_every_n_steps={args.warmup + args.steps}",
        "+trainer.limit_val_batches=0",
        # 8 sample images x 1000: one epoch outlasts the run (an epoch boundary restarts the loader's prefetching,
        # which a DF2K epoch of thousands of batches would not do every ~12 steps at batch 64)
        "data.train.repeat=1000",
    ]
    if family == "eqsr":
        overrides.append("data=samples_arbitrary")
    if not args.full:
        overrides += REDUCED_NETS[family]
    if args.batch_size:
        overrides.append(f"model.batch_size={args.batch_size}")
    if args.lr_patch_size:
        overrides.append(f"model.lr_patch_size={args.lr_patch_size}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(work / "outputs" / family)
        cfg.paths.log_dir = str(work / "outputs")
    return cfg


def run_cell(family: str, mode_name: str, args: argparse.Namespace, work: Path, device: torch.device) -> dict[str, Any]:
    """Fit ``warmup + steps`` steps of ``family`` in ``mode_name``; the timings of the steps after the warm-up."""
    import lightning as L
    from hydra.utils import instantiate

    from sresolve.cli.train import build_datamodule, build_module

    mode = MODES[mode_name]
    cfg = compose_run(family, mode, args, work, device)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    timer = StepTimer(sync_cuda=device.type == "cuda")
    trainer: Trainer = instantiate(cfg.trainer, callbacks=[timer], logger=False, enable_checkpointing=False)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_s = time.perf_counter() - t0
    n = args.warmup + args.steps
    if len(timer.compute) != n:
        raise RuntimeError(f"{len(timer.compute)} training steps ran, {n} expected")
    data, compute = timer.data[args.warmup :], timer.compute[args.warmup :]
    steps = [d + c for d, c in zip(data, compute, strict=True)]
    batch, patch = int(cfg.model.batch_size), int(cfg.model.lr_patch_size)
    step_s = statistics.fmean(steps)
    return {
        "family": family,
        "mode": mode_name,
        "batch_size": batch,
        "lr_patch_size": patch,
        "params_m": sum(p.numel() for p in module.net.parameters()) / 1e6,
        "num_workers": int(cfg.data.num_workers),
        "patches_per_s": batch / step_s,
        "ms_per_step": 1e3 * step_s,
        "ms_per_step_median": 1e3 * statistics.median(steps),
        "data_ms": 1e3 * statistics.fmean(data),
        "compute_ms": 1e3 * statistics.fmean(compute),
        "data_share": statistics.fmean(data) / step_s,
        "warmup_s": sum(timer.data[: args.warmup]) + sum(timer.compute[: args.warmup]),
        "fit_s": fit_s,
        "step_ms": [round(1e3 * t, 2) for t in steps],
        "data_step_ms": [round(1e3 * t, 2) for t in data],
        "error": None,
    }


def merge_repeats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from its repeats: the repeat with the median patches/s (the lower middle one for an even count),
    plus the range over all repeats and the warm-up of the first (cold) one. A failed repeat fails the cell."""
    failed = [r for r in runs if r["error"] is not None]
    if failed:
        return failed[0]
    ranked = sorted(runs, key=lambda r: r["patches_per_s"])
    cell = dict(ranked[(len(ranked) - 1) // 2])
    cell["repeats"] = len(runs)
    cell["patches_per_s_range"] = [ranked[0]["patches_per_s"], ranked[-1]["patches_per_s"]]
    cell["patches_per_s_repeats"] = [r["patches_per_s"] for r in runs]
    cell["warmup_s"] = runs[0]["warmup_s"]
    cell["warmup_s_repeats"] = [r["warmup_s"] for r in runs]
    return cell


def _cleanup(device: torch.device) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _short_error(err: BaseException) -> str:
    lines = [ln for ln in f"{type(err).__name__}: {err}".strip().splitlines() if ln.strip()]
    return " | ".join(lines[:3])[:400]


def print_table(cells: list[dict[str, Any]]) -> None:
    """One row per family x mode, speed-ups against ``fp32`` of the same family."""
    head = (
        f"{'family':<6} {'mode':<27} {'BxP':>7} {'patches/s':>10} {'ms/step':>9} {'data %':>7} "
        f"{'compute ms':>11} {'warm-up s':>10} {'vs fp32':>8}  patches/s over repeats"
    )
    print(head)
    print("-" * len(head))
    ref = {c["family"]: c for c in cells if c["mode"] == REFERENCE_MODE and c["error"] is None}
    for c in cells:
        bxp = f"{c.get('batch_size', '?')}x{c.get('lr_patch_size', '?')}"
        if c["error"] is not None:
            print(f"{c['family']:<6} {c['mode']:<27} {bxp:>7}  FAILED: {c['error']}")
            continue
        r = ref.get(c["family"])
        speedup = f"{c['patches_per_s'] / r['patches_per_s']:.2f}x" if r else "n/a"
        spread = " ".join(f"{p:.1f}" for p in c.get("patches_per_s_repeats", [c["patches_per_s"]]))
        print(
            f"{c['family']:<6} {c['mode']:<27} {bxp:>7} {c['patches_per_s']:>10.1f} {c['ms_per_step']:>9.1f} "
            f"{100 * c['data_share']:>6.1f}% {c['compute_ms']:>11.1f} {c['warmup_s']:>10.1f} {speedup:>8}  {spread}"
        )


def goals(cells: list[dict[str, Any]], device: torch.device) -> list[str]:
    """The issue's goals per family, checked on the figures of this run (only meaningful on one GPU)."""
    ok = {(c["family"], c["mode"]): c for c in cells if c["error"] is None}
    lines = []
    where = "" if device.type == "cuda" else " (CPU run: the goals are set for one GPU, not measurable here)"
    for fam in dict.fromkeys(c["family"] for c in cells):
        parts = []
        if (fam, REFERENCE_MODE) in ok:
            worst = max(c["data_share"] for (f, _), c in ok.items() if f == fam)
            parts.append(f"data share max {100 * worst:.1f}% ({'met' if worst < GOAL_DATA_SHARE else 'NOT met'} <5%)")
            if (fam, "bf16+compile") in ok:
                s = ok[(fam, "bf16+compile")]["patches_per_s"] / ok[(fam, REFERENCE_MODE)]["patches_per_s"]
                verdict = "met" if s >= GOAL_COMPILE_SPEEDUP else "NOT met"
                parts.append(f"bf16+compile {s:.2f}x fp32 ({verdict} >=2x)")
        lines.append(f"{fam}: " + ("; ".join(parts) if parts else "no fp32 reference measured") + where)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument(
        "--modes",
        nargs="+",
        default=None,
        choices=list(MODES),
        help="default: all on a GPU or with --full; the eager ones on a CPU (inductor takes minutes per network)",
    )
    ap.add_argument("--full", action="store_true", help="paper batch/patch sizes, full networks, 8 loader workers")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 8; --full 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps (loader start, compile)")
    ap.add_argument("--repeats", type=int, default=None, help="fits per cell, interleaved (default 3; --full 1)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 4; --full: the paper's (model config)")
    ap.add_argument("--lr-patch-size", type=int, default=None, help="default 32; --full: the paper's (model config)")
    ap.add_argument("--num-workers", type=int, default=None, help="data.num_workers (default 2; --full 8)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    ap.add_argument("--work-dir", default=None, help="data and outputs folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if not args.full:
        args.batch_size = args.batch_size or 4
        args.lr_patch_size = args.lr_patch_size or 32
    args.steps = args.steps or (20 if args.full else 8)
    args.repeats = args.repeats or (1 if args.full else 3)
    args.num_workers = args.num_workers if args.num_workers is not None else (8 if args.full else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.modes is None:
        args.modes = list(MODES) if device.type == "cuda" or args.full else list(CPU_DEFAULT_MODES)

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    info = machine_info(device)
    size = "full (paper sizes)" if args.full else "reduced networks"
    print(
        f"machine: {info.get('gpu', info['cpu'])} | cpu {info['cpu']} ({info['cpu_count']} cores, "
        f"{info['torch_threads']} torch threads, bf16 hw: {', '.join(info['cpu_bf16_hardware'] or ['none'])}) | "
        f"torch {info['torch']} | lightning {info['lightning']}"
    )
    print(
        f"workload: {size}, steps {args.warmup} warm-up + {args.steps} timed, data.num_workers {args.num_workers}, "
        f"device {device.type}"
    )
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {(f, m): [] for f in args.families for m in args.modes}
        for r in range(args.repeats):  # interleaved: machine noise (shared cores) spreads over all cells alike
            for family, mode_name in runs:
                if runs[(family, mode_name)] and runs[(family, mode_name)][-1]["error"] is not None:
                    continue  # failed once: not retried
                try:
                    run = run_cell(family, mode_name, args, work, device)
                except Exception as err:  # a failed cell is reported, not hidden; the other cells still run
                    traceback.print_exc()
                    run = {"family": family, "mode": mode_name, "error": _short_error(err)}
                runs[(family, mode_name)].append(run)
                status = "FAILED" if run["error"] else f"{run['patches_per_s']:.1f} patches/s"
                print(f"  [{r + 1}/{args.repeats}] {family} {mode_name}: {status}", flush=True)
                _cleanup(device)
        cells = [merge_repeats(v) for v in runs.values()]
    total_s = time.perf_counter() - t_all
    print()
    print_table(cells)
    print()
    for line in goals(cells, device):
        print(f"goal {line}")
    print(f"total wall time {total_s:.0f} s")
    if args.json:
        every = [run for rs in runs.values() for run in rs]
        payload = {"machine": info, "args": vars(args), "total_s": total_s, "cells": cells, "runs": every}
        Path(args.json).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
