"""``sresolve-analyze <tool> [options]``: the analysis tools of :mod:`sresolve.analysis`.

Tools: ``complexity`` (parameters, Multi-Adds, activations, memory, latency), ``lam`` (Local Attribution Maps and the
Diffusion Index), ``cka`` (feature similarity between models). ``sresolve-analyze <tool> --help`` lists its options.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["TOOLS", "main"]

#: tool name -> module providing ``main(argv) -> int``
TOOLS = {
    "complexity": "sresolve.analysis.complexity",
    "lam": "sresolve.analysis.lam",
    "cka": "sresolve.analysis.cka",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    tool, rest = args[0], args[1:]
    if tool not in TOOLS:
        print(f"sresolve-analyze: unknown tool {tool!r}; choose one of {sorted(TOOLS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(TOOLS[tool]).main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
