"""Architecture registry (timm-style) and state-dict detectors.

Every network family module in :mod:`sresolve.archs` (``safmn.py``, ``hat.py``, ...) registers *constructor
functions* with :func:`register_arch`; the function name is the architecture name used in configs and by
:func:`create`. A family may also register a *detector* with :func:`register_detector`: a function that looks at a
state dict and, if it recognises the layout, returns ``(arch_name, kwargs)`` so that
:func:`sresolve.checkpoints.load_model` can rebuild the exact network from a bare weights file.

Family modules are discovered lazily: the first query (:func:`create`, :func:`list_archs`, :func:`detect_arch`, ...)
imports every public module of the :mod:`sresolve.archs` package, so a new family only has to drop its file there.

Contract checked by :func:`create` for every network (shared interface of the project): the returned object is an
``nn.Module`` with an integer attribute ``scale`` (upscale factor) and ``in_channels == 3``.
"""

from __future__ import annotations

import collections.abc as cabc
import fnmatch
import importlib
import inspect
import numbers
import pkgutil
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

__all__ = [
    "ArchSpec",
    "arch_defaults",
    "arch_family",
    "create",
    "detect_arch",
    "get_arch",
    "list_archs",
    "list_detector_families",
    "list_families",
    "register_arch",
    "register_detector",
]

Detector = Callable[[Mapping[str, Tensor]], "tuple[str, dict[str, Any]] | None"]

# Modules of the package that are infrastructure, not network families.
_NON_FAMILY_MODULES = frozenset({"registry", "layers", "vgg"})


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture: its constructor, family and signature."""

    name: str
    family: str
    fn: Callable[..., nn.Module]
    signature: inspect.Signature
    module: str
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def accepts_var_kwargs(self) -> bool:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self.signature.parameters.values())

    @property
    def parameter_names(self) -> list[str]:
        return [
            p.name
            for p in self.signature.parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]


_ARCHS: dict[str, ArchSpec] = {}
_DETECTORS: list[tuple[int, int, str, Detector]] = []  # (priority, insertion order, family, fn)
_families_loaded = False


# --------------------------------------------------------------------------------------------------- registration
def register_arch(fn: Callable[..., nn.Module] | None = None, *, family: str) -> Any:
    """Register a network constructor under its function name.

    Use as ``@register_arch(family="safmn")`` on a function ``safmn(scale: int = 4, ...) -> SAFMN``. The signature's
    parameters (and their annotations) define which keyword arguments :func:`create` accepts and type-checks; their
    defaults define the variant (used by detectors to pick the named variant that matches a state dict).

    Re-registering the same name from the same module (e.g. after ``importlib.reload``) replaces the entry;
    registering a name that another function already owns raises ``ValueError``.
    """
    if not isinstance(family, str) or not family:
        raise ValueError(f"register_arch: 'family' must be a non-empty string, got {family!r}")

    def _register(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(f):
            raise TypeError(f"register_arch expects a callable, got {f!r}")
        name = f.__name__
        module = getattr(f, "__module__", "?")
        old = _ARCHS.get(name)
        if old is not None and (old.module, old.fn.__qualname__) != (module, f.__qualname__):
            raise ValueError(
                f"architecture name {name!r} is already registered by {old.module}.{old.fn.__qualname__} "
                f"(family {old.family!r}); choose another function name"
            )
        sig = inspect.signature(f)
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.default is not inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        _ARCHS[name] = ArchSpec(name=name, family=family, fn=f, signature=sig, module=module, defaults=defaults)
        return f

    if fn is not None:
        return _register(fn)
    return _register


def register_detector(family: str, *, priority: int = 0) -> Callable[[Detector], Detector]:
    """Register ``fn(state_dict) -> (arch_name, kwargs) | None`` that recognises a family's state dicts.

    Detectors run in decreasing ``priority`` (then registration order); the first that returns a result wins. Give a
    family whose keys are a superset of another's a higher priority. A detector returns ``None`` when the dict is not
    of its family, and raises ``ValueError`` with a clear message when it *is* its family but inconsistent.
    """
    if not isinstance(family, str) or not family:
        raise ValueError(f"register_detector: 'family' must be a non-empty string, got {family!r}")

    def _register(fn: Detector) -> Detector:
        key = (getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", repr(fn)))
        # Replace an earlier registration of the same function (module reload).
        _DETECTORS[:] = [
            d for d in _DETECTORS if (getattr(d[3], "__module__", "?"), getattr(d[3], "__qualname__", "")) != key
        ]
        _DETECTORS.append((priority, len(_DETECTORS), family, fn))
        _DETECTORS.sort(key=lambda d: (-d[0], d[1]))
        return fn

    return _register


def _load_families() -> None:
    """Import every public module of :mod:`sresolve.archs` once, so that their registrations run."""
    global _families_loaded
    if _families_loaded:
        return
    package = importlib.import_module("sresolve.archs")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name in _NON_FAMILY_MODULES:
            continue
        try:
            importlib.import_module(f"sresolve.archs.{info.name}")
        except Exception as exc:  # retried on the next query; never a silently partial registry
            raise ImportError(f"failed to import architecture module sresolve.archs.{info.name}: {exc}") from exc
    _families_loaded = True


# --------------------------------------------------------------------------------------------------- queries
def list_archs(pattern: str = "*") -> list[str]:
    """Sorted registered architecture names matching the shell-style ``pattern`` (``fnmatch``)."""
    _load_families()
    return sorted(n for n in _ARCHS if fnmatch.fnmatchcase(n, pattern))


def list_families() -> list[str]:
    """Sorted names of the families that registered at least one architecture."""
    _load_families()
    return sorted({s.family for s in _ARCHS.values()})


def list_detector_families() -> list[str]:
    """Families with a state-dict detector, in the order the detectors run."""
    _load_families()
    return [d[2] for d in _DETECTORS]


def get_arch(name: str) -> ArchSpec:
    """The :class:`ArchSpec` of ``name``; ``KeyError`` listing the registered names if unknown."""
    _load_families()
    if not isinstance(name, str):
        raise TypeError(f"architecture name must be a string, got {type(name).__name__}: {name!r}")
    spec = _ARCHS.get(name)
    if spec is None:
        close = [n for n in _ARCHS if name.lower() in n.lower() or n.lower() in name.lower()]
        hint = f" Did you mean one of {sorted(close)}?" if close else ""
        raise KeyError(f"unknown architecture {name!r}; registered architectures: {sorted(_ARCHS)}.{hint}")
    return spec


def arch_family(name: str) -> str:
    """Family of a registered architecture (e.g. ``'safmn'`` for ``'safmn_l'``)."""
    return get_arch(name).family


def arch_defaults(name: str) -> dict[str, Any]:
    """Default keyword arguments of the constructor of ``name`` (a copy)."""
    return dict(get_arch(name).defaults)


# --------------------------------------------------------------------------------------------------- type checks
def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")


def _to_plain(value: Any) -> Any:
    """Convert omegaconf containers to plain Python containers (other values unchanged)."""
    try:
        from omegaconf import Container, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if isinstance(value, Container):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` is acceptable for annotation ``tp`` (lenient: unknown annotations accept anything)."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(tp, types.UnionType)):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(isinstance(value, type(a)) and value == a for a in args)
    if tp is bool:
        return isinstance(value, bool) or type(value).__name__ == "bool_"
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, cabc.Sequence, cabc.MutableSequence) or tp in (list, tuple, cabc.Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, cabc.Sequence):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
        return all(_matches(v, args[0]) for v in value)
    if origin in (dict, cabc.Mapping, cabc.MutableMapping) or tp in (dict, cabc.Mapping):
        return isinstance(value, cabc.Mapping)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # Callable[...], TypeVar, forward references we cannot judge: accept


def _resolved_hints(spec: ArchSpec) -> dict[str, Any]:
    try:
        return typing.get_type_hints(spec.fn)
    except Exception:  # unresolvable annotations: no type checking rather than a confusing failure
        return {}


def _coerce(value: Any, tp: Any) -> Any:
    """Plain-container conversion matching the annotation (``ListConfig`` -> list, or tuple if annotated tuple)."""
    value = _to_plain(value)
    origin = typing.get_origin(tp) or tp
    if isinstance(value, list) and origin is tuple:
        return tuple(value)
    return value


# --------------------------------------------------------------------------------------------------- create
def create(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered architecture ``name`` with keyword arguments validated against its signature.

    Raises ``KeyError`` for an unknown name (listing the registered ones) and ``ValueError`` for unknown keyword
    arguments (naming them and the accepted ones) or values of the wrong type (naming the key, the expected type and
    the value). ``int`` is accepted where ``float`` is expected; omegaconf containers are converted to plain lists /
    dicts (tuples when the annotation says ``tuple``).
    """
    spec = get_arch(name)
    accepted = spec.parameter_names
    if not spec.accepts_var_kwargs:
        unknown = sorted(k for k in kwargs if k not in accepted)
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for architecture {name!r}; accepted arguments: {accepted}")
    hints = _resolved_hints(spec)
    clean: dict[str, Any] = {}
    for key, value in kwargs.items():
        tp = hints.get(key, Any)
        value = _coerce(value, tp)
        if not _matches(value, tp):
            raise ValueError(
                f"architecture {name!r}: argument {key!r} expects {_type_name(tp)}, "
                f"got {type(value).__name__} {value!r}"
            )
        clean[key] = value
    missing = [
        p.name
        for p in spec.signature.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in clean
    ]
    if missing:
        raise ValueError(f"architecture {name!r}: missing required argument(s) {missing}")
    model = spec.fn(**clean)
    if not isinstance(model, nn.Module):
        raise TypeError(f"constructor {spec.module}.{name} returned {type(model).__name__}, not an nn.Module")
    scale = getattr(model, "scale", None)
    if not isinstance(scale, int) or isinstance(scale, bool):
        raise TypeError(f"network built by {name!r} must have an integer attribute 'scale', got {scale!r}")
    in_channels = getattr(model, "in_channels", None)
    if in_channels != 3:
        raise TypeError(f"network built by {name!r} must have attribute in_channels == 3, got {in_channels!r}")
    return model


# --------------------------------------------------------------------------------------------------- detection
def detect_arch(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Run the registered detectors on ``state_dict``; ``(arch_name, kwargs)`` of the first match, else ``None``.

    A detector that raises something other than ``ValueError`` is reported as a ``ValueError`` naming its family.
    """
    _load_families()
    for _prio, _order, family, fn in list(_DETECTORS):
        try:
            found = fn(state_dict)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"the {family!r} detector failed on this state dict: {type(exc).__name__}: {exc}") from exc
        if found is not None:
            arch, kw = found
            if arch not in _ARCHS:
                raise ValueError(f"the {family!r} detector returned unregistered architecture {arch!r}")
            return arch, dict(kw)
    return None
