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

The report tables (``sresolve-report``, :func:`build_report`) are :class:`Table` objects (markdown + CSV, the protocol
under each): :func:`benchmark_table` (HAT Table 6 layout) and :func:`arbitrary_scale_tables` (ArbSR / EQSR Table 3
layout) from ``sresolve-test`` results (:func:`find_test_runs`); :func:`ablation_table` from a training multirun (the
swept keys found by :func:`varied_settings` from ``.hydra/overrides.yaml``); :func:`cross_scale_as_table` (the
Table 1 above); :func:`efficiency_table` from a complexity CSV. :func:`training_curves` reads a run's CSV log.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from sresolve.metrics.perceptual import PERCEPTUAL_METRICS

__all__ = [
    "BenchmarkRecord",
    "CollectTableCallback",
    "CrossScaleTable",
    "RunRecord",
    "Table",
    "ablation_table",
    "arbitrary_scale_tables",
    "benchmark_table",
    "build_report",
    "cross_scale_as_table",
    "cross_scale_table",
    "efficiency_table",
    "find_runs",
    "find_test_runs",
    "init_label",
    "read_run",
    "read_test_run",
    "results_table",
    "run_overrides",
    "sweep_groups",
    "training_curves",
    "varied_settings",
    "write_report",
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

    def markdown(self) -> str:
        """The table in markdown (the :class:`Table` rendering, without title and notes)."""
        return cross_scale_as_table(self).markdown(heading="")


def _column_title(label: str) -> str:
    return f"from ×{label[1:]}" if _is_cross_scale_label(label) else label


def _is_cross_scale_label(label: str) -> bool:
    """An :func:`init_label` of a cross-scale initialisation (``x<t>``)."""
    return label.startswith("x") and label[1:].isdigit()


def _column_key(label: str) -> tuple[int, int, str]:
    if label in _COLUMN_ORDER:
        return (0, _COLUMN_ORDER.index(label), label)
    if _is_cross_scale_label(label):
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


# ====================================================================================================================
# Report tables (``sresolve-report``): benchmark results of ``sresolve-test`` runs and training sweeps in the layouts
# of the papers, as markdown + CSV, with the evaluation protocol stated under every table.
# ====================================================================================================================

#: Column order of the benchmark sets in the papers' tables (others follow in the order first seen).
DATASET_ORDER = ("Set5", "Set14", "BSD100", "B100", "Urban100", "Manga109")

#: Paper names of the swept keys (HAT: Chen et al., CVPR 2023; HMA: Chu et al., CVPRW 2024, supplement).
PAPER_KEYS: dict[str, str] = {
    "model.window_size": "window size",  # HAT Table 1
    "model.use_ocab": "OCAB",  # HAT Table 2
    "model.use_cab": "CAB",  # HAT Table 2
    "model.alpha": "α (CAB weight)",  # HAT Table 4
    "model.gamma": "γ (OCAB overlap)",  # HAT Table 5
    "model.beta": "β (CAB squeeze)",  # HAT Table 10
    "model.use_fab": "FAB",  # HMA supplement Table 2
    "model.use_gab": "GAB",  # HMA supplement Table 2
    "model.safm_levels": "SAFM scales",  # SAFMN supplement Table 1 (4 = ×1 ×2 ×4 ×8; 1 = ×1 only)
    "model.safm_modulation": "feature modulation",  # SAFMN supplement Table 1
    "model.safm_multiscale": "multi-scale representation",  # SAFMN supplement Table 1
    "model.safm_aggregation": "feature aggregation",  # SAFMN supplement Table 1
    "model.norm": "normalisation",  # SAFMN supplement Figures 1-2
    "model.subvector_division": "subvector division",  # AMRSR supplement Table 4
    "data.n_refs": "references",  # AMRSR supplement Table 3
    "pretrain": "pre-training",  # HAT Table 7, stage 1 (the pretrain group swept)
    "pretrain.source": "pre-training",  # HAT Table 7, stage 2 (fine-tuned from the stage-1 job of that strategy)
}

#: Config keys never reported as "varied" when sweep settings are read from config diffs (paths, names, tags).
_NOISE_PREFIXES = ("paths.", "hydra.", "run_name", "task_name", "tags", "ckpt_path", "logger.", "callbacks.")


@dataclass
class Table:
    """A result table: ``columns``, ``rows`` of raw values (str, int, float, bool, None) and ``notes`` (the protocol
    lines printed under it). ``formats`` maps a column to a float format spec (default ``.2f``; columns whose name
    contains ``SSIM`` get ``.4f``, the papers' precision)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    stem: str = "table"
    formats: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> list[Any]:
        """The values of one column."""
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def _cell(self, column: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if isinstance(value, bool):
            return "✓" if value else "✗"
        if self.formats.get(column) == "si" and isinstance(value, (int, float)):
            return _si(value)
        if isinstance(value, float):
            four = any(m in column.lower() for m in ("ssim", *PERCEPTUAL_METRICS))  # the papers' precision
            spec = self.formats.get(column) or (".4f" if four else ".2f")
            return format(value, spec)
        if isinstance(value, int):
            return f"{value:,}" if abs(value) >= 10_000 else str(value)
        return str(value).replace("|", "\\|")

    def markdown(self, heading: str = "###") -> str:
        """``<heading> title``, the table (numeric columns right-aligned) and the notes underneath."""
        numeric = [
            all(isinstance(r[i], (int, float)) or r[i] is None for r in self.rows) for i in range(len(self.columns))
        ]
        lines = [f"{heading} {self.title}", ""] if heading else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---:" if n and self.rows else "---" for n in numeric) + "|")
        lines += [
            "| " + " | ".join(self._cell(c, v) for c, v in zip(self.columns, r, strict=True)) + " |" for r in self.rows
        ]
        if self.notes:
            lines += [""] + [f"{n}  " if i < len(self.notes) - 1 else n for i, n in enumerate(self.notes)]
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> Path:
        """Raw values (floats with 6 decimals, empty = missing, booleans as true/false); no notes."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns)
            for r in self.rows:
                w.writerow([_csv_value(v) for v in r])
        return path


def _si(value: float) -> str:
    """``20772507`` → ``20.77M``, ``8.2e11`` → ``820.00G`` (the papers' #Params / Multi-Adds notation)."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}"
    return f"{value:g}"


def _csv_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)


def scale_text(scale: float | None) -> str:
    """``×4``, ``×2.5`` (``?`` when unknown)."""
    if scale is None:
        return "?"
    return f"×{int(scale)}" if float(scale).is_integer() else f"×{scale:g}"


# ------------------------------------------------------------------------------------------- sresolve-test results
@dataclass
class BenchmarkRecord:
    """One row of a ``sresolve-test`` ``results.csv``: mean PSNR/SSIM of a method on a data set at a scale (and the
    mean LPIPS / NIQE when the run computed them, else None)."""

    path: Path
    run_name: str
    dataset: str
    method: str
    scale: float | None
    psnr: float
    ssim: float
    images: int = 0
    protocol: str = ""
    modcrop: int | None = None
    lpips: float | None = None
    niqe: float | None = None


def _num(text: Any) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _run_scale(run_dir: Path) -> tuple[float | None, int | None]:
    """Scale and GT modcrop of a test run without those columns: its ``.hydra/config.yaml`` (real CLI runs), the
    ``_x<s>`` of the folder name (the default ``run_name``), then the ``GT modcrop`` of ``results.md``."""
    modcrop = None
    md = run_dir / "results.md"
    if md.is_file():
        found = re.search(r"GT modcrop (\d+)", md.read_text())
        modcrop = int(found.group(1)) if found else None
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if hydra_cfg.is_file():
        cfg = yaml.safe_load(hydra_cfg.read_text()) or {}
        scale = _num(cfg.get("scale"))
        if scale is not None:
            mc = (cfg.get("data") or {}).get("modcrop")
            return scale, int(mc) if isinstance(mc, int) else modcrop
    found = re.search(r"_x(\d+(?:\.\d+)?)(?:_|$)", run_dir.name)
    if found:
        return float(found.group(1)), modcrop
    return (float(modcrop) if modcrop else None), modcrop


def read_test_run(run_dir: str | Path) -> list[BenchmarkRecord]:
    """The rows of ``<run_dir>/results.csv`` written by ``sresolve-test`` (empty when there is none).

    The scale is the row's ``scale`` column when present (also what an arbitrary-scale evaluator writes, one row per
    scale), else it is inferred (:func:`_run_scale`).
    """
    run_dir = Path(run_dir)
    path = run_dir / "results.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"dataset", "method", "psnr", "ssim"} <= set(rows[0]):
        return []
    scale, modcrop = (None, None) if all(_num(r.get("scale")) is not None for r in rows) else _run_scale(run_dir)
    out = []
    for r in rows:
        s = _num(r.get("scale"))
        mc = _num(r.get("modcrop"))
        out.append(
            BenchmarkRecord(
                path=run_dir,
                run_name=run_dir.name,
                dataset=r["dataset"],
                method=r["method"],
                scale=s if s is not None else scale,
                psnr=float(r["psnr"]),
                ssim=float(r["ssim"]),
                images=int(_num(r.get("images")) or 0),
                protocol=r.get("protocol") or "",
                modcrop=int(mc) if mc is not None else modcrop if modcrop is not None else None,
                lpips=_num(r.get("lpips")),
                niqe=_num(r.get("niqe")),
            )
        )
    return out


def find_test_runs(root: str | Path) -> list[BenchmarkRecord]:
    """The records of every ``sresolve-test`` run folder under ``root`` (``root`` included), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    return [rec for p in sorted(root.rglob("results.csv")) for rec in read_test_run(p.parent)]


def _dataset_key(name: str, seen: list[str]) -> tuple[int, int]:
    return (0, DATASET_ORDER.index(name)) if name in DATASET_ORDER else (1, seen.index(name))


def _method_labels(records: Sequence[BenchmarkRecord]) -> dict[int, str]:
    """Row label per record: the method, or ``method (run folder)`` when two runs report the same method and scale
    (bicubic rows are the same for every run and are kept once)."""
    runs: dict[tuple[str, float | None], set[Path]] = {}
    for r in records:
        runs.setdefault((r.method, r.scale), set()).add(r.path)
    return {
        id(r): r.method
        if r.method == "bicubic" or len(runs[(r.method, r.scale)]) == 1
        else f"{r.method} ({r.run_name})"
        for r in records
    }


def _protocol_notes(records: Sequence[BenchmarkRecord]) -> list[str]:
    """One ``Protocol: ...`` line per distinct (protocol, modcrop), naming the runs when there are several."""
    groups: dict[tuple[str, int | None], list[str]] = {}
    for r in records:
        names = groups.setdefault((r.protocol or "not recorded", r.modcrop), [])
        if r.run_name not in names:
            names.append(r.run_name)
    notes = []
    for (protocol, modcrop), names in groups.items():
        line = f"Protocol: {protocol}; GT modcrop {modcrop if modcrop is not None else '= scale'}"
        notes.append(line + (f" (runs: {', '.join(names)})" if len(groups) > 1 else ""))
    return notes


def _dedupe(records: Iterable[BenchmarkRecord]) -> list[BenchmarkRecord]:
    """One record per (row label, dataset, scale): the first given (bicubic is identical across runs)."""
    records = list(records)
    labels = _method_labels(records)
    seen: set[tuple[str, str, float | None]] = set()
    out = []
    for r in records:
        key = (labels[id(r)], r.dataset, r.scale)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def benchmark_table(records: Iterable[BenchmarkRecord], datasets: Sequence[str] | None = None) -> Table:
    """Method × data set × scale, the layout of HAT's Table 6 (Chen et al., CVPR 2023; also SAFMN's Table 2 and
    HMA's Table 3): one row per method and scale (grouped by scale, bicubic first), a PSNR / SSIM column pair per
    data set (Set5, Set14, BSD100, Urban100, Manga109 order); PSNR in dB with 2 decimals, SSIM with 4. When some run
    computed them, LPIPS and NIQE columns follow each pair (SAFMN supplement Table 5: PSNR / SSIM / LPIPS / NIQE per
    data set; lower is better, 4 decimals)."""
    records = list(records)
    labels = _method_labels(records)
    records = _dedupe(records)
    seen = list(dict.fromkeys(r.dataset for r in records))
    sets = list(datasets) if datasets else sorted(seen, key=lambda d: _dataset_key(d, seen))
    metrics = ["psnr", "ssim", *(m for m in PERCEPTUAL_METRICS if any(getattr(r, m) is not None for r in records))]
    rows_keys: list[tuple[float, int, str]] = []
    cells: dict[tuple[str, float | None, str], BenchmarkRecord] = {}
    order: dict[str, int] = {}
    for r in records:
        label = labels[id(r)]
        order.setdefault(label, len(order))
        cells[(label, r.scale, r.dataset)] = r
        key = (r.scale if r.scale is not None else math.inf, 0 if r.method == "bicubic" else 1 + order[label], label)
        if key not in rows_keys:
            rows_keys.append(key)
    rows = []
    for scale, _, label in sorted(rows_keys):
        s = None if scale == math.inf else scale
        row: list[Any] = [label, scale_text(s)]
        for d in sets:
            rec = cells.get((label, s, d))
            row += [getattr(rec, m) if rec else None for m in metrics]
        rows.append(row)
    columns = ["Method", "Scale", *(f"{d} {m.upper()}" for d in sets for m in metrics)]
    title = f"Benchmark results (PSNR dB / {' / '.join(m.upper() for m in metrics[1:])})"
    return Table(title, columns, rows, _protocol_notes(records), stem="benchmark")


def arbitrary_scale_tables(records: Iterable[BenchmarkRecord], metric: str = "psnr") -> list[Table]:
    """One table per data set in the layout of the arbitrary-scale papers' Table 3 (e.g. ArbSR, Wang et al.,
    ICCV 2021; EQSR, Wang et al., CVPR 2023): rows = methods, columns = scales in increasing order (non-integer
    ones included, ``×1.5``, ``×2.5``, ...), cells = ``metric`` (``psnr`` or ``ssim``) under the record's protocol."""
    if metric not in ("psnr", "ssim"):
        raise ValueError(f"metric must be 'psnr' or 'ssim', got {metric!r}")
    records = list(records)
    labels = _method_labels(records)
    records = _dedupe(records)
    seen = list(dict.fromkeys(r.dataset for r in records))
    tables = []
    for d in sorted(seen, key=lambda x: _dataset_key(x, seen)):
        recs = [r for r in records if r.dataset == d and r.scale is not None]
        scales = sorted({float(r.scale) for r in recs if r.scale is not None})
        methods = list(dict.fromkeys(labels[id(r)] for r in sorted(recs, key=lambda r: r.method != "bicubic")))
        value = {(labels[id(r)], float(r.scale)): getattr(r, metric) for r in recs if r.scale is not None}
        rows = [[m, *(value.get((m, s)) for s in scales)] for m in methods]
        name = "PSNR (dB)" if metric == "psnr" else "SSIM"
        tables.append(
            Table(
                f"Arbitrary-scale results on {d} ({name})",
                ["Method", *(scale_text(s) for s in scales)],
                rows,
                _protocol_notes(recs),
                stem=f"arbitrary_scale_{_slug(d)}",
                formats={scale_text(s): ".2f" if metric == "psnr" else ".4f" for s in scales},
            )
        )
    return tables


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "table"


# ------------------------------------------------------------------------------------------------- training sweeps
def _lookup(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def run_overrides(run_dir: str | Path) -> dict[str, str] | None:
    """The command-line / sweep overrides of a Hydra job (``.hydra/overrides.yaml``) as ``{key: value}`` (``+``,
    ``++``, ``~`` prefixes dropped), or None when the folder has none."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _comparable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str)


def varied_settings(runs: Sequence[RunRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """The keys that differ across ``runs`` and each run's value of them.

    Candidate keys are the union of the runs' Hydra overrides (``.hydra/overrides.yaml``: what a multirun sweeps,
    plus the fixed overrides it was launched with); the value of a key is read from the run's resolved
    ``config.yaml`` (so a default shows its actual value), falling back to the override text (group choices such
    as ``model=hat``). Runs without overrides are compared on their whole flattened configs (minus paths, names
    and tags). A key is kept when its value is not the same in every run.
    """
    configs = [yaml.safe_load((r.path / "config.yaml").read_text()) or {} for r in runs]
    overrides = [run_overrides(r.path) for r in runs]
    if all(o is not None for o in overrides):
        keys = list(dict.fromkeys(k for o in overrides for k in (o or {}) if not k.startswith("hydra.")))
        values = []
        for cfg, o in zip(configs, overrides, strict=True):
            row = {}
            for k in keys:
                v = _lookup(cfg, k)
                row[k] = (o or {}).get(k) if v is _MISSING or isinstance(v, dict) else v
            values.append(row)
    else:
        flat = [_flatten(c) for c in configs]
        keys = sorted({k for f in flat for k in f if not k.startswith(_NOISE_PREFIXES)})
        values = [{k: f.get(k) for k in keys} for f in flat]
    varied = [k for k in keys if len({_comparable(v.get(k)) for v in values}) > 1]
    return varied, [{k: v.get(k) for k in varied} for v in values]


def _sort_value(v: Any) -> tuple[int, float, str]:
    if isinstance(v, bool):
        return (0, -float(v), "")  # on before off, the papers' order
    if isinstance(v, (int, float)):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def _val_metrics(runs: Sequence[RunRecord]) -> list[str]:
    found = list(dict.fromkeys(k for r in runs for k in r.metrics))
    per_set = [k for k in found if k.count("/") >= 2]
    return sorted(per_set) if per_set else sorted(found)  # val/psnr is a copy of the first set's PSNR


def validation_notes(runs: Sequence[RunRecord], reduce: str = "last") -> list[str]:
    """The validation protocol of training runs (from each ``config.yaml``: ``val.crop_border``, ``val.y_channel``,
    data set, modcrop) and which value is reported."""
    from sresolve.metrics import EvalProtocol

    lines: dict[str, list[str]] = {}
    for r in runs:
        cfg = yaml.safe_load((r.path / "config.yaml").read_text()) or {}
        val = cfg.get("val") or {}
        border = val.get("crop_border")
        protocol = EvalProtocol(
            crop_border=int(border if border is not None else r.scale), y_channel=bool(val.get("y_channel", True))
        )
        modcrop = (cfg.get("data") or {}).get("modcrop") or r.scale
        text = f"Protocol: {protocol.describe()}; GT modcrop {modcrop}; validation data {r.data or '?'}"
        lines.setdefault(text, []).append(r.path.name)
    steps = sorted({r.step for r in runs if r.step is not None})
    which = "best tracked value" if reduce == "best" else "value at the end of training"
    step_text = f" (step {steps[0]})" if len(steps) == 1 else f" (steps {steps[0]}-{steps[-1]})" if steps else ""
    notes = [t + (f" (runs: {', '.join(n)})" if len(lines) > 1 else "") for t, n in lines.items()]
    return [*notes, f"Cells: {which}{step_text} of each run."]


def ablation_table(
    runs: Sequence[RunRecord],
    metrics: Sequence[str] | None = None,
    reduce: str = "last",
    title: str | None = None,
) -> Table:
    """An ablation sweep as a table: one row per run (setting), the varied keys (:func:`varied_settings`, paper
    names for HAT Tables 1/2/4/5/10 and HMA supplement Table 2, booleans as ✓/✗) then the validation metrics
    (default: every per-set ``val/<set>/psnr|ssim`` logged, and ``val/<set>/lpips|niqe`` when validation computed
    them). Rows are sorted by the settings."""
    if reduce not in ("last", "best"):
        raise ValueError(f"reduce must be 'last' or 'best', got {reduce!r}")
    runs = list(runs)
    keys, settings = varied_settings(runs)
    metrics = list(metrics) if metrics else _val_metrics(runs)
    settings = [{k: _setting(v) for k, v in s.items()} for s in settings]
    order = sorted(range(len(runs)), key=lambda i: [_sort_value(settings[i][k]) for k in keys] + [runs[i].path.name])
    heads = [PAPER_KEYS.get(k, k) for k in keys] if keys else ["run"]
    columns = heads + [metric_title(m) for m in metrics]
    rows = []
    for i in order:
        head = [settings[i][k] for k in keys] if keys else [runs[i].path.name]
        rows.append(head + [runs[i].value(m, reduce) for m in metrics])
    names = sorted({_run_name(r) for r in runs})
    title = title or f"Ablation: {', '.join(names)} ({len(runs)} runs)"
    notes = validation_notes(runs, reduce)
    return Table(title, columns, rows, notes, stem=f"ablation_{_slug(names[0])}", formats=dict.fromkeys(heads, "g"))


def metric_title(metric: str) -> str:
    """``val/Set5/psnr`` → ``Set5 PSNR``, ``val/psnr`` → ``PSNR`` (also ``lpips``, ``niqe``); others unchanged."""
    parts = metric.split("/")
    if parts[0] == "val" and parts[-1] in ("psnr", "ssim", *PERCEPTUAL_METRICS) and len(parts) in (2, 3):
        return " ".join([*parts[1:-1], parts[-1].upper()])
    return metric


def _setting(v: Any) -> Any:
    if isinstance(v, str):
        low = v.lower()
        if low in ("true", "false"):
            return low == "true"
        num = _num(v)
        return num if num is not None else v
    return v


def _run_name(run: RunRecord) -> str:
    results = run.path / "results.json"
    if results.is_file():
        name = json.loads(results.read_text()).get("run_name")
        if name:
            return str(name)
    return run.path.parent.name if run.path.name.isdigit() else run.path.name


def cross_scale_as_table(
    table: CrossScaleTable, runs: Sequence[RunRecord] | None = None, reduce: str = "last"
) -> Table:
    """The HMA supplement Table 1 layout (:func:`cross_scale_table`) as a :class:`Table`, with the protocol notes of
    ``runs`` when given."""
    rows = [[scale_text(s), *(_or_none(table.value(s, c)) for c in table.columns)] for s in table.rows]
    columns = [f"target \\ init ({table.metric})", *(_column_title(c) for c in table.columns)]
    return Table(
        "Cross-scale initialisation (HMA supplement Table 1 layout)",
        columns,
        rows,
        validation_notes(runs, reduce) if runs is not None else [],
        stem="pretrain_cross_scale",
    )


def _or_none(v: float) -> float | None:
    return None if math.isnan(v) else v


def sweep_groups(runs: Sequence[RunRecord]) -> dict[Path, list[RunRecord]]:
    """Training runs grouped by sweep: jobs of one Hydra multirun share a folder holding ``multirun.yaml`` (or
    named by job number). Single runs are left out."""
    groups: dict[Path, list[RunRecord]] = {}
    for r in runs:
        parent = r.path.parent
        if (parent / "multirun.yaml").is_file() or r.path.name.isdigit():
            groups.setdefault(parent, []).append(r)
    return {p: g for p, g in groups.items() if len(g) >= 2}


# ------------------------------------------------------------------------------------------------------ efficiency
def efficiency_table(path: str | Path, title: str | None = None) -> Table:
    """A complexity CSV (``sresolve-analyze complexity --csv``) as a table, read generically: every column kept in
    order, numbers parsed (columns of large integers, e.g. raw parameter / MAC counts, shown with K/M/G/T suffixes as
    in the papers, floats with 1-4 decimals), lines starting with ``#`` taken as notes; the CSV keeps raw values.
    The efficiency tables of SAFMN (Table 2: #Params, #FLOPs, #Acts, #Mem, #Avg.Time) and HAT (Table 8: #Params,
    #Multi-Adds) are of this form."""
    path = Path(path)
    text = path.read_text().splitlines()
    notes = [ln.lstrip("# ").strip() for ln in text if ln.startswith("#")]
    reader = csv.reader([ln for ln in text if ln.strip() and not ln.startswith("#")])
    rows_text = list(reader)
    if not rows_text:
        raise ValueError(f"{path}: empty CSV")
    columns, body = rows_text[0], rows_text[1:]
    rows: list[list[Any]] = []
    for r in body:
        row: list[Any] = []
        for v in r:
            num = _num(v)
            if not v.strip():
                row.append(None)
            else:
                row.append(v if num is None else int(num) if re.fullmatch(r"[-+]?\d+", v.strip()) else num)
        rows.append(row)
    formats = {}
    for i, c in enumerate(columns):
        ints = [r[i] for r in rows if i < len(r) and isinstance(r[i], int)]
        floats = [r[i] for r in rows if i < len(r) and isinstance(r[i], float)]
        if ints and not floats and max(abs(v) for v in ints) >= 10_000:
            formats[c] = "si"
        elif floats:
            big = max(abs(v) for v in floats)
            formats[c] = ".1f" if big >= 100 else ".2f" if big >= 1 else ".4f"
    return Table(
        title or f"Efficiency ({path.name})", columns, rows, [*notes, f"Source: {path}"], "efficiency", formats
    )


# ------------------------------------------------------------------------------------------------------ the report
def build_report(
    paths: Sequence[str | Path],
    complexity: Sequence[str | Path] = (),
    metric: str = "val/psnr",
    reduce: str = "last",
    ablation_metrics: Sequence[str] | None = None,
) -> list[Table]:
    """Every table the run folders under ``paths`` support, in this order:

    1. benchmark table (:func:`benchmark_table`) of all ``sresolve-test`` results;
    2. arbitrary-scale tables (:func:`arbitrary_scale_tables`) when a method was tested at two or more scales;
    3. per multirun sweep: the cross-scale table (:func:`cross_scale_table`, HMA supplement Table 1) when some of its
       runs were initialised from another scale (``pretrain=cross_scale``), else an ablation table
       (:func:`ablation_table`; e.g. HAT Table 7, the pre-training strategies);
    4. one efficiency table per complexity CSV.
    """
    tests: list[BenchmarkRecord] = []
    runs: list[RunRecord] = []
    for p in paths:
        p = Path(p)
        tests += find_test_runs(p)
        runs += find_runs(p)
    runs = list({r.path.resolve(): r for r in runs}.values())
    tests = list({(r.path.resolve(), r.dataset, r.method, r.scale): r for r in tests}.values())
    tables: list[Table] = []
    if tests:
        tables.append(benchmark_table(tests))
        per_method: dict[str, set[float]] = {}
        for r in tests:
            if r.method != "bicubic" and r.scale is not None:
                per_method.setdefault(r.method, set()).add(float(r.scale))
        if any(len(s) >= 2 for s in per_method.values()):
            tables += arbitrary_scale_tables(tests)
    for _, group in sorted(sweep_groups(runs).items()):
        if any(_is_cross_scale_label(r.init) for r in group):
            tables.append(cross_scale_as_table(cross_scale_table(group, metric, reduce), group, reduce))
        else:
            tables.append(ablation_table(group, ablation_metrics, reduce))
    tables += [efficiency_table(c) for c in complexity]
    stems: dict[str, int] = {}
    for t in tables:  # unique file names
        n = stems.get(t.stem, 0)
        stems[t.stem] = n + 1
        t.stem = t.stem if n == 0 else f"{t.stem}_{n + 1}"
    return tables


def write_report(tables: Sequence[Table], out_dir: str | Path, title: str = "Results") -> dict[str, Path]:
    """``<out>/report.md`` (every table with its notes) and ``<out>/<stem>.csv`` per table; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {t.stem: t.write_csv(out_dir / f"{t.stem}.csv") for t in tables}
    report = out_dir / "report.md"
    report.write_text(f"# {title}\n\n" + "\n\n".join(t.markdown() for t in tables) + "\n")
    return {"report": report, **paths}


# --------------------------------------------------------------------------------------------------- training curves
def training_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged series of a run's Lightning CSV log (``csv/metrics.csv``) as ``{name: [(step, value), ...]}``
    (``train/loss``, ``train/l_l1``, ``val/<set>/psnr``, ``lr-Adam``, ...); empty cells skipped."""
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no training log {path}")
    curves: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = _num(row.get("step"))
            if step is None:
                continue
            for key, value in row.items():
                v = _num(value)
                if key and key not in ("step", "epoch") and v is not None:
                    curves.setdefault(key, []).append((int(step), v))
    return curves


def results_table(metrics: Mapping[str, float]) -> tuple[list[str], list[list[Any]]]:
    """The final validation metrics of ``results.json`` (``val/<set>/<metric>`` keys) as ``(columns, rows)``: one row
    per validation set in logging order, columns ``val_set`` then every metric present (``psnr``, ``ssim``, then
    e.g. ``lpips``, ``niqe``); a metric a set lacks is None. Keys without a set (the ``val/psnr`` alias of the first
    set) are left out."""
    per_set: dict[str, dict[str, float]] = {}
    names: list[str] = []
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) < 3 or parts[0] != "val":
            continue
        val_set, metric = "/".join(parts[1:-1]), parts[-1]
        per_set.setdefault(val_set, {})[metric] = float(value)
        if metric not in names:
            names.append(metric)
    order = [m for m in ("psnr", "ssim") if m in names] + [m for m in names if m not in ("psnr", "ssim")]
    rows = [[val_set, *(values.get(m) for m in order)] for val_set, values in per_set.items()]
    return ["val_set", *order], rows
