"""Small argument checks shared by configs, datasets and CLIs: one message format naming the key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def check_int(value: Any, key: str, *, minimum: int = 1, error: type[Exception] = ValueError) -> int:
    """``value`` as an int >= ``minimum`` (bools refused), else ``error("<key> must be ..., got <value>")``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise error(f"{key} must be {what}, got {value!r}")
    return int(value)


def check_choice(value: Any, allowed: Sequence[str], key: str) -> str:
    """``value`` if it is one of ``allowed``, else ``ValueError("<key> must be one of [...], got <value>")``."""
    if value not in allowed:
        raise ValueError(f"{key} must be one of {list(allowed)}, got {value!r}")
    return str(value)


def check_bool(value: Any, key: str) -> bool:
    """``value`` if it is a bool, else ``ValueError("<key> must be true or false, ...")``."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value
