"""LightningModules: one module serves every family that trains as plain paired SR."""

from sresolve.models.sr_module import SRModule

__all__ = ["SRModule"]
