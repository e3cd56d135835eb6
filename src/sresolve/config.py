"""Config plumbing shared by the CLIs: where ``conf/`` lives, splitting ``model`` into network and recipe, and the
start-up checks that turn a bad config into one clear message naming the key (instead of a failure hours later)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sresolve.validation import check_int

#: keys of a ``model/*.yaml`` that describe the training recipe; every other key is a constructor argument of the net.
RECIPE_KEYS = frozenset(
    {
        "arch",
        "batch_size",
        "lr_patch_size",
        "total_iter",
        "ema_decay",
        "compile",
        "compile_backend",  # torch.compile backend: inductor (default), aot_eager / eager (debugging, tests)
        "channels_last",
        "optim",
        "sched",
        "loss",
        "grad_checkpointing_layers",
        "finetune_lr",  # the family's small fine-tuning lr, used by pretrain=finetune (HAT 1e-5, HMA 5e-6)
        "task",  # how the family trains: "sr" (paired, SRModule), "arbitrary_scale" (EQSR), "refsr_gan" (AMRSR)
        "gan",  # reference-based GAN recipe (RefSRGANModule): warm-up, discriminator, adversarial form
    }
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key path."""


def instantiate_group(node: Any, label: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node)``; a failing constructor becomes one :class:`ConfigError` naming ``label``
    (e.g. ``data (df2k)``, ``logger.wandb (...)``) with the constructor's own message, not Hydra's wrapper (a
    :class:`ConfigError` of the constructor passes through as it is)."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except Exception as err:
        cause = err.__cause__ or err
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"{label}: {cause}") from None


def conf_dir() -> Path:
    """The Hydra config tree: ``$SRESOLVE_CONF`` if set, else ``conf/`` at the repository root."""
    env = os.environ.get("SRESOLVE_CONF")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "train.yaml").is_file():
        raise ConfigError(f"config tree not found at {path} (expected train.yaml there); set SRESOLVE_CONF")
    return path


def to_dict(cfg: Any) -> Any:
    """Resolve a DictConfig/ListConfig into plain containers (so checkpoints stay loadable with ``weights_only``)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def split_model_cfg(model: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``model`` group → (registry name, network kwargs, recipe dict)."""
    model = to_dict(model)
    if "arch" not in model:
        raise ConfigError("model.arch is missing: name a registered network (see sresolve.archs.list_archs())")
    arch = str(model["arch"])
    net_kwargs = {k: v for k, v in model.items() if k not in RECIPE_KEYS}
    recipe = {k: v for k, v in model.items() if k in RECIPE_KEYS and k != "arch"}
    return arch, net_kwargs, recipe


def _positive_int(value: Any, key: str) -> int:
    return check_int(value, key, error=ConfigError)


def world_size(trainer_cfg: Mapping[str, Any]) -> int:
    """Number of training processes the trainer config asks for (``devices`` x ``num_nodes``; -1/auto counted)."""
    devices = trainer_cfg.get("devices", 1)
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif devices in (-1, "auto", "-1"):
        accel = str(trainer_cfg.get("accelerator", "auto"))
        import torch

        n = torch.cuda.device_count() if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available() else 1
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    else:
        n = int(devices)
    return max(n, 1) * nodes


def validate_train_cfg(cfg: DictConfig) -> None:
    """Fail at start, naming the key: unknown arch or net argument, wrong types, batch vs devices, patch sizes, and
    the ``pretrain`` group (strategy, ``pretrain.path`` present and a file; :func:`sresolve.pretrain.pretrain_spec`)."""
    from sresolve import archs
    from sresolve.pretrain import pretrain_spec

    # first: pretrain=finetune interpolates model.finetune_lr, which pretrain_spec checks
    pretrain_spec(cfg, check_file=cfg.get("ckpt_path") is None)
    arch, _, recipe = split_model_cfg(cfg.model)
    names = archs.list_archs()
    if arch not in names:
        raise ConfigError(f"model.arch={arch!r} is not a registered network; allowed: {names}")
    for key in ("total_iter", "batch_size", "lr_patch_size"):
        if key in recipe:
            _positive_int(recipe[key], f"model.{key}")
    _positive_int(cfg.val_freq, "val_freq")
    _positive_int(cfg.save_freq, "save_freq")
    _positive_int(cfg.scale, "scale")
    data = to_dict(cfg.data)
    batch = _positive_int(data.get("batch_size"), "data.batch_size")
    _positive_int(data.get("lr_patch_size"), "data.lr_patch_size")
    n = world_size(to_dict(cfg.trainer))
    if batch % n:
        raise ConfigError(
            f"data.batch_size={batch} is the global batch and must be divisible by the number of processes "
            f"(trainer.devices x trainer.num_nodes = {n})"
        )
    decay = recipe.get("ema_decay", 0.999)
    if not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise ConfigError(f"model.ema_decay must be a number in [0, 1), got {decay!r}")
    if cfg.ckpt_path not in (None, "last") and not Path(str(cfg.ckpt_path)).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file (use 'last' to resume this run)")
    check_ddp_sweep(to_dict(cfg.trainer))


def check_ddp_sweep(trainer: Mapping[str, Any]) -> None:
    """A Hydra multirun cannot start ``strategy=ddp`` processes itself: Lightning's script launcher re-runs the command
    line for every other rank, and with ``--multirun`` on it each rank would launch the whole sweep again. Allowed:
    ranks started from outside (SLURM / submitit: ``hydra/launcher=slurm``), ``ddp_spawn`` / ``ddp_fork``
    (``trainer=ddp_cpu``), or one device per job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sresolve.models.checkpoint_io import in_submitit_job

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    one_process = trainer.get("devices", 1) in (1, "1") and int(trainer.get("num_nodes", 1) or 1) == 1
    external = "SLURM_NTASKS" in os.environ or in_submitit_job()
    if str(trainer.get("strategy")) == "ddp" and not one_process and not external:
        raise ConfigError(
            "trainer.strategy=ddp in a --multirun: every DDP rank would re-launch the whole sweep. Use "
            "hydra/launcher=slurm (ranks started by SLURM), trainer.strategy=ddp_spawn, or trainer.devices=1 per job"
        )
