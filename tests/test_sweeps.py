"""A paper ablation sweep runs for real (tiny HAT, 2 steps a job, CPU) and every job leaves its metrics."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import yaml

TINY_HAT = [
    "model.embed_dim=24",
    "model.depths=[1]",
    "model.num_heads=[2]",
    "model.window_size=8",
    "model.squeeze_factor=6",
    "model.batch_size=2",
    "model.lr_patch_size=16",
    "model.total_iter=2",
    "val_freq=2",
    "save_freq=2",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.num_workers=0",
    "export=false",
]


def test_hat_alpha_ablation_sweep_runs_every_job(samples_root: Path, tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "sresolve.cli.train",
            "experiment=hat_ablation_alpha",
            *TINY_HAT,
            f"paths.data_dir={samples_root.parent}",
            f"paths.log_dir={tmp_path}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"), key=lambda p: int(p.name))
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    alphas = []
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        alphas.append(next(float(o.split("=")[1]) for o in overrides if o.startswith("model.alpha=")))
        saved = yaml.safe_load((job / "config.yaml").read_text())
        assert saved["model"]["alpha"] == alphas[-1]
        rows = list(csv.DictReader((job / "csv" / "metrics.csv").open()))
        psnr = [float(r["val/samples/psnr"]) for r in rows if r.get("val/samples/psnr")]
        assert len(psnr) == 1 and psnr[0] > 0
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert alphas == [0.0, 1.0, 0.1, 0.01]
