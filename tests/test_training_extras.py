"""Pre-training (BasicSR pretrain_network_g semantics), the optional loggers, and DDP simulated on CPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from sresolve.cli.train import build_module, train
from sresolve.config import ConfigError

TINY = ["trainer=cpu", "model.dim=16", "model.n_blocks=1", "model.batch_size=4", "model.lr_patch_size=16",
        "data.num_workers=0", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def test_pretrain_x2_initialises_x4_non_strict(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """The HAT/SAFMN ×4-from-×2 recipe: every tensor but the upsampler comes from the ×2 weights."""
    cfg2 = make_cfg("train", [*TINY, "scale=2", "model.total_iter=2", "val_freq=2", "save_freq=2"], tmp_path / "x2")
    train(cfg2)
    weights = tmp_path / "x2" / "weights" / "net_g_latest.pth"
    x2 = torch.load(weights, weights_only=True)["params_ema"]
    strict = make_cfg("train", [*TINY, "pretrain=checkpoint", f"pretrain.path={weights}"], tmp_path / "x4s")
    with pytest.raises(ValueError, match=r"to_img.0.weight: file \(12, 16, 3, 3\) vs model \(48, 16, 3, 3\)"):
        build_module(strict).load_pretrained(weights, strict=True)
    cfg4 = make_cfg("train", [*TINY, "pretrain=checkpoint", f"pretrain.path={weights}", "pretrain.strict=false",
                             "model.total_iter=2", "val_freq=2", "save_freq=2"],
                    tmp_path / "x4")
    module = build_module(cfg4)
    report = module.load_pretrained(weights, key="params_ema", strict=False)
    assert sorted(report["mismatched"]) == ["to_img.0.bias", "to_img.0.weight"]
    own = module.net.state_dict()
    for key, value in x2.items():
        if not key.startswith("to_img"):
            assert torch.equal(own[key], value) and torch.equal(module.net_ema.state_dict()[key], value)
    metrics = train(cfg4)  # and it trains from there
    assert "val/psnr" in metrics


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_optional_loggers_write_offline(make_cfg: Callable[..., DictConfig], tmp_path: Path, logger: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = make_cfg("train", [*TINY, f"logger={logger}", "model.total_iter=2", "val_freq=2", "save_freq=2"], tmp_path)
    metrics = train(cfg)
    assert metrics["val/psnr"] > 0
    if logger == "tensorboard":
        assert list((tmp_path / "tensorboard").rglob("events.out.tfevents*"))
    else:
        assert list((tmp_path / "wandb").rglob("*.wandb"))


def test_ddp_sim_two_processes_shard_without_duplicates(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """2 CPU processes (gloo, spawn): global batch split per rank, validation sharded without padding; the reduced
    validation PSNR equals a single-process evaluation of the same EMA weights."""
    from sresolve.checkpoints import load_model
    from sresolve.data.datasets import BenchmarkDataset
    from sresolve.metrics import psnr_y

    cfg = make_cfg("train", [*TINY, "trainer=ddp_sim", "model.total_iter=2", "val_freq=2", "save_freq=2"], tmp_path)
    train(cfg)
    import csv

    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = [float(r["val/samples/psnr"]) for r in rows if r.get("val/samples/psnr")]
    assert len(logged) == 1
    net = load_model(tmp_path / "weights" / "net_g_latest.pth")
    ds = BenchmarkDataset(hr_dir=Path(cfg.data.root) / "val" / "HR", scale=4)
    with torch.no_grad():
        ref = [float(psnr_y(net(s["lr"][None]).clamp(0, 1), s["hr"][None], 4)[0]) for s in ds]
    assert len(ref) == 3  # an odd count: padding to 2 x 2 would have scored one image twice
    assert logged[0] == pytest.approx(sum(ref) / len(ref), abs=1e-4)


def test_ddp_batch_not_divisible_fails_before_spawning(make_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = make_cfg("train", [*TINY, "trainer=ddp_sim", "model.batch_size=5"], tmp_path)
    with pytest.raises(ConfigError, match="data.batch_size=5"):
        train(cfg)
