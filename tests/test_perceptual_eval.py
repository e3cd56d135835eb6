"""LPIPS and NIQE end to end on the embedded sample photographs: validation of a tiny training run logs
``val/samples/lpips|niqe``, ``sresolve-test`` writes them into results.csv / per_image.csv / results.md (the bicubic
row recomputed here independently, the model row equal to the training-time validation), ``sresolve-report`` puts
LPIPS / NIQE columns into the benchmark table and the ablation table, and missing files only skip the metric.

LPIPS runs with the deterministic random backbone (``lpips_backbone=random``: no ImageNet weights can be downloaded
here) and NIQE with a pristine model fitted on three training photographs, so the values test the plumbing, not the
published numbers."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from sresolve.config import ConfigError
from sresolve.data.samples import load_sample
from sresolve.metrics.niqe import fit_pristine

TINY = [
    "trainer=cpu",
    "model.dim=24",
    "model.n_blocks=2",
    "model.batch_size=4",
    "model.lr_patch_size=32",
    "model.ema_decay=0.9",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]
PERCEPTUAL_VAL = ["val.lpips=true", "val.lpips_backbone=random", "val.niqe=true", "val.log_images=0"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def niqe_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A NIQE pristine model fitted on three training photographs (about 1 s), as BasicSR's .npz layout."""
    path = tmp_path_factory.mktemp("niqe") / "pristine.npz"
    fit_pristine([load_sample(n) for n in ("rocket", "motorcycle_left", "motorcycle_right")]).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, samples_root: Path, niqe_model_file: Path) -> dict:
    """Two training steps of a small SAFMN, validated once with LPIPS and NIQE on the three held-out photographs."""
    from conftest import compose_cfg
    from sresolve.cli.train import train

    out = tmp_path_factory.mktemp("train") / "safmn_perceptual"
    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "model.total_iter=2",
            "val_freq=2",
            "save_freq=2",
            *PERCEPTUAL_VAL,
            f"val.niqe_model={niqe_model_file}",
        ],
        out,
        data_dir=samples_root.parent,
    )
    return {"out": out, "metrics": train(cfg), "samples": samples_root}


@pytest.fixture(scope="module")
def tested(tmp_path_factory: pytest.TempPathFactory, trained: dict, niqe_model_file: Path) -> dict:
    """``sresolve-test`` (in process) of the exported weights with LPIPS and NIQE, into <root>/test/safmn_x4."""
    from conftest import compose_cfg
    from sresolve.cli.test import run_test

    out = tmp_path_factory.mktemp("outputs") / "test" / "safmn_x4"
    cfg = compose_cfg(
        "test",
        [
            "model=safmn",
            "model.dim=24",
            "model.n_blocks=2",
            "data=samples_holdout",
            f"ckpt={trained['out'] / 'weights' / 'net_g_latest.pth'}",
            "device=cpu",
            "lpips=true",
            "lpips_backbone=random",
            "niqe=true",
            f"niqe_model={niqe_model_file}",
        ],
        out,
        data_dir=trained["samples"].parent,
    )
    return {"out": out, "report": run_test(cfg)}


def test_validation_logs_lpips_and_niqe(trained: dict) -> None:
    from sresolve.results import ablation_table, read_run

    metrics = trained["metrics"]
    lpips, niqe = metrics["val/samples/lpips"], metrics["val/samples/niqe"]
    # after two steps the network is far from bicubic (measured: PSNR about 10 dB, LPIPS 0.22, NIQE 220)
    assert 0.0 < lpips < 1.0 and niqe > 0.0 and math.isfinite(niqe), metrics
    assert 5.0 < metrics["val/samples/psnr"] < 40.0
    header = (trained["out"] / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/samples/lpips", "val/samples/niqe"} <= set(header)
    # the LPIPS network never enters a checkpoint (a run can switch val.lpips on or off when resumed)
    ckpt = torch.load(trained["out"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not [k for k in ckpt["state_dict"] if "lpips" in k or "niqe" in k]
    # the ablation table picks the per-set metrics up by itself
    table = ablation_table([read_run(trained["out"])])
    assert table.columns == ["run", "samples LPIPS", "samples NIQE", "samples PSNR", "samples SSIM"]
    assert table.rows[0][1] == pytest.approx(lpips) and table.rows[0][2] == pytest.approx(niqe)
    assert f"{lpips:.4f}" in table.markdown()


def test_sresolve_test_writes_lpips_and_niqe(tested: dict, trained: dict, niqe_model_file: Path) -> None:
    from sresolve.data.datasets import BenchmarkDataset
    from sresolve.evaluation import bicubic_upscale
    from sresolve.metrics import load_lpips, quantize
    from sresolve.metrics.niqe import PristineModel, niqe

    out = tested["out"]
    rows = {r["method"]: r for r in _rows(out / "results.csv")}
    assert list(_rows(out / "results.csv")[0])[:7] == ["dataset", "method", "images", "psnr", "ssim", "lpips", "niqe"]
    assert set(rows) == {"bicubic", "safmn"} and all(r["images"] == "3" for r in rows.values())
    # the model row equals the training-time validation (same EMA weights, images and protocol)
    metrics = trained["metrics"]
    assert float(rows["safmn"]["lpips"]) == pytest.approx(metrics["val/samples/lpips"], rel=1e-5)
    assert float(rows["safmn"]["niqe"]) == pytest.approx(metrics["val/samples/niqe"], rel=1e-5)
    # the bicubic row recomputed independently: MATLAB-bicubic ×4, 8-bit rounding, 4 px shaved
    lpips, model = load_lpips("alex", "random"), PristineModel.load(niqe_model_file)
    ds = BenchmarkDataset(hr_dir=trained["samples"] / "val" / "HR", scale=4, lr_dir=False)
    lp, nq = [], []
    for sample in ds:
        bic = bicubic_upscale(sample["lr"][None], 4)
        lp.append(lpips.score(bic, sample["hr"][None], 4).item())
        nq.append(niqe(quantize(bic[0].double()), model, crop_border=4))
    # measured for bicubic on the three photographs: LPIPS 0.0128 (random AlexNet), NIQE 49.3 (the small fitted model)
    assert float(rows["bicubic"]["lpips"]) == pytest.approx(np.mean(lp), abs=1e-6)
    assert float(rows["bicubic"]["niqe"]) == pytest.approx(np.mean(nq), abs=1e-6)
    assert 0.0 < float(rows["bicubic"]["lpips"]) < 1.0 and float(rows["bicubic"]["niqe"]) > 0.0
    # the network after two training steps is worse than bicubic on every metric (lower is better for both)
    assert float(rows["safmn"]["lpips"]) > float(rows["bicubic"]["lpips"])
    assert float(rows["safmn"]["niqe"]) > float(rows["bicubic"]["niqe"])
    per_image = _rows(out / "per_image.csv")
    for method, row in rows.items():
        values = [r for r in per_image if r["method"] == method]
        assert len(values) == 3
        for metric in ("lpips", "niqe"):
            assert np.mean([float(r[metric]) for r in values]) == pytest.approx(float(row[metric]), abs=1e-5)
    md = (out / "results.md").read_text()
    assert "| PSNR (dB) | SSIM | LPIPS ↓ | NIQE ↓ |" in md and f"| {float(rows['safmn']['lpips']):.4f} |" in md
    assert "RANDOM backbone" in md and "pristine model pristine.npz" in md
    assert "LPIPS-alex" in rows["safmn"]["protocol"]


def test_report_shows_lpips_and_niqe_columns(tested: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sresolve.cli.report import main

    assert main([str(tested["out"].parent), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "| Method | Scale | samples PSNR | samples SSIM | samples LPIPS | samples NIQE |" in printed
    assert "Benchmark results (PSNR dB / SSIM / LPIPS / NIQE)" in printed
    results = {r["method"]: r for r in _rows(tested["out"] / "results.csv")}
    table = {r["Method"]: r for r in _rows(tmp_path / "report" / "benchmark.csv")}
    for method in ("bicubic", "safmn"):
        assert float(table[method]["samples LPIPS"]) == pytest.approx(float(results[method]["lpips"]), abs=1e-6)
        assert float(table[method]["samples NIQE"]) == pytest.approx(float(results[method]["niqe"]), abs=1e-6)
        assert f"{float(results[method]['lpips']):.4f}" in printed
    assert "RANDOM backbone" in printed  # the LPIPS / NIQE settings are in the protocol note


def test_missing_files_skip_the_metric_and_the_run_succeeds(
    trained: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Callable[..., object],
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no backbone weights in the hub cache
    res = run_cli(
        "test",
        "model=safmn",
        "model.dim=24",
        "model.n_blocks=2",
        "data=samples_holdout",
        f"paths.data_dir={trained['samples'].parent}",
        f"ckpt={trained['out'] / 'weights' / 'net_g_latest.pth'}",
        "bicubic_baseline=false",
        "lpips=true",
        "niqe=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    text = res.stdout + res.stderr  # type: ignore[attr-defined]
    lpips_lines = [line for line in text.splitlines() if "LPIPS skipped" in line]
    niqe_lines = [line for line in text.splitlines() if "NIQE skipped" in line]
    assert len(lpips_lines) == 1 and len(niqe_lines) == 1, text[-3000:]
    hub = tmp_path / "empty_torch_home" / "hub" / "checkpoints"
    assert "alexnet-owt-7be5be79.pth" in lpips_lines[0] and str(hub) in lpips_lines[0]
    assert "lpips_backbone=<path>" in lpips_lines[0] and "niqe_model=<path" in niqe_lines[0]
    assert "Traceback" not in text
    (row,) = _rows(tmp_path / "run" / "results.csv")
    assert row["lpips"] == "" and row["niqe"] == "" and 10.0 < float(row["psnr"]) < 40.0
    assert 0.0 < float(row["ssim"]) < 1.0
    assert "LPIPS" not in (tmp_path / "run" / "results.md").read_text()


def test_config_errors_name_the_key(
    trained: dict,
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sresolve.cli.test import run_test
    from sresolve.cli.train import build_module

    weights = f"ckpt={trained['out'] / 'weights' / 'net_g_latest.pth'}"
    common = ["model=safmn", "model.dim=24", "model.n_blocks=2", "data=samples_holdout", weights]
    with pytest.raises(ConfigError, match="lpips_net='resnet': unknown LPIPS network"):
        run_test(make_cfg("test", [*common, "lpips=true", "lpips_net=resnet"], tmp_path / "a"))
    bad_model = tmp_path / "bad.npz"
    np.savez(bad_model, something=np.zeros(3))
    with pytest.raises(ConfigError, match=r"niqe_model=.*bad\.npz.*has no NIQE model keys"):
        run_test(make_cfg("test", [*common, "niqe=true", f"niqe_model={bad_model}"], tmp_path / "b"))
    with pytest.raises(ConfigError, match=r"val\.niqe must be true or false"):
        build_module(make_cfg("train", [*TINY, "val.niqe=maybe"], tmp_path / "c"))
    # validation: a missing backbone file is one warning naming the val. key, and no LPIPS metric
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING):
        module = build_module(make_cfg("train", [*TINY, "val.lpips=true"], tmp_path / "d"))
    skipped = [r.getMessage() for r in caplog.records if "LPIPS skipped" in r.getMessage()]
    assert len(skipped) == 1 and "val.lpips_backbone=<path>" in skipped[0]
    assert not module.__dict__["_perceptual"]
