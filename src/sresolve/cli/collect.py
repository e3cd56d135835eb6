"""``sresolve-collect``: gather finished training runs into a table (markdown + CSV).

The layout is the HMA supplement's Table 1 (cross-scale initialisation): rows = target scale, columns =
initialisation (``none``, ``from ×2``, ``from ×3``, ``from ×4``, or ``finetune`` / ``imagenet``), cells = a validation
metric of the run (default ``val/psnr``: Y-PSNR on the first validation set at the end of training). Examples::

    sresolve-collect outputs/train/hma_table1_df2k                 # writes table1.md / table1.csv there
    sresolve-collect outputs/train --metric val/Set5/ssim --reduce best --out results/ --stem set5_ssim
    python -m sresolve.cli.collect outputs/train/hma_table1_df2k

See :mod:`sresolve.results` for what is read from each run folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sresolve.results import cross_scale_table, find_runs, write_table

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sresolve-collect", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="a sweep folder or any folder holding run folders (searched recursively)")
    p.add_argument("--metric", default="val/psnr", help="metric of each run (default: val/psnr)")
    p.add_argument("--reduce", choices=("last", "best"), default="last", help="final value or best tracked value")
    p.add_argument("--scales", type=int, nargs="+", default=None, help="rows (default: the scales found)")
    p.add_argument("--inits", nargs="+", default=None, help="columns, e.g. none x2 x3 x4 (default: those found)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: ROOT)")
    p.add_argument("--stem", default="table1", help="file names <stem>.md and <stem>.csv (default: table1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        runs = find_runs(args.root)
    except FileNotFoundError as err:
        print(f"sresolve-collect: {err}", file=sys.stderr)
        return 2
    if not runs:
        print(f"sresolve-collect: no finished run (config.yaml + results.json or csv/metrics.csv) under {args.root}")
        return 1
    table = cross_scale_table(runs, metric=args.metric, reduce=args.reduce, scales=args.scales, inits=args.inits)
    paths = write_table(table, args.out or args.root, stem=args.stem)
    print(table.markdown())
    print(f"\n{len(table.runs)} runs; written {paths['markdown']} and {paths['csv']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
