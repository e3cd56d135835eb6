"""Helpers shared by the command-line entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sresolve.config import ConfigError


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or auto")
    return device


def load_weights_into(net: nn.Module, path: str | Path, key: str | None = None) -> None:
    """Load a weights file into a network built from the config, strictly, naming keys and shapes on mismatch. A
    multi-task pre-training file (one body, a head per scale) gives the body and the head of the network's scale."""
    from sresolve.archs.layers import is_multi_scale_state, single_scale_state_dict
    from sresolve.checkpoints import load_state_dict

    state = load_state_dict(path, key=key)
    own = net.state_dict()
    if is_multi_scale_state(state) and not is_multi_scale_state(own):
        state = single_scale_state_dict(state, getattr(net, "scale", None))  # no head for it: upsample.* missing
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}" if missing else "",
                f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}" if unexpected else "",
                f"shape mismatch {shapes[:3]}" if shapes else "",
            )
            if part
        )
        raise ConfigError(
            f"weights {path} do not fit the configured model ({type(net).__name__}, x{getattr(net, 'scale', '?')}): "
            f"{detail}. Pick the matching model=/scale=, or use sresolve-upscale which infers the variant"
        )
    net.load_state_dict(state, strict=True)


def describe(obj: Any) -> str:
    n = sum(p.numel() for p in obj.parameters()) if isinstance(obj, nn.Module) else 0
    return f"{type(obj).__name__} x{getattr(obj, 'scale', '?')} ({n / 1e6:.3f} M params)"
