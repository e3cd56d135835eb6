"""LightningModules: one module serves every family that trains as plain paired SR (:class:`SRModule`); arbitrary-scale
networks (EQSR), which train on per-sample scales and coordinates, use :class:`ArbitraryScaleSRModule`; reference-based
networks (AMRSR), trained as a GAN with references in every batch, use :class:`RefSRGANModule`; multi-related-task
pre-training (one body, a head per scale) uses :class:`MultiTaskSRModule`."""

from sresolve.models.arbitrary_module import ArbitraryScaleSRModule
from sresolve.models.multitask_module import MultiTaskSRModule
from sresolve.models.refsr_module import RefSRGANModule
from sresolve.models.sr_module import SRModule

__all__ = ["ArbitraryScaleSRModule", "MultiTaskSRModule", "RefSRGANModule", "SRModule"]
