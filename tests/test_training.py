"""End to end on CPU: sresolve-train on the bundled photographs beats bicubic on the held-out ones, an interrupted run
resumes to the uninterrupted run's weights, and sresolve-test / sresolve-upscale work on what training exported."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from sresolve.checkpoints import load_model, load_state_dict
from sresolve.cli.train import train
from sresolve.config import ConfigError, validate_train_cfg
from sresolve.data.io import read_image, write_image
from sresolve.evaluation import bicubic_upscale
from sresolve.metrics import psnr_y

# A small SAFMN (same blocks, fewer/thinner) so that a few hundred CPU steps learn something.
TINY = [
    "trainer=cpu",
    "model.dim=24",
    "model.n_blocks=2",
    "model.batch_size=8",
    "model.lr_patch_size=32",
    "model.ema_decay=0.9",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=10",
]


def _train(make_cfg: Callable[..., DictConfig], out: Path, overrides: list[str]) -> tuple[DictConfig, dict]:
    cfg = make_cfg("train", [*TINY, *overrides], out)
    return cfg, train(cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, samples_root: Path) -> dict:
    from conftest import compose_cfg

    out = tmp_path_factory.mktemp("train_run")
    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "model.total_iter=500",
            "val_freq=500",
            "save_freq=500",
            "model.optim.lr=2e-3",
            "model.sched.eta_min=1e-4",
        ],
        out,
        data_dir=samples_root.parent,
    )
    metrics = train(cfg)
    return {"cfg": cfg, "metrics": metrics, "out": out, "samples": samples_root}


def _bicubic_psnr(val_dir: Path, scale: int = 4) -> float:
    from sresolve.data.datasets import BenchmarkDataset

    ds = BenchmarkDataset(hr_dir=val_dir, scale=scale, lr_dir=False)
    values = [float(psnr_y(bicubic_upscale(s["lr"][None], scale), s["hr"][None], scale)[0]) for s in ds]
    return sum(values) / len(values)


def test_short_training_beats_bicubic_on_held_out_images(trained: dict) -> None:
    psnr = trained["metrics"]["val/samples/psnr"]
    bicubic = _bicubic_psnr(trained["samples"] / "val" / "HR")
    assert 20.0 < bicubic < 30.0
    print(f"SAFMN {psnr:.3f} dB vs bicubic {bicubic:.3f} dB")
    assert psnr > bicubic + 0.2, f"SAFMN {psnr:.3f} dB vs bicubic {bicubic:.3f} dB"
    out = trained["out"]
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "best.ckpt").is_file()
    assert (out / "csv" / "metrics.csv").read_text().count("val/samples/psnr") == 1
    assert any((out / "val_images").glob("*.png"))


def test_exported_weights_are_basicsr_layout_and_ema(trained: dict) -> None:
    out = trained["out"]
    raw = torch.load(out / "weights" / "net_g_latest.pth", map_location="cpu", weights_only=True)
    assert set(raw) == {"params", "params_ema"}
    assert not any(k.startswith(("net.", "module.", "_orig_mod.")) for k in raw["params"])
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key, value in raw["params_ema"].items():
        assert torch.equal(value, ckpt["state_dict"][f"net_ema.{key}"])
        assert torch.equal(raw["params"][key], ckpt["state_dict"][f"net.{key}"])
    st = load_state_dict(out / "weights" / "net_g_latest.safetensors")
    assert all(torch.equal(st[k], v) for k, v in raw["params_ema"].items())
    net = load_model(out / "weights" / "net_g_latest.pth")
    assert (net.scale, type(net).__name__) == (4, "SAFMN")


def test_resume_after_interruption_reproduces_uninterrupted_weights(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    common = ["model.total_iter=12", "val_freq=6", "save_freq=6", "model.batch_size=4", "data.train.repeat=2"]
    _train(make_cfg, tmp_path / "straight", common)
    # the same run "killed" after the step-6 checkpoint (8 samples / batch 4 = 2 batches per epoch: mid-training)
    _train(make_cfg, tmp_path / "broken", [*common, "trainer.max_steps=6"])
    broken_last = torch.load(tmp_path / "broken" / "checkpoints" / "last.ckpt", weights_only=True)
    assert broken_last["global_step"] == 6
    _train(make_cfg, tmp_path / "broken", [*common, "ckpt_path=last"])
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for idx in opt_a:
        torch.testing.assert_close(opt_b[idx]["exp_avg"], opt_a[idx]["exp_avg"], rtol=0, atol=1e-6)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 12


def test_fresh_start_archives_existing_checkpoints(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    _train(make_cfg, tmp_path, ["model.total_iter=2", "val_freq=2", "save_freq=2", "model.batch_size=4"])
    _train(make_cfg, tmp_path, ["model.total_iter=2", "val_freq=2", "save_freq=2", "model.batch_size=4"])
    archived = list(tmp_path.glob("checkpoints_archived_*"))
    assert len(archived) == 1 and (archived[0] / "last.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dim=abc", "dim"),
        ("model.dim=30", "dim must be a positive multiple of 4"),
        ("+model.bogus=1", "bogus"),
        ("model.batch_size=0", "model.batch_size"),
        ("val_freq=-5", "val_freq"),
        ("ckpt_path=/nonexistent.ckpt", "/nonexistent.ckpt"),
    ],
)
def test_config_errors_name_the_key(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, override: str, message: str
) -> None:
    cfg = make_cfg("train", [*TINY, override], tmp_path)
    with pytest.raises(ConfigError, match=message):
        validate_train_cfg(cfg)
        train(cfg)


def test_batch_must_divide_by_devices(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = make_cfg("train", [*TINY, "trainer=ddp_cpu", "model.batch_size=3"], tmp_path)
    with pytest.raises(ConfigError, match=r"data.batch_size=3 .* divisible .* = 2"):
        validate_train_cfg(cfg)


def test_resume_without_checkpoint_is_a_clear_error(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = make_cfg("train", [*TINY, "ckpt_path=last"], tmp_path)
    with pytest.raises(ConfigError, match=r"last\.ckpt does not exist"):
        train(cfg)


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"sresolve.cli.{module}", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_sresolve_test_end_to_end(trained: dict, tmp_path: Path) -> None:
    weights = trained["out"] / "weights" / "net_g_latest.pth"
    res = _cli(
        "test",
        "model=safmn",
        "model.dim=24",
        "model.n_blocks=2",
        "data=samples_holdout",
        f"paths.data_dir={trained['samples'].parent}",
        f"ckpt={weights}",
        "save_comparisons=true",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,method,images,psnr,ssim")
    by_method = {r.split(",")[1]: float(r.split(",")[3]) for r in rows[1:]}
    # the table equals the training-time validation (same EMA weights, same protocol) and the bicubic reference
    assert by_method["safmn"] == pytest.approx(trained["metrics"]["val/samples/psnr"], abs=1e-3)
    assert by_method["bicubic"] == pytest.approx(_bicubic_psnr(trained["samples"] / "val" / "HR"), abs=1e-6)
    assert "Y (BT.601" in (tmp_path / "results.md").read_text() and "Protocol" in res.stdout
    assert len(list((tmp_path / "comparisons").rglob("*.png"))) == 3
    # weights that do not fit the configured model: one clear line, no traceback
    bad = _cli(
        "test",
        "model=safmn",
        "data=samples_holdout",
        f"paths.data_dir={trained['samples'].parent}",
        f"ckpt={weights}",
        f"hydra.run.dir={tmp_path / 'bad'}",
        cwd=tmp_path,
    )
    assert bad.returncode != 0 and "do not fit the configured model" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_sresolve_upscale_end_to_end(trained: dict, tmp_path: Path) -> None:
    weights = trained["out"] / "weights" / "net_g_latest.safetensors"
    src = tmp_path / "in"
    small = torch.rand(3, 21, 30)
    write_image(src / "small.png", small)
    big = read_image(trained["samples"] / "val" / "HR" / "astronaut.png")[:, :256, :256]
    write_image(src / "big.png", big)
    res = _cli(
        "upscale",
        f"input={src}",
        f"output={tmp_path / 'out'}",
        f"weights={weights}",
        "max_pixels=4096",
        "tile_overlap=16",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out_small, out_big = read_image(tmp_path / "out" / "small.png"), read_image(tmp_path / "out" / "big.png")
    assert out_small.shape == (3, 84, 120) and out_big.shape == (3, 1024, 1024)
    net = load_model(weights)
    with torch.no_grad():
        ref = net(read_image(src / "big.png")[None]).clamp(0, 1)[0]
    # tiled (64 px tiles for a 256 px image) vs untiled, after 8-bit rounding of both
    diff = (out_big - ref).abs()
    assert diff.mean() < 2 / 255 and diff.max() < 0.25
    missing = _cli(
        "upscale",
        f"input={src}",
        f"output={tmp_path / 'o2'}",
        f"weights={tmp_path / 'nope.pth'}",
        f"hydra.run.dir={tmp_path / 'run2'}",
        cwd=tmp_path,
    )
    assert missing.returncode != 0 and "nope.pth" in missing.stderr and "Traceback" not in missing.stderr
