"""Model specs for the analysis tools: one string names a network to analyse.

* a weights file (``.pth`` / ``.ckpt`` / ``.safetensors``): the network is rebuilt from the tensor shapes
  (:func:`sresolve.checkpoints.load_model`), family, variant and scale inferred;
* a model config name of ``conf/model/`` with optional overrides, comma separated:
  ``hat``, ``hat,alpha=0,use_cab=false,use_ocab=false`` (the SwinIR-like baseline), ``safmn,dim=48``; values are read
  as YAML (``[6,6]``, ``false``, ``1e-3``). The scale comes from the caller (``--scale``). Random weights.

An optional ``label=`` prefix names the model in tables and figures: ``SwinIR-like=hat,alpha=0,use_ocab=false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from torch import nn

from sresolve import archs
from sresolve.config import ConfigError, conf_dir, split_model_cfg

__all__ = ["ModelSpec", "build_model", "parse_spec"]

_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``label``, and either ``path`` (weights file) or ``config`` + ``overrides``."""

    label: str
    config: str | None = None
    overrides: tuple[tuple[str, object], ...] = ()
    path: Path | None = None


def parse_spec(spec: str) -> ModelSpec:
    """Parse ``[label=]file`` or ``[label=]config[,key=value...]`` (see the module docstring)."""
    text = spec.strip()
    label = None
    head, sep, rest = text.partition("=")
    if sep and "," not in head and rest.strip():  # "label=<spec>": no comma before the first '='
        label, text = head.strip(), rest.strip()
    if Path(text).suffix.lower() in _WEIGHT_SUFFIXES:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"model spec {spec!r}: weights file {path} does not exist")
        return ModelSpec(label=label or path.stem, path=path)
    name, *pairs = [p.strip() for p in _split_top_level(text)]
    overrides = []
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"model spec {spec!r}: override {pair!r} is not key=value")
        overrides.append((key.strip(), yaml.safe_load(value)))
    return ModelSpec(label=label or text, config=name, overrides=tuple(overrides))


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``hat,depths=[1,1],alpha=0`` → ``['hat', 'depths=[1,1]', 'alpha=0']``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def build_model(spec: str | ModelSpec, scale: int = 4) -> tuple[str, nn.Module]:
    """``(label, network in eval mode on the CPU)`` for a spec; config specs get ``scale``, files keep theirs."""
    from sresolve.checkpoints import load_model

    ms = parse_spec(spec) if isinstance(spec, str) else spec
    if ms.path is not None:
        return ms.label, load_model(ms.path)
    path = conf_dir() / "model" / f"{ms.config}.yaml"
    if not path.is_file():
        options = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml"))
        raise ConfigError(f"model spec {ms.label!r}: no model config {ms.config!r}; options: {options}")
    cfg = OmegaConf.load(path)
    cfg.scale = scale  # the model configs interpolate ${scale}
    for key, value in ms.overrides:
        if key not in cfg:
            raise ConfigError(f"model spec {ms.label!r}: {ms.config}.yaml has no key {key!r}")
        cfg[key] = value
    arch, net_kwargs, _ = split_model_cfg(OmegaConf.to_container(cfg, resolve=True))
    return ms.label, archs.create(arch, **net_kwargs).eval()
