"""Clusters and sweeps (issue 8): the SLURM preset of Hydra's submitit launcher, a real submitit (local) job that
times out, checkpoints, is requeued and resumes, and the Optuna preset returning the validation PSNR."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from omegaconf import DictConfig

from conftest import TINY_SAFMN, tiny_run

TESTS = Path(__file__).resolve().parent


class _Captured(Exception):
    pass


def test_slurm_preset_writes_the_sbatch_script(
    samples_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hydra/launcher=slurm`` through the real CLI and the plugin, up to the submission: the sbatch script asks for
    one task per GPU on every node, the loader workers as CPUs per task, USR2 120 s before the limit, and the executor
    requeues up to 20 time-outs; one job per swept value."""
    import submitit

    from sresolve.cli.train import main

    captured: dict[str, Any] = {}

    def map_array(self: Any, fn: Any, *iterables: Any) -> Any:
        captured["executor"], captured["jobs"] = self, list(zip(*iterables, strict=True))
        raise _Captured

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    bin_dir = tmp_path / "bin"  # submitit checks for srun before anything else; nothing calls it
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    argv = ["sresolve-train", "-m", "hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2"]
    argv += ["data.num_workers=6", "hydra.launcher.partition=gpu", "model.dim=24,36"]
    argv += [f"hydra.sweep.dir={tmp_path}", f"paths.data_dir={samples_root.parent}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises((SystemExit, _Captured)):
        main()
    executor = captured["executor"]._executor
    script = executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    flags = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", script, re.M))
    assert flags["nodes"] == "2" and flags["ntasks-per-node"] == "8" and flags["gpus-per-node"] == "8"
    assert flags["cpus-per-task"] == "6" and flags["partition"] == "gpu" and flags["time"] == "2880"
    assert flags["signal"] == "USR2@120"
    assert executor.max_num_timeout == 20
    assert [[o for o in job[0] if o.startswith("model.")] for job in captured["jobs"]] == [
        ["model.dim=24"],
        ["model.dim=36"],
    ]


class SlowUntilResumed(L.Callback):
    """Sleeps after every step of a run that did not resume from a checkpoint, so that the first attempt of the job
    is still training when submitit's time-out signal comes (30 s after the start), whatever the machine's speed."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.ckpt_path is None:
            time.sleep(0.05)


@pytest.mark.slow
def test_submitit_local_job_times_out_checkpoints_requeues_and_resumes(
    samples_root: Path, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """A real submitit job (``hydra/launcher=submitit_local``, 1-minute limit, USR2 at 30 s): the first attempt writes
    last.ckpt after its running step and is requeued by submitit; the second resumes from that checkpoint in the same
    job folder, finishes the 600 steps and ends with the weights of an uninterrupted run."""
    total = 600
    run = [*TINY_SAFMN, *tiny_run(iters=total), "save_freq=100000", "logger=none", "export=false"]
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "sresolve.cli.train", "-m", "hydra/launcher=submitit_local"]
    cmd += ["hydra.launcher.timeout_min=1", f"hydra.sweep.dir={sweep}", f"paths.data_dir={samples_root.parent}"]
    cmd += [*run, f"+callbacks.slow._target_={__name__}.SlowUntilResumed"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    logs = "\n".join(p.read_text(errors="replace") for p in sweep.rglob("*") if p.suffix in (".err", ".out", ".log"))
    assert res.returncode == 0, res.stderr[-3000:] + logs[-3000:]
    job = sweep / "0"
    preempted = re.search(r"preempted \(SIGTERM\) after step (\d+): checkpoint written", logs)
    assert preempted is not None, logs[-3000:]
    assert 0 < int(preempted.group(1)) < total  # stopped mid-run ...
    assert "Requeued job" in logs and "submitit job requeued: resuming from" in logs  # ... requeued, resumed
    assert not list(job.glob("checkpoints_archived_*"))
    ckpt = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == total
    assert yaml.safe_load((job / "results.json").read_text())["step"] == total

    from sresolve.cli.train import train

    train(make_cfg("train", run, tmp_path / "uninterrupted"))
    ref = torch.load(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key, value in ref["state_dict"].items():
        torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)


def test_optuna_preset_maximises_the_validation_psnr(
    run_cli: Callable[..., Any], samples_root: Path, tmp_path: Path
) -> None:
    """``hparams_search=lr`` with 3 trials: every trial is a training job, the sweeper records each job's returned
    value, and the best value it reports is the highest validation PSNR among the jobs' results.json."""
    sweep = tmp_path / "sweep"
    run_cli(
        "train",
        "hparams_search=lr",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=3",
        f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={samples_root.parent}",
        *TINY_SAFMN,
        *tiny_run(iters=4),
        "logger=none",
        "export=false",
        cwd=tmp_path,
    )
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    jobs = sorted(sweep.glob("[0-9]*/results.json"))
    assert len(jobs) == 3
    psnr = [yaml.safe_load(p.read_text())["metrics"]["val/psnr"] for p in jobs]
    lrs = [yaml.safe_load((p.parent / ".hydra" / "overrides.yaml").read_text()) for p in jobs]
    assert best["best_value"] == pytest.approx(max(psnr), abs=1e-9)
    winner = lrs[psnr.index(max(psnr))]
    assert f"model.optim.lr={best['best_params']['model.optim.lr']}" in winner
    assert all(1e-5 <= float(o.split("=")[1]) <= 1e-3 for job in lrs for o in job if o.startswith("model.optim.lr="))


def test_ddp_in_a_multirun_is_refused_unless_ranks_start_outside(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--multirun`` + ``trainer=ddp`` would make every rank re-launch the sweep (Lightning re-runs the command line):
    refused with the alternatives; allowed with ddp_spawn, one device per job, or ranks started by SLURM/submitit."""
    from sresolve.config import ConfigError, validate_train_cfg

    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    base = [*TINY_SAFMN, *tiny_run(iters=2), "hydra.mode=MULTIRUN", "data.batch_size=4"]
    ddp = make_cfg("train", [*base, "trainer=ddp"], tmp_path / "ddp")
    with pytest.raises(ConfigError, match=r"trainer.strategy=ddp in a --multirun: .*hydra/launcher=slurm"):
        validate_train_cfg(ddp)
    validate_train_cfg(make_cfg("train", [*base, "trainer=ddp", "trainer.devices=1"], tmp_path / "one"))
    validate_train_cfg(make_cfg("train", [*base, "trainer=ddp_cpu"], tmp_path / "spawn"))
    ddp = make_cfg("train", [*base, "trainer=ddp"], tmp_path / "slurm")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    validate_train_cfg(ddp)
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    plain = [*TINY_SAFMN, *tiny_run(iters=2), "data.batch_size=4", "trainer=ddp"]
    single_run = make_cfg("train", plain, tmp_path / "r")
    validate_train_cfg(single_run)  # a plain run: Lightning's launcher is right there
