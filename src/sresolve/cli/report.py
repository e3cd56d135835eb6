"""``sresolve-report``: every result table the given run folders support, in the papers' layouts (markdown + CSV).

Folders are searched recursively (an ``outputs/`` folder, ``outputs/test``, single runs, sweep folders):

* ``sresolve-test`` runs (``results.csv``) → the benchmark table, method × data set × scale with PSNR / SSIM column
  pairs (HAT Table 6 layout; + LPIPS / NIQE columns when the runs computed them, SAFMN supplement Table 5), and,
  when a method was tested at several scales, one arbitrary-scale table per data set (rows = methods, columns =
  scales, Table 3 layout of ArbSR / EQSR);
* training multiruns (``sresolve-train --multirun``; a sweep folder with ``multirun.yaml``) → an ablation table per
  sweep (the swept keys from ``.hydra/overrides.yaml`` → validation metrics; HAT Tables 1/2/4/5/10, HMA supplement
  Table 2), or the cross-scale table (HMA supplement Table 1) for a sweep of pre-trained initialisations;
* ``--complexity CSV`` (from ``sresolve-analyze complexity --csv``) → an efficiency table, columns as in the file.

The evaluation protocol (Y channel, border shaved, GT modcrop) is stated under every table. Examples::

    sresolve-report outputs                                    # everything under outputs/ → outputs/report/
    sresolve-report outputs/test/hat_x4 outputs/test/safmn_x4 --out results/
    sresolve-report outputs/train/multirun/hat_ablation_alpha_2025-01-01_10-00-00 --reduce best
    sresolve-report outputs/test --complexity complexity.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sresolve-report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders or folders holding them (searched recursively)")
    p.add_argument("--complexity", type=Path, nargs="+", default=[], help="complexity CSV(s) to tabulate")
    p.add_argument("--metric", default="val/psnr", help="metric of the cross-scale table (default val/psnr)")
    p.add_argument("--ablation-metrics", nargs="+", default=None, help="ablation columns (default: val/<set>/*)")
    p.add_argument("--reduce", choices=("last", "best"), default="last", help="final or best tracked value")
    p.add_argument("--out", type=Path, default=Path("outputs/report"), help="output folder (default outputs/report)")
    p.add_argument("--title", default="Results", help="title of report.md")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2: a folder or file is missing, 1: nothing to report)."""
    from sresolve.results import build_report, write_report

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    missing = [str(p) for p in [*args.runs, *args.complexity] if not p.exists()]
    if missing:
        print(f"sresolve-report: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        tables = build_report(
            args.runs, args.complexity, metric=args.metric, reduce=args.reduce, ablation_metrics=args.ablation_metrics
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"sresolve-report: {err}", file=sys.stderr)
        return 2
    if not tables:
        print(
            "sresolve-report: nothing to report (no sresolve-test results.csv, no training multirun, no --complexity) "
            f"under {', '.join(map(str, args.runs))}",
            file=sys.stderr,
        )
        return 1
    paths = write_report(tables, args.out, title=args.title)
    print(paths["report"].read_text())
    print(f"{len(tables)} tables; written {paths['report']} and {len(tables)} CSV files in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
