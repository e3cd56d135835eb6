"""Experiment loggers of ``conf/logger/*.yaml`` (:func:`build_loggers`), and what a run records into wandb.

``logger=wandb`` builds its :class:`~lightning.pytorch.loggers.WandbLogger` through :func:`wandb_logger`:
``project``, ``entity``, ``tags``, ``group`` and ``job_type`` come from the config, and ``offline: null`` (the
default) means automatic: offline unless wandb credentials exist (:func:`wandb_credentials_available`, a local check,
no network call) or ``WANDB_MODE`` says otherwise (:func:`wandb_offline`). On global rank zero only, the run then
records the resolved run config and the git commit of the source (:func:`record_wandb_run`); the LR|SR|HR comparison
panels are logged at each validation by the module; at the end of training the final validation metrics become the
``results`` table and the wandb run is finished (:func:`finish_wandb_runs`).
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

from sresolve.config import ConfigError, instantiate_group
from sresolve.results import results_table

#: the config key of the wandb logger, named in config errors
WANDB_KEY = "logger.wandb"
#: the wandb API host whose ``~/.netrc`` entry counts as credentials when ``WANDB_BASE_URL`` is not set
WANDB_DEFAULT_HOST = "api.wandb.ai"
#: ``WANDB_MODE`` values that mean offline (``dryrun`` is wandb's older name)
OFFLINE_MODES = frozenset({"offline", "dryrun"})
#: characters wandb refuses in a project name
_PROJECT_FORBIDDEN = set("/\\#?%:")


def wandb_credentials_available(environ: Mapping[str, str] | None = None, home: str | Path | None = None) -> bool:
    """Whether wandb could log in without asking: ``WANDB_API_KEY`` is set, or the netrc file (``$NETRC``, else
    ``<home>/.netrc``, home defaulting to the user's) has a password for the wandb host (``WANDB_BASE_URL``'s host,
    default ``api.wandb.ai``), which is where ``wandb login`` stores the key. Reads local files only, never the
    network; an unreadable or malformed netrc counts as no credentials."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(env.get("WANDB_BASE_URL", "") or f"https://{WANDB_DEFAULT_HOST}").hostname or WANDB_DEFAULT_HOST
    path = Path(env["NETRC"]) if env.get("NETRC") else Path(home if home is not None else Path.home()) / ".netrc"
    try:
        entry = netrc.netrc(str(path)).authenticators(host) if path.is_file() else None
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def wandb_offline(
    offline: bool | str | None = None, environ: Mapping[str, str] | None = None, home: str | Path | None = None
) -> bool:
    """Resolve the ``offline`` setting of ``logger=wandb``: ``true``/``false`` are kept; ``null`` (or ``auto``) is
    offline when ``WANDB_MODE`` is ``offline``/``dryrun``, online-capable when ``WANDB_MODE`` is anything else
    (``online``, ``disabled``, ...: wandb itself then follows it), and otherwise offline unless
    :func:`wandb_credentials_available`."""
    if isinstance(offline, bool):
        return offline
    if offline is not None and offline != "auto":
        raise ConfigError(f"{WANDB_KEY}.offline={offline!r}: expected true, false or null (auto)")
    env = os.environ if environ is None else environ
    mode = env.get("WANDB_MODE", "").strip().lower()
    if mode:
        return mode in OFFLINE_MODES
    return not wandb_credentials_available(env, home)


def _optional_str(value: Any, key: str) -> str | None:
    """``value`` if None or a non-empty string, else a :class:`ConfigError` naming ``logger.wandb.<key>``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{WANDB_KEY}.{key}={value!r}: expected a non-empty string or null")
    return value


def wandb_logger(
    project: str = "sresolve",
    entity: str | None = None,
    name: str | None = None,
    save_dir: str | Path = ".",
    offline: bool | str | None = None,
    tags: Sequence[str] | None = None,
    group: str | None = None,
    job_type: str | None = None,
    log_model: bool | str = False,
    **kwargs: Any,
) -> WandbLogger:
    """The ``_target_`` of ``conf/logger/wandb.yaml``: a :class:`WandbLogger` with the config's ``project``,
    ``entity`` (null = the account's default), ``tags``, ``group`` and ``job_type``, writing under
    ``<save_dir>/wandb/``; ``offline`` is resolved by :func:`wandb_offline` (null = automatic). Other keys go to
    ``wandb.init``. Bad values raise :class:`~sresolve.config.ConfigError` naming ``logger.wandb.<key>``. Creates
    no wandb run yet (that happens on first use, on global rank zero only)."""
    if not isinstance(project, str) or not project.strip() or _PROJECT_FORBIDDEN & set(project):
        forbidden = "".join(sorted(_PROJECT_FORBIDDEN))
        raise ConfigError(f"{WANDB_KEY}.project={project!r}: expected a non-empty name without any of {forbidden}")
    entity = _optional_str(entity, "entity")
    group = _optional_str(group, "group")
    job_type = _optional_str(job_type, "job_type")
    if isinstance(tags, ListConfig | DictConfig):
        tags = OmegaConf.to_container(tags, resolve=True)
    if tags is None:
        tag_list: list[str] = []
    elif isinstance(tags, list | tuple) and all(isinstance(t, str) and 0 < len(t.strip()) <= 64 for t in tags):
        tag_list = list(tags)
    else:
        raise ConfigError(f"{WANDB_KEY}.tags={tags!r}: expected a list of non-empty strings (at most 64 characters)")
    is_offline = wandb_offline(offline)
    if is_offline and log_model:
        raise ConfigError(f"{WANDB_KEY}.log_model={log_model!r}: checkpoints cannot be uploaded offline")
    extra = {k: v for k, v in {"entity": entity, "group": group, "job_type": job_type}.items() if v is not None}
    return WandbLogger(
        name=name,
        save_dir=str(save_dir),
        offline=is_offline,
        project=project,
        tags=tag_list or None,
        log_model=log_model,
        **extra,
        **kwargs,
    )


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate every entry of ``cfg.logger`` (none for ``logger=none``); a failing constructor raises
    :class:`~sresolve.config.ConfigError` naming ``logger.<key>``."""
    return [
        instantiate_group(lg_cfg, f"logger.{key} ({lg_cfg.get('_target_', '?')})")
        for key, lg_cfg in (cfg.get("logger") or {}).items()
        if lg_cfg is not None
    ]


def _wandb_loggers(loggers: Iterable[Any]) -> list[WandbLogger]:
    """The :class:`WandbLogger` instances among ``loggers``."""
    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


@rank_zero_only
def record_wandb_run(
    loggers: Iterable[Any], run_cfg: DictConfig | Mapping[str, Any], git: Mapping[str, Any] | None
) -> None:
    """Record the run's provenance in each wandb logger (global rank zero only; nothing without one): the resolved
    run config (pass it without the ``hydra`` node) as the wandb config, plus ``git``: the run's
    :func:`~sresolve.provenance.git_commit` (``{"sha", "dirty"}``, or None outside a git checkout), the same value
    ``results.json`` records."""
    wandb_loggers = _wandb_loggers(loggers)
    if not wandb_loggers:
        return
    params = OmegaConf.to_container(run_cfg, resolve=True) if isinstance(run_cfg, DictConfig) else dict(run_cfg)
    params["git"] = None if git is None else dict(git)
    for lg in wandb_loggers:
        lg.log_hyperparams(params)


@rank_zero_only
def log_results_table(loggers: Iterable[Any], metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log the final validation metrics (those of ``results.json``) as the wandb Table ``results``: one row per
    validation set, columns ``val_set``, ``psnr``, ``ssim``, ... (:func:`~sresolve.results.results_table`).
    Global rank zero only; nothing without a wandb logger or without per-set metrics."""
    columns, rows = results_table(metrics)
    if not rows:
        return
    for lg in _wandb_loggers(loggers):
        lg.log_table(key="results", columns=columns, data=rows, step=step)


@rank_zero_only
def finish_wandb_runs(loggers: Iterable[Any], metrics: Mapping[str, float], step: int | None = None) -> None:
    """End of training (global rank zero): :func:`log_results_table`, then finish each wandb run so its files are
    complete and a next run in the same process (a multirun sweep) starts a run of its own."""
    log_results_table(loggers, metrics, step)
    for lg in _wandb_loggers(loggers):
        run = getattr(lg, "_experiment", None)  # the run if one was started: never start one just to finish it
        if run is not None:
            run.finish()
