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
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from sresolve.config import (
    ConfigError,
    conf_dir,
    instantiate_group,
    split_model_cfg,
    to_dict,
    validate_train_cfg,
)
from sresolve.validation import check_bool, check_choice, check_int

log = logging.getLogger("sresolve.train")

#: Exit status of a preempted run (128 + SIGTERM, what a shell reports for a process ended by SIGTERM).
PREEMPTED_EXIT_CODE = 143


def build_module(cfg: DictConfig) -> Any:
    """The LightningModule for ``cfg.model`` (network kwargs checked by the registry, errors name ``model.<key>``):
    ``model.task`` ``sr`` (default, paired patches) → :class:`SRModule`; ``arbitrary_scale`` (EQSR) →
    :class:`ArbitraryScaleSRModule`; ``refsr_gan`` (AMRSR) → :class:`RefSRGANModule`; ``multi_task``
    (``pretrain=multi_task``) → :class:`MultiTaskSRModule`."""
    from sresolve.models import ArbitraryScaleSRModule, MultiTaskSRModule, RefSRGANModule, SRModule

    arch, net_kwargs, recipe = split_model_cfg(cfg.model)
    val_cfg = to_dict(cfg.get("val", None)) or {}
    task = str(recipe.get("task", "sr"))
    modules = {
        "sr": SRModule,
        "arbitrary_scale": ArbitraryScaleSRModule,
        "refsr_gan": RefSRGANModule,
        "multi_task": MultiTaskSRModule,
    }
    if task not in modules:
        raise ConfigError(f"model.task={task!r}: allowed {sorted(modules)}")
    extra: dict[str, Any] = {}
    if task == "refsr_gan":  # the discriminator's input is the HR training patch
        extra = {"gan": recipe.get("gan", {}), "hr_patch_size": 4 * int(cfg.data.lr_patch_size)}
    if task == "multi_task":  # pretrain=multi_task: one head per scale of pretrain.scales
        extra = {"scales": list(to_dict(cfg.pretrain.get("scales") or ()))}
    try:
        module = modules[task](
            arch=arch,
            arch_kwargs=net_kwargs,
            optim=recipe["optim"],
            sched=recipe["sched"],
            loss=recipe["loss"],
            ema_decay=float(recipe.get("ema_decay", 0.999)),
            total_iter=int(recipe["total_iter"]),
            val=val_cfg,
            compile=check_bool(recipe.get("compile", False), "model.compile"),
            compile_backend=check_choice(
                recipe.get("compile_backend", "inductor"), compile_backends(), "model.compile_backend"
            ),
            channels_last=check_bool(recipe.get("channels_last", False), "model.channels_last"),
            **extra,
        )
    except (KeyError, TypeError, ValueError, FileNotFoundError) as err:  # FileNotFoundError: VGG weights missing
        raise ConfigError(f"model (arch={arch!r}): {err}") from None
    module.nonfinite_limit = check_int(cfg.get("nonfinite_limit", 10), "nonfinite_limit", error=ConfigError)
    return module


def compile_backends() -> list[str]:
    """The ``torch.compile`` backends this torch knows (``inductor``, ``aot_eager``, ``eager``, ``cudagraphs``, ...)."""
    import torch._dynamo

    return torch._dynamo.list_backends(exclude_tags=())


def build_datamodule(cfg: DictConfig) -> Any:
    return instantiate_group(cfg.data, f"data ({cfg.data.get('name', '?')})", _convert_="all")


def resolve_ckpt_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """``ckpt_path=last`` → this run's ``checkpoints/last.ckpt``; a fresh start archives old checkpoints. A submitit
    job (``hydra/launcher=slurm``) whose folder already holds a ``last.ckpt`` is that job requeued after its time
    limit or a preemption: it resumes (each launch writes a new sweep folder, so a new job never finds one)."""
    from sresolve.models.checkpoint_io import in_submitit_job

    ckpt_dir = output_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if cfg.ckpt_path == "last":
        if not last.is_file():
            raise ConfigError(f"ckpt_path=last but {last} does not exist: nothing to resume in run '{cfg.run_name}'")
        return str(last)
    if cfg.ckpt_path is None and in_submitit_job() and last.is_file():
        log.warning("submitit job requeued: resuming from %s", last)
        return str(last)
    if cfg.ckpt_path is None and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        archived = ckpt_dir.with_name(f"checkpoints_archived_{time.strftime('%Y%m%d_%H%M%S')}")
        shutil.move(str(ckpt_dir), archived)
        log.warning("run folder already had checkpoints; moved them to %s (use ckpt_path=last to resume)", archived)
    return None if cfg.ckpt_path is None else str(cfg.ckpt_path)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, export weights, return the final validation metrics (for sweeps)."""
    from sresolve.data.io import ImageReadError
    from sresolve.loggers import build_loggers, finish_wandb_runs, record_wandb_run
    from sresolve.models.checkpoint_io import AtomicCheckpointIO
    from sresolve.provenance import git_commit

    validate_train_cfg(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    ckpt_path = resolve_ckpt_path(cfg, output_dir)
    init = initialise(cfg, module, output_dir) if ckpt_path is None else _previous_init(output_dir)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = build_loggers(cfg)  # errors name logger.<key>
    if not loggers:  # nothing to monitor into (logger=none)
        callbacks = [c for c in callbacks if type(c).__name__ != "LearningRateMonitor"]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    git = git_commit() if trainer.is_global_zero else None  # the run's source: results.json and the wandb config
    if trainer.is_global_zero:
        run_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        OmegaConf.save(run_cfg, output_dir / "config.yaml", resolve=True)
        record_wandb_run(loggers, run_cfg, git)  # wandb: resolved config + git commit (rank zero)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except (FileNotFoundError, ImageReadError) as err:  # data missing or unreadable: name it, no traceback
        raise ConfigError(f"data ({cfg.data.get('name', '?')}): {err}") from None
    except SIGTERMException:  # preempted: PreemptionCheckpoint wrote last.ckpt; no results, no export
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if trainer.is_global_zero:
        if cfg.export:
            paths = module.export_weights(output_dir / "weights")
            log.info("exported weights: %s", ", ".join(str(p) for p in paths.values()))
        best = next((c for c in callbacks if getattr(c, "monitor", None) and c.best_model_path), None)
        write_results(cfg, output_dir, metrics, int(trainer.global_step), best, init, git)
        finish_wandb_runs(loggers, metrics, int(trainer.global_step))  # wandb: `results` table, run finished
        log.info(
            "run folder: %s | best checkpoint: %s | final val: %s",
            output_dir,
            best.best_model_path if best is not None else None,
            metrics,
        )
    return metrics


def initialise(cfg: DictConfig, module: Any, output_dir: Path) -> dict[str, Any] | None:
    """Apply the ``pretrain`` strategy (:mod:`sresolve.pretrain`): load the weights file into the net and its EMA,
    log what was loaded / skipped / newly initialised and write it to ``<run>/pretrain_report.json``."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from sresolve.pretrain import PretrainMismatchError, pretrain_spec

    spec = pretrain_spec(cfg)
    summary: dict[str, Any] = {"strategy": spec.strategy, "source_scale": spec.source_scale, "path": None}
    if spec.path is None:
        log.info("initialisation: pretrain=%s, random weights", spec.strategy)
        if rank_zero_only.rank == 0:
            _write_json(output_dir / "pretrain_report.json", summary)
        return summary
    try:
        report = module.load_pretrained(spec.path, key=spec.key, strict=spec.strict, exclude=spec.exclude)
    except PretrainMismatchError as err:
        raise ConfigError(f"pretrain={spec.strategy}: {err}") from None
    log.info("pretrain=%s: %s", spec.strategy, report.format())
    summary.update(path=str(spec.path), **report.counts())
    if rank_zero_only.rank == 0:  # under DDP every process loads the same file; one writes the report
        _write_json(output_dir / "pretrain_report.json", {**summary, "report": report.to_dict()})
    return summary


def _previous_init(output_dir: Path) -> dict[str, Any] | None:
    """A resumed run restores its own checkpoint; its initialisation is the one recorded when it started."""
    import json

    path = output_dir / "pretrain_report.json"
    if not path.is_file():
        return None
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "report"}


def write_results(
    cfg: DictConfig,
    output_dir: Path,
    metrics: dict[str, float],
    step: int,
    best: Any,
    init: dict[str, Any] | None,
    git: dict[str, Any] | None,
) -> Path:
    """``<run>/results.json``: the final validation metrics, the best tracked score, the step, the scale, network,
    data and initialisation of the run (what ``sresolve-collect`` reads to build result tables), and the git commit of
    the source (``{"sha", "dirty"}``, null outside a git checkout: :func:`sresolve.provenance.git_commit`)."""
    best_score = getattr(best, "best_model_score", None)
    payload = {
        "run_name": str(cfg.run_name),
        "arch": str(cfg.model.arch),
        "scale": int(cfg.scale),
        "data": str(cfg.data.get("name", "")),
        "step": step,
        "metrics": metrics,
        "best": {str(best.monitor): float(best_score)} if best_score is not None else {},
        "pretrain": init,
        "git": git,
    }
    return _write_json(output_dir / "results.json", payload)


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    import json

    from sresolve.checkpoints import atomic_write_text

    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except ConfigError as err:  # one line naming the key, not a traceback
        raise SystemExit(f"sresolve-train: config error: {err}") from None
    key = str(cfg.get("optimized_metric") or "val/psnr")
    if key not in metrics:  # a sweeper has nothing to optimise: say which key and what exists
        log.warning("optimized_metric=%r was not logged (logged: %s); the job returns None", key, sorted(metrics))
    return metrics.get(key)


def main() -> None:
    """Console entry point (``sresolve-train``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
