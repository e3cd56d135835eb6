"""Checkpoints for Lightning that lose nothing: atomic writes (a crash or a kill during a save never leaves a truncated
``last.ckpt``) and a checkpoint on preemption (SIGTERM / SIGUSR1, and submitit's timeout signal before a requeue)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from sresolve.checkpoints import atomic_torch_save

log = logging.getLogger("sresolve.train")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves go to a temporary file in the target folder, fsync'ed, then ``os.replace``d.

    Loading uses ``weights_only=True``: sresolve checkpoints hold only tensors and plain containers.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(checkpoint, path)


class PreemptionCheckpoint(Callback):
    """On SIGTERM (what SLURM, Kubernetes and ``kill`` send before stopping a job) or SIGUSR1 (SLURM's
    ``--signal=USR1@<seconds>`` warning), write ``<dirpath>/last.ckpt`` before the process exits, so that
    ``ckpt_path=last`` resumes the run where it stopped.

    Lightning turns SIGTERM into :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException` once the running
    batch has finished (on every DDP rank); this callback saves the checkpoint then, through the trainer's (atomic)
    checkpoint IO, and the training CLI exits with status 143 (128 + SIGTERM). SIGUSR1 is turned into SIGTERM unless
    another handler owns it (Lightning's SLURM auto-requeue). Other exceptions save nothing: a crash must not
    overwrite the last good checkpoint.

    In a submitit job (Hydra's submitit launchers) submitit's own signal (USR2, ``signal_delay_s`` before the time
    limit) is handled the same way, and submitit's handler runs after the checkpoint is written: it requeues the job,
    whose training then resumes from this ``last.ckpt`` (:func:`sresolve.cli.train.resolve_ckpt_path`).
    """

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._previous_usr1: Any = None
        self._submitit: tuple[signal.Signals, Any] | None = None  # (its signal, its requeue handler)
        self._requeue = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its own handlers (it restores what it found then when the fit ends)
        if not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self._previous_usr1 = signal.signal(signal.SIGUSR1, _usr1_as_sigterm)
        sig = submitit_signal()
        if sig is not None and callable(signal.getsignal(sig)):
            self._submitit = (sig, signal.signal(sig, self._checkpoint_then_requeue))

    def _checkpoint_then_requeue(self, signum: int, frame: Any) -> None:
        """submitit's timeout/preemption signal: finish the batch and checkpoint like SIGTERM, then requeue."""
        self._requeue = True
        os.kill(os.getpid(), signal.SIGTERM)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException):
            # the "last" checkpointer owns the file, so that on resume it overwrites it (instead of a last-v1.ckpt)
            for cb in trainer.checkpoint_callbacks:
                if isinstance(cb, ModelCheckpoint) and cb.save_last and self._same_folder(cb.dirpath):
                    cb.last_model_path = str(self.path)
            trainer.save_checkpoint(self.path)
            log.warning(
                "preempted (SIGTERM) after step %d: checkpoint written to %s; resume with ckpt_path=last",
                trainer.global_step,
                self.path,
            )
        if self._requeue and self._submitit is not None:
            # submitit's own handler resubmits the job (same overrides, same folder: it resumes this last.ckpt)
            # and exits the process; on ranks other than 0 it returns and the SIGTERM exit follows.
            self._requeue = False
            sig, requeue = self._submitit
            requeue(sig, None)

    def _same_folder(self, dirpath: str | None) -> bool:
        return dirpath is not None and Path(dirpath).resolve() == self.path.parent.resolve()

    def _restore(self) -> None:
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
        if self._submitit is not None and not self._requeue:
            signal.signal(*self._submitit)
            self._submitit = None


def in_submitit_job() -> bool:
    """Whether this process is a task of a submitit job (``hydra/launcher=slurm`` / ``submitit_local``)."""
    return "SUBMITIT_EXECUTOR" in os.environ


def submitit_signal() -> signal.Signals | None:
    """The signal submitit sends before a job's time limit (and on preemption) when this process is a submitit job:
    ``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default; else None."""
    if not in_submitit_job():
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, f"SIG{name}", None)


def _usr1_as_sigterm(signum: int, frame: Any) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
