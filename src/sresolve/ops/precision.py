"""Numerics that must not follow an enclosing autocast region (bf16/fp16 training or inference)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = ["autocast_disabled"]


def autocast_disabled(device_type: str) -> Any:
    """A context that turns autocast off for ``device_type`` (a no-op context where autocast does not exist, e.g. the
    ``meta`` device): code inside runs in the dtypes it chooses itself. Used by the MATLAB resize (float64/float32)
    and EQSR's sine-cosine scale code (float32, spec choice E1)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
