"""Collect finished training runs into result tables (``sresolve-collect``).

Every training run folder holds ``config.yaml`` (the resolved config) and, once finished, ``results.json`` (final
validation metrics, best tracked score, step; written by :func:`sresolve.cli.train.write_results`); runs trained
before ``results.json`` existed are read from ``csv/metrics.csv`` (the last logged value). :func:`find_runs` walks a
folder (a sweep folder, or ``outputs/train``) and returns one :class:`RunRecord` per run.

:func:`cross_scale_table` builds the layout of the HMA supplement's Table 1 (cross-scale initialisation,
``conf/experiment/hma_table1_cross_scale.yaml``): rows = target scale (×2, ×3, ×4), columns = initialisation
(``none`` = random, ``x2``/``x3``/``x4`` = ``pretrain=cross_scale`` from that scale, ``finetune``/``imagenet`` for
the other strategies), cells = a validation metric (``val/psnr`` = Y-PSNR on the first validation set, shave = scale).
:func:`write_table` writes it as markdown and CSV; :class:`CollectTableCallback` does so at the end of a Hydra
multirun.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

__all__ = [
    "CollectTableCallback",
    "CrossScaleTable",
    "RunRecord",
    "cross_scale_table",
    "find_runs",
    "init_label",
    "read_run",
    "write_table",
]

log = logging.getLogger(__name__)

#: Column order of the initialisation labels (others follow alphabetically).
_COLUMN_ORDER = ("none", "imagenet", "finetune")


@dataclass
class RunRecord:
    """One finished (or interrupted) training run."""

    path: Path
    arch: str
    scale: int
    data: str
    init: str
    metrics: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    step: int | None = None
    mtime: float = 0.0

    def value(self, metric: str, reduce: str = "last") -> float:
        """``metric`` at the end of training (``last``) or the best tracked value (``best``; falls back to last)."""
        if reduce == "best" and metric in self.best:
            return self.best[metric]
        return self.metrics.get(metric, math.nan)


def init_label(pretrain: dict[str, Any] | None) -> str:
    """Column label of a run's initialisation: ``none``, ``x<t>`` (cross-scale from ×t), ``finetune``, ``imagenet``."""
    pretrain = pretrain or {}
    strategy = str(pretrain.get("strategy") or ("finetune" if pretrain.get("path") else "none"))
    if strategy == "cross_scale":
        source = pretrain.get("source_scale")
        return "none" if source in (None, "none", "null", "scratch") else f"x{int(source)}"
    return strategy


def _metrics_from_csv(path: Path) -> tuple[dict[str, float], dict[str, float], int | None]:
    """Last logged value of every ``val/*`` column of a Lightning CSV log (and the max of ``val/psnr``)."""
    last: dict[str, float] = {}
    best: dict[str, float] = {}
    step = None
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith("val/") and value not in (None, ""):
                    last[key] = float(value)
                    if key.endswith("psnr"):
                        best[key] = max(best.get(key, -math.inf), float(value))
                    if row.get("step"):
                        step = int(float(row["step"]))
    return last, best, step


def read_run(run_dir: str | Path) -> RunRecord | None:
    """The :class:`RunRecord` of a run folder, or None when it has no ``config.yaml`` or no metrics yet."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return None
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    results = run_dir / "results.json"
    metrics_csv = run_dir / "csv" / "metrics.csv"
    if results.is_file():
        payload = json.loads(results.read_text())
        metrics = {k: float(v) for k, v in payload.get("metrics", {}).items()}
        best = {k: float(v) for k, v in payload.get("best", {}).items()}
        step = payload.get("step")
        mtime = results.stat().st_mtime
    elif metrics_csv.is_file():
        metrics, best, step = _metrics_from_csv(metrics_csv)
        mtime = metrics_csv.stat().st_mtime
    else:
        return None
    model = cfg.get("model") or {}
    return RunRecord(
        path=run_dir,
        arch=str(model.get("arch", "?")),
        scale=int(cfg.get("scale", model.get("scale", 0)) or 0),
        data=str((cfg.get("data") or {}).get("name", "")),
        init=init_label(cfg.get("pretrain")),
        metrics=metrics,
        best=best,
        step=step,
        mtime=mtime,
    )


def find_runs(root: str | Path) -> list[RunRecord]:
    """Every run folder under ``root`` (``root`` itself included) that has a config and metrics, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    runs = []
    for cfg_path in sorted(root.rglob("config.yaml")):
        if ".hydra" in cfg_path.parts:
            continue
        record = read_run(cfg_path.parent)
        if record is not None:
            runs.append(record)
    return runs


@dataclass
class CrossScaleTable:
    """Rows = target scales, columns = initialisation labels, ``cells[(scale, init)]`` = value (NaN = no run)."""

    metric: str
    rows: list[int]
    columns: list[str]
    cells: dict[tuple[int, str], float]
    runs: dict[tuple[int, str], RunRecord]

    def value(self, scale: int, init: str) -> float:
        return self.cells.get((scale, init), math.nan)

    def markdown(self, digits: int = 2) -> str:
        head = f"| target \\ init ({self.metric}) | " + " | ".join(_column_title(c) for c in self.columns) + " |"
        lines = [head, "|---" * (len(self.columns) + 1) + "|"]
        for s in self.rows:
            vals = [self.value(s, c) for c in self.columns]
            lines.append(f"| ×{s} | " + " | ".join("–" if math.isnan(v) else f"{v:.{digits}f}" for v in vals) + " |")
        return "\n".join(lines)


def _column_title(label: str) -> str:
    return f"from ×{label[1:]}" if label.startswith("x") and label[1:].isdigit() else label


def _column_key(label: str) -> tuple[int, int, str]:
    if label in _COLUMN_ORDER:
        return (0, _COLUMN_ORDER.index(label), label)
    if label.startswith("x") and label[1:].isdigit():
        return (1, int(label[1:]), label)
    return (2, 0, label)


def cross_scale_table(
    runs: Iterable[RunRecord],
    metric: str = "val/psnr",
    reduce: str = "last",
    scales: Sequence[int] | None = None,
    inits: Sequence[str] | None = None,
) -> CrossScaleTable:
    """Arrange runs as target scale × initialisation (the HMA supplement's Table 1 layout).

    ``scales`` / ``inits`` fix the rows / columns (default: those present, columns ``none`` first then ``x2``,
    ``x3``, ...). Two runs for the same cell (e.g. a repeated sweep in another folder): the newest one is used and a
    warning names both.
    """
    if reduce not in ("last", "best"):
        raise ValueError(f"reduce must be 'last' or 'best', got {reduce!r}")
    chosen: dict[tuple[int, str], RunRecord] = {}
    for run in runs:
        cell = (run.scale, run.init)
        if cell in chosen:
            old = chosen[cell]
            newer, older = (run, old) if run.mtime >= old.mtime else (old, run)
            log.warning("two runs for x%d / init %s: using %s, ignoring %s", *cell, newer.path, older.path)
            chosen[cell] = newer
        else:
            chosen[cell] = run
    rows = sorted({s for s, _ in chosen}) if scales is None else [int(s) for s in scales]
    columns = sorted({c for _, c in chosen}, key=_column_key) if inits is None else list(inits)
    cells = {k: r.value(metric, reduce) for k, r in chosen.items()}
    return CrossScaleTable(metric=metric, rows=rows, columns=columns, cells=cells, runs=chosen)


def write_table(table: CrossScaleTable, out_dir: str | Path, stem: str = "table1") -> dict[str, Path]:
    """``<stem>.md`` (markdown table) and ``<stem>.csv`` (``target_scale, <init columns...>``, empty = no run)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{stem}.md"
    md.write_text(table.markdown() + "\n")
    path = out_dir / f"{stem}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target_scale", *table.columns])
        for s in table.rows:
            w.writerow([s, *("" if math.isnan(v) else f"{v:.6f}" for v in (table.value(s, c) for c in table.columns))])
    return {"markdown": md, "csv": path}


class CollectTableCallback(Callback):
    """Hydra callback (``hydra.callbacks``): after a multirun, write the cross-scale table of the sweep folder.

    A failure to collect is logged, never raised: the runs themselves are already saved.
    """

    def __init__(self, metric: str = "val/psnr", reduce: str = "last", stem: str = "table1") -> None:
        self.metric, self.reduce, self.stem = metric, reduce, stem

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            table = cross_scale_table(find_runs(sweep_dir), metric=self.metric, reduce=self.reduce)
            paths = write_table(table, sweep_dir, stem=self.stem)
            log.info("%s\nwritten to %s and %s", table.markdown(), paths["markdown"], paths["csv"])
        except Exception as err:  # the sweep's results stay on disk; sresolve-collect can be rerun
            log.warning("could not collect the results table: %s: %s", type(err).__name__, err)
