"""The NaN/Inf guard of the training modules: a step with a non-finite loss is skipped (weights, optimizer state and EMA
untouched, counters in step) and counted; ``nonfinite_limit`` of them in a row stop the run with a message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from conftest import FAMILIES, TINY_SAFMN, compose_cfg, tiny_run
from sresolve.models.losses import WeightedLoss

RUN = [*TINY_SAFMN, *tiny_run(iters=6), "model.ema_decay=0.5"]


def _poison(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int] | None) -> dict[str, int]:
    """Make the training loss NaN at the given call numbers (1-based; None: always)."""
    calls = {"n": 0}
    forward = WeightedLoss.forward

    def poisoned(self: WeightedLoss, pred: torch.Tensor, target: torch.Tensor) -> Any:
        total, parts = forward(self, pred, target)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if bad_calls is None or calls["n"] in bad_calls:
                total = total * float("nan")
        return total, parts

    monkeypatch.setattr(WeightedLoss, "forward", poisoned)
    return calls


def test_nonfinite_steps_are_skipped_and_counted(
    make_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sresolve.cli.train import train

    calls = _poison(monkeypatch, {2, 3})
    snapshots: list[dict[str, torch.Tensor]] = []
    from sresolve.models import SRModule

    step = SRModule.optimizer_step

    def record(self: SRModule, *args: Any, **kwargs: Any) -> None:
        step(self, *args, **kwargs)
        snapshots.append({k: v.detach().clone() for k, v in [*self.net.state_dict().items()]})
        snapshots[-1].update({f"ema.{k}": v.detach().clone() for k, v in self.net_ema.state_dict().items()})

    monkeypatch.setattr(SRModule, "optimizer_step", record)
    cfg = make_cfg("train", RUN, tmp_path)
    with caplog.at_level(logging.WARNING, logger="sresolve.train"):
        metrics = train(cfg)
    assert calls["n"] == 6 and len(snapshots) == 6  # every batch still takes a step slot (global_step 6)
    for i in (1, 2):  # the 2nd and 3rd steps: nothing moved, neither the weights nor the EMA
        assert all(torch.equal(snapshots[i][k], snapshots[i - 1][k]) for k in snapshots[i])
    for i in (3, 4, 5):
        assert any(not torch.equal(snapshots[i][k], snapshots[i - 1][k]) for k in snapshots[i])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["nonfinite_steps"] == 2
    adam_steps = {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    assert adam_steps == {4}  # the optimizer itself stepped 4 times
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert torch.isfinite(torch.tensor(metrics["val/psnr"]))
    skipped = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert skipped == [
        "non-finite loss or gradients at step 1: step skipped (1 in a row, 1 in the run)",
        "non-finite loss or gradients at step 2: step skipped (2 in a row, 2 in the run)",
    ]


def test_repeated_nonfinite_steps_stop_the_run_with_a_message(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sresolve.cli.train import train
    from sresolve.config import ConfigError

    _poison(monkeypatch, None)
    cfg = make_cfg("train", [*RUN, "nonfinite_limit=3"], tmp_path)
    with pytest.raises(FloatingPointError, match=r"3 consecutive .* the last at step 2: the run stops .*bf16-mixed"):
        train(cfg)
    with pytest.raises(ConfigError, match="nonfinite_limit"):
        train(make_cfg("train", [*RUN, "nonfinite_limit=0"], tmp_path / "bad"))


def test_gan_generator_nonfinite_steps_stop_the_run_despite_finite_discriminator_steps(
    multiref_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AMRSR (manual optimisation): a generator loss that is always NaN in the GAN phase, while the discriminator's
    steps (2 per generator step) stay finite. Each generator step is skipped and counted; the consecutive count is
    kept per optimizer, so the third one stops the run (the discriminator's finite steps in between do not reset
    it)."""
    from sresolve.cli.train import train
    from sresolve.models import RefSRGANModule

    loss = RefSRGANModule._generator_loss

    def poisoned(self: RefSRGANModule, *args: Any, **kwargs: Any) -> Any:
        total, parts = loss(self, *args, **kwargs)
        return (total * float("nan"), parts) if self.global_step >= 1 else (total, parts)

    monkeypatch.setattr(RefSRGANModule, "_generator_loss", poisoned)
    overrides = [*FAMILIES["amrsr"], *tiny_run(iters=8), "logger=none", "nonfinite_limit=3"]
    cfg = compose_cfg("train", overrides, tmp_path, data_dir=multiref_data_dir)
    with pytest.raises(FloatingPointError, match=r"3 consecutive .* the last at step 3: the run stops"):
        train(cfg)
