"""Network initialisation strategies (the ``pretrain`` config group) and the one place where weights are transferred.

Strategies (``conf/pretrain/<name>.yaml``, ``pretrain.strategy``):

``none``
    Random initialisation (the family's own init, spec ``archs_hat_hma_safmn.md`` §1.5 / §2.4).
``imagenet``
    Same-task pre-training on ImageNet from random initialisation (HAT ``train_HAT*_SRx*_ImageNet_from_scratch``,
    HMA ``train_HMA_SRx*_from_Imagenet``; spec §1.6, §2.5): ImageNet HR images degraded on the fly, Adam 2e-4,
    800k iterations, MultiStepLR [300k, 500k, 650k, 700k, 750k] γ 0.5. Nothing is loaded.
``finetune``
    Initialise from a checkpoint of the **same** network and scale and fine-tune with the family's small learning rate
    (``model.finetune_lr``: HAT 1e-5 ``finetune_from_ImageNet_pretrain``, HMA 5e-6
    ``finetune_from_pretrain_250k``), 250k iterations, milestones [125k, 200k, 225k, 240k]. Strict: every tensor of
    the network must come from the file with the same shape.
``cross_scale``
    Initialise a ×s network from the body of a ×t network (``pretrain.source_scale`` = t): HAT
    ``train_HAT_SRx4_finetune_from_SRx2`` (lr 1e-4, 250k, [125k, 200k, 225k, 240k]) and the HMA supplement's chain
    (×2 from scratch → ×3 from ×2 → ×2 and ×4 from ×3, spec §2.5). The scale-dependent upsampler (``pretrain.exclude``:
    ``upsample.*`` for HAT/HMA, ``to_img.*`` for SAFMN) is never transferred and keeps its fresh initialisation;
    everything else must match.
``multi_task``
    Multi-related-task pre-training (HAT Table 7, after EDT): one body shared by scale-specific pixel-shuffle heads
    (``pretrain.scales``, default ×2/×3/×4), trained jointly on ImageNet (the same data and 800k schedule as
    ``imagenet``; :class:`~sresolve.models.MultiTaskSRModule`). Nothing is loaded. Fine-tune to one scale with
    ``pretrain=finetune`` from its ``net_g_latest.pth`` (the head of the run's scale is selected) or
    ``net_g_latest_x<s>.pth``.

A multi-scale weights file (``body.*`` + ``heads.x<s>.*``) is read as the single-scale network of the target's scale
(:func:`~sresolve.archs.layers.single_scale_state_dict`), by every loading strategy.

Loading is never silent: :func:`transfer_weights` compares the file with the network key by key and, unless the key
matches one of the strategy's ``exclude`` patterns, any key that is missing from the file, unexpected in it or of
another shape is an error naming the keys (``strict=False`` restores BasicSR's ``strict_load_g: false``: load what
fits, report the rest). The returned :class:`InitReport` lists the loaded, skipped (with both shapes) and newly
initialised keys; the training CLI logs it and writes it to ``<run>/pretrain_report.json``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

__all__ = [
    "STRATEGIES",
    "InitReport",
    "PretrainMismatchError",
    "PretrainSpec",
    "pretrain_spec",
    "transfer_weights",
]

#: The options of the ``pretrain`` config group.
STRATEGIES: tuple[str, ...] = ("none", "imagenet", "finetune", "cross_scale", "multi_task")
#: Strategies that load a weights file (``pretrain.path`` required).
_LOADING = frozenset({"finetune", "cross_scale"})
#: ``pretrain.source_scale`` values that mean "no source": the from-scratch column of the cross-scale table.
_NO_SOURCE = (None, "none", "null", "scratch")

Shape = tuple[int, ...]


class PretrainMismatchError(ValueError):
    """The weights file does not fit the network in a way the strategy did not expect; the message names the keys."""


@dataclass
class InitReport:
    """What an initialisation did, key by key.

    Attributes:
        source: the weights file (or ``<state dict>``).
        loaded: network keys whose tensors were copied from the file.
        skipped: file keys that were not loaded → ``{"file": shape, "model": shape or None (not in the network),
            "reason": ...}`` with reason ``excluded`` (matches ``exclude``), ``shape`` (shapes differ) or
            ``unexpected`` (not in the network).
        new: network keys that keep their fresh initialisation (not in the file, excluded or of another shape).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    new: dict[str, Shape] = field(default_factory=dict)

    @property
    def mismatched(self) -> list[str]:
        """File keys skipped because their shape differs from the network's."""
        return [k for k, v in self.skipped.items() if v["reason"] == "shape"]

    @property
    def unexpected(self) -> list[str]:
        """File keys the network does not have."""
        return [k for k, v in self.skipped.items() if v["model"] is None]

    @property
    def missing(self) -> list[str]:
        """Network keys absent from the file."""
        return [k for k in self.new if k not in self.skipped]

    def counts(self) -> dict[str, int]:
        return {"loaded": len(self.loaded), "skipped": len(self.skipped), "new": len(self.new)}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = {
            k: {**v, "file": list(v["file"]), "model": _list(v["model"])} for k, v in self.skipped.items()
        }
        out["new"] = {k: list(v) for k, v in self.new.items()}
        return out

    def format(self) -> str:
        """Human-readable lines for the log: counts, loaded keys grouped by module, skipped and new keys with shapes."""
        lines = [
            f"initialised from {self.source}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} "
            f"from the file, newly initialised {len(self.new)}"
        ]
        if self.loaded:
            lines.append("  loaded: " + ", ".join(f"{p} ({n})" for p, n in _group_by_module(self.loaded).items()))
        for k, v in self.skipped.items():
            model = "absent from the model" if v["model"] is None else f"model {tuple(v['model'])}"
            lines.append(f"  skipped ({v['reason']}): {k} file {tuple(v['file'])} vs {model}")
        for k, shape in self.new.items():
            lines.append(f"  new: {k} {tuple(shape)}")
        return "\n".join(lines)


def _list(shape: Shape | None) -> list[int] | None:
    return None if shape is None else list(shape)


def _group_by_module(keys: Sequence[str]) -> dict[str, int]:
    """``layers.0.x.weight`` → ``layers.*`` (top-level module; a top-level tensor stays itself) → count."""
    groups: dict[str, int] = {}
    for k in keys:
        head = k.split(".", 1)[0] + ".*" if "." in k else k
        groups[head] = groups.get(head, 0) + 1
    return groups


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _name_keys(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def transfer_weights(
    net: nn.Module,
    state: Mapping[str, Tensor],
    *,
    exclude: Sequence[str] = (),
    strict: bool = True,
    source: str = "<state dict>",
    hint: str = "",
) -> InitReport:
    """Copy ``state`` into ``net`` key by key and report what happened (the single place of this logic).

    Args:
        net: the network to initialise (its parameters and persistent buffers).
        state: the source state dict (already unwrapped, see :func:`sresolve.checkpoints.load_state_dict`).
        exclude: ``fnmatch`` patterns (``"upsample.*"``) of keys that are *never* transferred: they keep their fresh
            initialisation and may be missing, unexpected or of another shape in the file.
        strict: True: any other key that is missing from the file, unexpected in it or of another shape raises
            :class:`PretrainMismatchError` naming the keys, before anything is copied. False: BasicSR
            ``strict_load_g: false`` — copy what fits and report the rest.
        source: name of the file, for the report and the error.
        hint: appended to the error message (e.g. which config key to change).

    Returns:
        The :class:`InitReport` (loaded / skipped with shapes / newly initialised keys).
    """
    from sresolve.archs.layers import is_multi_scale_state, multi_scale_head_scales, single_scale_state_dict

    exclude = list(exclude)
    own = net.state_dict()
    if is_multi_scale_state(state) and not is_multi_scale_state(own):  # a multi-task run's file: body + own head
        scale = getattr(net, "scale", None)
        heads = multi_scale_head_scales(state)
        if scale not in heads:
            hint = f"{hint} " if hint else ""
            hint += f"(the multi-scale file has heads for x{heads}, none for x{scale}: its upsampler is not loaded)"
        state = single_scale_state_dict(state, scale if scale in heads else None)
    report = InitReport(source=source)
    to_load: dict[str, Tensor] = {}
    unexpected, mismatched, missing = [], [], []
    for key, value in state.items():
        file_shape = tuple(value.shape)
        model_shape = tuple(own[key].shape) if key in own else None
        if _matches(key, exclude):
            report.skipped[key] = {"file": file_shape, "model": model_shape, "reason": "excluded"}
        elif model_shape is None:
            report.skipped[key] = {"file": file_shape, "model": None, "reason": "unexpected"}
            unexpected.append(key)
        elif file_shape != model_shape:
            report.skipped[key] = {"file": file_shape, "model": model_shape, "reason": "shape"}
            mismatched.append(key)
        else:
            to_load[key] = value
    for key, value in own.items():
        if key not in to_load:
            report.new[key] = tuple(value.shape)
            if key not in state and not _matches(key, exclude):
                missing.append(key)
    if strict and (missing or unexpected or mismatched):
        parts = []
        if mismatched:
            shapes = [f"{k} file {report.skipped[k]['file']} vs model {report.skipped[k]['model']}" for k in mismatched]
            parts.append(f"shape mismatch: {_name_keys(shapes)}")
        if missing:
            parts.append(f"missing from the file: {_name_keys(missing)}")
        if unexpected:
            parts.append(f"not in the model: {_name_keys(unexpected)}")
        allowed = f"only keys matching {exclude} may differ" if exclude else "no key may differ"
        raise PretrainMismatchError(
            f"{source} does not fit the network ({allowed}): " + "; ".join(parts) + (f". {hint}" if hint else "")
        )
    result = net.load_state_dict(to_load, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # filtered above
    report.loaded = list(to_load)
    return report


# ------------------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class PretrainSpec:
    """A validated ``pretrain`` config: what to load and how (``path`` None = nothing to load)."""

    strategy: str
    path: Path | None
    key: str | None
    strict: bool
    exclude: tuple[str, ...]
    source_scale: int | None = None


def _to_plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def pretrain_spec(cfg: Any, check_file: bool = True) -> PretrainSpec:
    """Validate the ``pretrain`` group of a training config (at start, before any data or network is built).

    Raises :class:`sresolve.config.ConfigError` naming the key: an unknown strategy, a loading strategy without
    ``pretrain.path`` or (with ``check_file``) with a path that is not a file, a path given to a strategy that loads
    nothing, a bad ``pretrain.source_scale``, ``pretrain=finetune`` for a model without ``model.finetune_lr``.
    ``check_file=False`` is for resumed runs, which restore their own checkpoint instead.
    """
    from omegaconf import OmegaConf

    from sresolve.config import ConfigError

    node = cfg.get("pretrain") if hasattr(cfg, "get") else None
    if node is None:
        return PretrainSpec("none", None, "params_ema", True, ())
    strategy = str(node.get("strategy") or "none")
    if strategy not in STRATEGIES:
        raise ConfigError(f"pretrain.strategy={strategy!r} is not a strategy; allowed: {list(STRATEGIES)}")
    raw_source = node.get("source_scale") if "source_scale" in node else None
    source_scale: int | None = None
    if strategy == "cross_scale" and raw_source not in _NO_SOURCE:
        if isinstance(raw_source, bool) or not isinstance(raw_source, int) or raw_source < 1:
            raise ConfigError(
                f"pretrain.source_scale must be the scale of the source run (an int such as 2) or none, "
                f"got {raw_source!r}"
            )
        source_scale = int(raw_source)
    strict = node.get("strict", True)
    if not isinstance(strict, bool):
        raise ConfigError(f"pretrain.strict must be true or false, got {strict!r}")
    exclude = _to_plain(node.get("exclude", None)) or []
    if isinstance(exclude, str) or not all(isinstance(p, str) for p in exclude):
        raise ConfigError(f"pretrain.exclude must be a list of key patterns such as ['upsample.*'], got {exclude!r}")
    key = node.get("key", "params_ema")
    if strategy == "finetune" and "finetune_lr" not in cfg.model:
        raise ConfigError(
            f"pretrain=finetune uses model.finetune_lr, which model {cfg.model.get('arch')!r} does not define; "
            "add it to the model config or pass +model.finetune_lr=<lr>"
        )
    try:
        raw_path = None if "path" not in node or OmegaConf.is_missing(node, "path") else node.get("path")
    except Exception as err:  # an interpolation that cannot resolve (e.g. ${hydra:...} outside a Hydra run)
        raise ConfigError(f"pretrain.path cannot be resolved: {err}") from None
    has_path = raw_path not in (None, "")
    if strategy not in _LOADING:
        if has_path:  # never ignore a weights file silently
            raise ConfigError(
                f"pretrain.path is set but pretrain={strategy} loads no weights; use pretrain=finetune (same network "
                "and scale) or pretrain=cross_scale (another scale)"
            )
        return PretrainSpec(strategy, None, key, strict, tuple(exclude), source_scale)
    if strategy == "cross_scale" and source_scale is None:  # the from-scratch column of the cross-scale table
        return PretrainSpec(strategy, None, key, strict, tuple(exclude), None)
    if not has_path:
        raise ConfigError(
            f"pretrain={strategy} needs pretrain.path=<weights file> (a sresolve .ckpt, an exported "
            "net_g_*.pth / .safetensors, or an official BasicSR .pth)"
        )
    path = Path(os.path.expanduser(str(raw_path)))
    if check_file and not path.is_file():
        where = "is a folder, expected a weights file" if path.is_dir() else "does not exist"
        extra = ""
        if strategy == "cross_scale":
            extra = (
                f" (the x{source_scale} source run must finish first; set pretrain.path, or pretrain.sources_dir "
                "in the cross-scale table sweep)"
            )
        raise ConfigError(f"pretrain.path={path} {where}{extra}")
    return PretrainSpec(strategy, path, key, strict, tuple(exclude), source_scale)
