"""Run provenance: which source produced a run (:func:`git_commit`), recorded in ``<run>/results.json`` and, with
``logger=wandb``, in the wandb run's config."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

#: seconds each ``git`` call may take before the commit is reported as unknown
GIT_TIMEOUT_S = 5.0


def _git(args: list[str], cwd: Path) -> str | None:
    """stdout of ``git <args>`` run in ``cwd``; None when git is missing, fails or times out."""
    try:
        res = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def git_commit(path: str | Path | None = None) -> dict[str, Any] | None:
    """The git commit of the source tree at ``path`` (default: the ``sresolve`` package's source directory):
    ``{"sha": <40 hex digits>, "dirty": <uncommitted changes in the work tree>}``; ``dirty`` is None if
    ``git status`` failed. None outside a git checkout (e.g. an installed wheel) or without ``git``; never raises."""
    try:
        cwd = Path(path) if path is not None else Path(__file__).resolve().parent
        if not cwd.is_dir():
            return None
        sha = (_git(["rev-parse", "HEAD"], cwd) or "").strip()
        if not sha:
            return None
        status = _git(["status", "--porcelain"], cwd)
        return {"sha": sha, "dirty": None if status is None else bool(status.strip())}
    except Exception:  # provenance is best effort: never fail a run over it
        return None
