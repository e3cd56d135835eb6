"""Preemption: SIGTERM (or SIGUSR1) during training writes last.ckpt before the process exits with status 143, and
``ckpt_path=last`` then finishes the run with the same weights as an uninterrupted one."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from conftest import TINY_SAFMN, tiny_run

RUN = [
    *TINY_SAFMN,
    *tiny_run(iters=12, batch_size=4),
    "save_freq=100",  # no periodic checkpoint before the kill: the one on disk is the preemption's
    "val_freq=6",
    "model.ema_decay=0.9",
    "data.train.repeat=2",  # 16 samples / batch 4: the kill lands mid-epoch
]


class SignalAtStep(L.Callback):
    """Sends ``signum`` to this process once ``global_step`` reaches ``step`` (a scheduler's preemption notice)."""

    def __init__(self, step: int, signum: str = "SIGTERM") -> None:
        self.step, self.signum, self.sent = step, getattr(signal, signum), False

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGUSR1"])
def test_preempted_run_resumes_to_the_uninterrupted_weights(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, signum: str
) -> None:
    from sresolve.cli.train import PREEMPTED_EXIT_CODE, train

    train(make_cfg("train", RUN, tmp_path / "straight"))
    kill = [
        f"+callbacks.kill._target_={__name__}.SignalAtStep",
        "+callbacks.kill.step=5",
        f"+callbacks.kill.signum={signum}",
    ]
    broken = tmp_path / "broken"
    with pytest.raises(SystemExit) as exit_info:
        train(make_cfg("train", [*RUN, *kill], broken))
    assert exit_info.value.code == PREEMPTED_EXIT_CODE
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the handler is given back
    saved = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 5  # written at the kill, after the running batch
    assert not (broken / "results.json").exists() and not (broken / "weights").exists()  # not a finished run
    train(make_cfg("train", [*RUN, "ckpt_path=last"], broken))
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(broken / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():  # raw and EMA weights
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for idx in opt_a:
        torch.testing.assert_close(opt_b[idx]["exp_avg_sq"], opt_a[idx]["exp_avg_sq"], rtol=0, atol=1e-9)
