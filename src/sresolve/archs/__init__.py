"""Super-resolution network architectures and their registry.

Use :func:`create` to build a registered network by name (``create("safmn_l", scale=2)``) and :func:`list_archs` to
see the names. Each family module of this package registers its constructors with :func:`register_arch` and, where
possible, a state-dict detector with :func:`register_detector` (used by :func:`sresolve.checkpoints.load_model`).
Family modules are imported lazily on the first registry query (any public module of this package except
``registry`` and ``layers``).
"""

from __future__ import annotations

from .registry import (
    ArchSpec,
    arch_defaults,
    arch_family,
    create,
    detect_arch,
    get_arch,
    list_archs,
    list_detector_families,
    list_families,
    register_arch,
    register_detector,
)

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
