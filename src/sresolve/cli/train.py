"""``sresolve-train``: compose a run with Hydra, then fit (and resume) an SR network with Lightning.

Examples::

    sresolve-train model=safmn data=df2k
    sresolve-train model=safmn_l data=df2k trainer=ddp
    sresolve-train ckpt_path=last                      # resume the run folder outputs/train/<run_name>
    sresolve-train --multirun model.dim=24,36,48       # a sweep, one job per value
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sresolve.config import ConfigError, conf_dir, split_model_cfg, to_dict, validate_train_cfg

log = logging.getLogger("sresolve.train")


def build_module(cfg: DictConfig) -> Any:
    """The LightningModule for ``cfg.model`` (network kwargs checked by the registry, errors name ``model.<key>``)."""
    from sresolve.models import SRModule

    arch, net_kwargs, recipe = split_model_cfg(cfg.model)
    val_cfg = to_dict(cfg.get("val", None)) or {}
    try:
        return SRModule(
            arch=arch,
            arch_kwargs=net_kwargs,
            optim=recipe["optim"],
            sched=recipe["sched"],
            loss=recipe["loss"],
            ema_decay=float(recipe.get("ema_decay", 0.999)),
            total_iter=int(recipe["total_iter"]),
            val=val_cfg,
            compile=bool(recipe.get("compile", False)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"model (arch={arch!r}): {err}") from None


def build_datamodule(cfg: DictConfig) -> Any:
    try:
        return instantiate(cfg.data, _convert_="all")
    except Exception as err:  # hydra wraps constructor errors; surface the cause with the group named
        cause = err.__cause__ or err
        raise ConfigError(f"data ({cfg.data.get('name', '?')}): {cause}") from None


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``ckpt_path=last`` → this run's ``checkpoints/last.ckpt``; a fresh start archives old checkpoints."""
    ckpt_dir = output_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if cfg.ckpt_path == "last":
        if not last.is_file():
            raise ConfigError(f"ckpt_path=last but {last} does not exist: nothing to resume in run '{cfg.run_name}'")
        return str(last)
    if cfg.ckpt_path is None and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        archived = ckpt_dir.with_name(f"checkpoints_archived_{time.strftime('%Y%m%d_%H%M%S')}")
        shutil.move(str(ckpt_dir), archived)
        log.warning("run folder already had checkpoints; moved them to %s (use ckpt_path=last to resume)", archived)
    return None if cfg.ckpt_path is None else str(cfg.ckpt_path)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, export weights, return the final validation metrics (for sweeps)."""
    from sresolve.data.io import ImageReadError
    from sresolve.models.checkpoint_io import AtomicCheckpointIO

    validate_train_cfg(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    if cfg.pretrain.get("path") and ckpt_path is None:
        report = module.load_pretrained(
            cfg.pretrain.path, key=cfg.pretrain.get("key"), strict=bool(cfg.pretrain.strict)
        )
        log.info("initialised from %s: %s", cfg.pretrain.path, {k: len(v) for k, v in report.items()})
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    if not loggers:  # nothing to monitor into (logger=none)
        callbacks = [c for c in callbacks if type(c).__name__ != "LearningRateMonitor"]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    if trainer.is_global_zero:
        run_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        OmegaConf.save(run_cfg, output_dir / "config.yaml", resolve=True)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except (FileNotFoundError, ImageReadError) as err:  # data missing or unreadable: name it, no traceback
        raise ConfigError(f"data ({cfg.data.get('name', '?')}): {err}") from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if trainer.is_global_zero:
        if cfg.export:
            paths = module.export_weights(output_dir / "weights")
            log.info("exported weights: %s", ", ".join(str(p) for p in paths.values()))
        best = next((c.best_model_path for c in callbacks if getattr(c, "monitor", None) and c.best_model_path), None)
        log.info("run folder: %s | best checkpoint: %s | final val: %s", output_dir, best, metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except ConfigError as err:  # one line naming the key, not a traceback
        raise SystemExit(f"sresolve-train: config error: {err}") from None
    return metrics.get("val/psnr")


def main() -> None:
    """Console entry point (``sresolve-train``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
