"""A paper ablation sweep runs for real (tiny HAT, 2 steps a job, CPU) and every job leaves its metrics."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from conftest import tiny_run

TINY_HAT = [
    "model.embed_dim=24",
    "model.depths=[1]",
    "model.num_heads=[2]",
    "model.window_size=8",
    "model.squeeze_factor=6",
    *tiny_run(),
    "export=false",
]


def run_sweep(
    run_cli: Callable[..., Any], experiment: str, tiny: list[str], samples_root: Path, tmp_path: Path
) -> list[tuple[Path, dict[str, Any], list[float]]]:
    """Run ``experiment`` as a multirun of a tiny model; per job in order: folder, saved config, validation PSNRs."""
    sweep = tmp_path / "sweep"
    run_cli(
        "train",
        f"experiment={experiment}",
        *tiny,
        f"paths.data_dir={samples_root.parent}",
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    jobs = []
    for job in sorted(sweep.glob("[0-9]*"), key=lambda p: int(p.name)):
        saved = yaml.safe_load((job / "config.yaml").read_text())
        rows = list(csv.DictReader((job / "csv" / "metrics.csv").open()))
        jobs.append((job, saved, [float(r["val/samples/psnr"]) for r in rows if r.get("val/samples/psnr")]))
    return jobs


def test_hat_alpha_ablation_sweep_runs_every_job(
    samples_root: Path, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    jobs = run_sweep(run_cli, "hat_ablation_alpha", TINY_HAT, samples_root, tmp_path)
    assert [j.name for j, _, _ in jobs] == ["0", "1", "2", "3"]
    alphas = []
    for job, saved, psnr in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        alphas.append(next(float(o.split("=")[1]) for o in overrides if o.startswith("model.alpha=")))
        assert saved["model"]["alpha"] == alphas[-1]
        assert len(psnr) == 1 and psnr[0] > 0
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert alphas == [0.0, 1.0, 0.1, 0.01]


TINY_HMA = [
    "model.embed_dim=32",
    "model.depths=[2]",
    "model.num_heads=[2]",
    "model.window_size=8",
    *[o for o in TINY_HAT if not o.startswith(("model.embed_dim", "model.depths", "model.num_heads", "model.window"))],
]
TINY_HMA.remove("model.squeeze_factor=6")


def test_hma_module_ablation_sweep_runs_every_variant(
    samples_root: Path, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """Supplement Table 2 as one multirun: FAB x GAB on/off, each job trains a real (tiny) HMA variant; the report
    tool turns the sweep folder into the table, one row per variant with that job's final validation metrics."""
    from sresolve.cli.report import main

    seen = {}
    for job, saved, psnr in run_sweep(run_cli, "hma_ablation_modules", TINY_HMA, samples_root, tmp_path):
        flags = (saved["model"]["use_fab"], saved["model"]["use_gab"])
        seen[flags] = psnr[-1]
        assert len(psnr) == 1 and psnr[0] > 0
        keys = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        assert any(".fused_conv." in k for k in keys) == flags[0]
        assert any(".gab.grid_attn." in k for k in keys) == flags[1]
    assert set(seen) == {(True, True), (True, False), (False, True), (False, False)}
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    rows = list(csv.DictReader((tmp_path / "report" / "ablation_hma_ablation_modules.csv").open()))
    assert [(r["FAB"], r["GAB"]) for r in rows] == [
        ("true", "true"),
        ("true", "false"),
        ("false", "true"),
        ("false", "false"),
    ]
    for r in rows:
        flags = (r["FAB"] == "true", r["GAB"] == "true")
        assert float(r["samples PSNR"]) == pytest.approx(seen[flags], abs=1e-4)
