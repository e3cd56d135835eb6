"""Reading and writing network weights safely.

* :func:`load_state_dict` reads ``.pth/.pt/.ckpt/.bin`` files with ``torch.load(weights_only=True)`` (never unpickles
  arbitrary objects) and ``.safetensors`` files with safetensors, then unwraps the usual containers (BasicSR
  ``params_ema``/``params``, this project's Lightning checkpoints with ``net.``/``net_ema.`` prefixes, ``model``/
  ``state_dict``/``net`` wrappers) and strips ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (``torch.compile``)
  prefixes.
* :func:`load_model` builds the right registered network from a weights file alone, using the state-dict detectors of
  :mod:`sresolve.archs` (spec ``archs_hat_hma_safmn.md`` §4), and loads it strictly.
* :func:`export_basicsr`, :func:`save_safetensors` and :func:`atomic_torch_save` write files atomically (temporary
  file in the same directory, fsync, ``os.replace``), so an interrupted write never leaves a truncated target.

BasicSR conventions (spec §0): a checkpoint is a dict with ``params`` (raw network) and, with EMA on, ``params_ema``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from .archs import create, detect_arch, list_detector_families

__all__ = [
    "CheckpointError",
    "CheckpointKeyError",
    "atomic_torch_save",
    "export_basicsr",
    "load_model",
    "load_state_dict",
    "save_safetensors",
]

StateDict = dict[str, Tensor]
PathLike = str | os.PathLike[str]

#: Prefixes removed from the front of every key (repeatedly): DataParallel/DDP and torch.compile wrappers.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Keys that hold a state dict inside a generic checkpoint dict, tried in order after params_ema/params/Lightning.
_GENERIC_KEYS = ("model", "state_dict", "net")
#: Prefixes of this project's Lightning modules: EMA network first.
_LIGHTNING_PREFIXES = ("net_ema.", "net.")


class CheckpointError(ValueError):
    """A weights file or dict that cannot be used (unreadable, not plain weights, no state dict inside)."""


class CheckpointKeyError(KeyError):
    """An explicitly requested entry is missing (a ``KeyError`` whose message prints without extra quoting)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ------------------------------------------------------------------------------------------------------------ reading
def _read_file(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path is a directory, expected a weights file: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        m = re.search(r"GLOBAL ([\w.<>]+)", msg)
        if m:
            raise CheckpointError(
                f"{path} is not a plain weights file: it contains pickled Python objects (it references "
                f"{m.group(1)}) that weights_only loading refuses to unpickle. Re-export it as a dict of tensors "
                f"(e.g. with sresolve.checkpoints.export_basicsr) or as .safetensors."
            ) from exc
        m = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", msg)
        detail = m.group(1).strip() if m else msg.strip().splitlines()[-1][:200]
        raise CheckpointError(
            f"cannot read {path} as a plain weights file with weights_only=True ({detail}): it is corrupt, not a "
            f"PyTorch checkpoint, or a raw pickle that is not a plain weights file"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        # a corrupt file can fail anywhere inside the (weights-only) unpickler
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {type(exc).__name__}: {exc}") from exc


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key = key[len(p) :]
                changed = True
    return key


def _with_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _lightning_net(sd: Mapping[str, Any]) -> dict[str, Any] | None:
    """The network weights of a Lightning ``state_dict``: ``net_ema.*`` if present, else ``net.*``."""
    for prefix in _LIGHTNING_PREFIXES:
        sub = _with_prefix(sd, prefix)
        if sub:
            return sub
    return None


def _finalise(obj: Any, source: str, where: str) -> StateDict:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: {where} is a {type(obj).__name__}, not a dict of tensors")
    out: StateDict = {}
    bad = []
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            bad.append(str(k))
            continue
        nk = _strip_wrappers(str(k))
        if nk in out:
            raise CheckpointError(f"{source}: key {k!r} collides with another key after stripping wrapper prefixes")
        out[nk] = v
    if bad:
        raise CheckpointError(
            f"{source}: {where} is not a state dict: entries {bad[:8]}{' ...' if len(bad) > 8 else ''} are not "
            f"tensors (top-level keys: {list(obj)[:10]})"
        )
    if not out:
        raise CheckpointError(f"{source}: {where} holds no tensors")
    return out


def load_state_dict(path_or_dict: PathLike | Mapping[str, Any], key: str | None = None) -> StateDict:
    """Read network weights from a file or an already-loaded checkpoint dict.

    Unwrapping when ``key`` is None (first match wins): ``params_ema`` → ``params`` (BasicSR; spec §0) → Lightning
    ``state_dict`` with ``net_ema.``/``net.`` prefixes (EMA preferred; prefix stripped) → ``model`` / ``state_dict`` /
    ``net`` → the dict itself. ``module.`` and ``_orig_mod.`` prefixes are stripped from every key.

    With an explicit ``key``, ``obj[key]`` is used; for Lightning checkpoints ``key="net"`` or ``key="net_ema"``
    selects that prefix inside ``state_dict``. A missing key raises ``KeyError`` naming the file and the available keys.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError (a ``ValueError``): unreadable file, pickled objects other than plain tensors/containers,
            or no dict of tensors inside.
    """
    if isinstance(path_or_dict, Mapping):
        obj: Any = path_or_dict
        source = "<state dict>"
    elif isinstance(path_or_dict, (str, os.PathLike)):
        path = Path(path_or_dict)
        obj = _read_file(path)
        source = str(path)
    else:
        raise TypeError(f"load_state_dict expects a path or a dict, got {type(path_or_dict).__name__}")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, expected a dict of tensors")

    if key is not None:
        if key in obj:
            return _finalise(obj[key], source, f"entry {key!r}")
        inner = obj.get("state_dict")
        if isinstance(inner, Mapping):
            sub = _with_prefix(inner, key.rstrip(".") + ".")
            if sub:
                return _finalise(sub, source, f"prefix {key!r} of 'state_dict'")
        msg = f"key {key!r} not found in {source}; available keys: {list(obj)}"
        if isinstance(inner, Mapping):
            prefixes = sorted({str(k).split(".", 1)[0] for k in inner if "." in str(k)})
            msg += f"; prefixes inside 'state_dict': {prefixes}"
        raise CheckpointKeyError(msg)

    for k in ("params_ema", "params"):
        if isinstance(obj.get(k), Mapping):
            return _finalise(obj[k], source, f"entry {k!r}")
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping):
        net = _lightning_net(inner)
        if net is not None:
            return _finalise(net, source, "Lightning 'state_dict'")
    for k in _GENERIC_KEYS:
        if isinstance(obj.get(k), Mapping):
            return _finalise(obj[k], source, f"entry {k!r}")
    return _finalise(obj, source, "the checkpoint")


def load_model(
    path_or_state_dict: PathLike | Mapping[str, Any],
    *,
    key: str | None = None,
    strict: bool = True,
    head_scale: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build the registered network matching a weights file (family, variant and scale inferred from tensor shapes),
    load the weights (``strict`` by default) and return it in eval mode on the CPU.

    ``overrides`` set constructor arguments the weights cannot tell, e.g. ``load_model("EQSR.pth",
    scale_code="cell")`` for the official EQSR checkpoints (choice E1) or ``alpha=0.1`` for a HAT ablation model.

    A multi-scale file of multi-related-task pre-training (``body.*`` + ``heads.x<s>.*``) gives the ×``scale`` network
    (the ``scale`` override, else ``head_scale``, is required; ``head_scale`` is ignored for any other file, so a
    caller that does not know the file's kind can pass it).

    Raises ``ValueError`` when no detector recognises the state dict (listing the families tried and the first keys)
    or when the weights do not fit the inferred network.
    """
    from sresolve.archs.layers import is_multi_scale_state, multi_scale_head_scales, single_scale_state_dict

    sd = load_state_dict(path_or_state_dict, key=key)
    source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else "<state dict>"
    if is_multi_scale_state(sd):
        heads = multi_scale_head_scales(sd)
        if overrides.get("scale", head_scale) not in heads:
            raise ValueError(
                f"{source} holds one body and heads for x{heads} (multi-related-task pre-training): pass scale=<one "
                f"of {heads}> (sresolve-upscale: scale=<s>) or load its net_g_*_x<s> export"
            )
        sd = single_scale_state_dict(sd, overrides.pop("scale", head_scale))
    found = detect_arch(sd)
    if found is None:
        keys = list(sd)
        raise ValueError(
            f"{source}: no registered architecture recognises this state dict (families tried: "
            f"{list_detector_families()}); first keys: {keys[:8]}{' ...' if len(keys) > 8 else ''} ({len(keys)} keys)"
        )
    name, kwargs = found
    model = create(name, **{**kwargs, **overrides})
    try:
        model.load_state_dict(sd, strict=strict)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit the inferred network {name}({kwargs}): {exc}") from exc
    return model.eval()


# ------------------------------------------------------------------------------------------------------------ writing
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[IO[bytes], str], None]) -> Path:
    """Write via ``write(fileobj, tmp_name)`` into a temporary file next to ``path``, fsync it, then ``os.replace``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f, tmp)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically (:func:`atomic_write`): JSON reports, CSV and markdown tables."""
    return atomic_write(path, lambda f, _tmp: f.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)`` atomically: a failure midway (e.g. an unpicklable object) leaves no temporary file
    and an existing ``path`` intact. Returns the path."""
    return atomic_write(path, lambda f, _tmp: torch.save(obj, f))


def _plain_tensors(sd: Mapping[str, Any] | nn.Module, what: str) -> StateDict:
    if isinstance(sd, nn.Module):
        sd = sd.state_dict()
    if not isinstance(sd, Mapping):
        raise TypeError(f"{what} must be a state dict or an nn.Module, got {type(sd).__name__}")
    out: StateDict = {}
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"{what}[{k!r}] is a {type(v).__name__}, not a tensor")
        # clone(): a compact copy, so a view never drags its whole base storage into the file
        out[_strip_wrappers(str(k))] = v.detach().to("cpu").contiguous().clone()
    return out


def export_basicsr(
    path: PathLike, params: Mapping[str, Tensor] | nn.Module, params_ema: Mapping[str, Tensor] | nn.Module | None = None
) -> Path:
    """Write a BasicSR-layout checkpoint ``{'params': ..., 'params_ema': ...}`` (``params_ema`` only when given):
    plain, contiguous CPU tensors, wrapper prefixes stripped, written atomically. Loadable by BasicSR / the official
    repositories and by :func:`load_state_dict` (which prefers ``params_ema``)."""
    obj: dict[str, StateDict] = {"params": _plain_tensors(params, "params")}
    if params_ema is not None:
        obj["params_ema"] = _plain_tensors(params_ema, "params_ema")
    return atomic_torch_save(obj, path)


def save_safetensors(
    path: PathLike, state_dict: Mapping[str, Tensor] | nn.Module, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``state_dict`` as a ``.safetensors`` file atomically (tensors copied to contiguous CPU memory, so shared
    storage is allowed in the input). ``metadata`` must map str to str."""
    from safetensors.torch import save as st_save

    tensors = _plain_tensors(state_dict, "state_dict")
    meta: dict[str, str] | None = None
    if metadata is not None:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise TypeError(f"safetensors metadata must map str to str; bad entries: {bad}")
        meta = dict(metadata)
    payload = st_save(tensors, metadata=meta)
    return atomic_write(path, lambda f, _tmp: f.write(payload))
