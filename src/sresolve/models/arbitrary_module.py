"""``ArbitraryScaleSRModule``: training and validation of arbitrary-scale networks (EQSR), spec archs_eqsr_amrsr.md
A7-A9 and C.

It differs from paired SR (:class:`~sresolve.models.sr_module.SRModule`, which it extends: optimiser, scheduler, EMA,
checkpoints, export are the same) in three places:

* a training batch holds, per sample, its own scale ``s ~ U(1, 4)``, the LR patch, a contiguous window of HR pixels
  and their continuous coordinates (``coord``) and ``cell = 2 / H_crop`` (:mod:`sresolve.data.arbitrary`); the net is
  called as ``net(lr, scale=s, coord=coord, cell=cell)`` and the L1 loss compares the predicted pixels at ``coord``
  with the window (official ``DSF`` training);
* validation runs one loader per (set, scale), e.g. ``samples_x2``, ``samples_x3.5``, each logged separately as
  ``val/<set>_x<s>/psnr`` (the first one is also ``val/psnr``, the monitored value), the network upscaling by the
  loader's scale (``batch["scale"]``);
* the evaluation border (choice E6): ``crop_border`` 4 px at every scale by default (the EQSR test protocol), or
  ``crop_border: ceil_scale`` for the LIIF convention (``ceil(s)`` px).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from sresolve.models.sr_module import SRModule
from sresolve.ops.tiling import upscale

#: The EQSR test protocol shaves 4 px at every scale (official test ymls, spec A9).
DEFAULT_CROP_BORDER = 4


class ArbitraryScaleSRModule(SRModule):
    """Arbitrary-scale SR training/validation around a registered network with ``arbitrary_scale = True``.

    Arguments as :class:`SRModule`; ``val.crop_border`` is an int (default 4) or ``"ceil_scale"``; ``val.query_tile``
    tiles the decoder's HR query grid (exact, bounded memory).
    """

    def __init__(
        self,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        optim: Mapping[str, Any],
        sched: Mapping[str, Any],
        loss: Mapping[str, float],
        ema_decay: float = 0.999,
        total_iter: int = 800_000,
        val: Mapping[str, Any] | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        channels_last: bool = False,
    ) -> None:
        val = dict(val or {})
        border = val.get("crop_border")
        self.border_rule = border if border is not None else DEFAULT_CROP_BORDER
        if not (self.border_rule == "ceil_scale" or (isinstance(self.border_rule, int) and self.border_rule >= 0)):
            raise ValueError(f"val.crop_border must be an int >= 0 or 'ceil_scale' (LIIF convention), got {border!r}")
        val["crop_border"] = self.border_rule if isinstance(self.border_rule, int) else DEFAULT_CROP_BORDER
        super().__init__(
            arch, arch_kwargs, optim, sched, loss, ema_decay, total_iter, val, compile, compile_backend, channels_last
        )
        if not getattr(self.net, "arbitrary_scale", False):
            raise ValueError(
                f"model.task=arbitrary_scale needs an arbitrary-scale network (e.g. eqsr); {arch!r} has a fixed x"
                f"{self.scale} upsampler"
            )
        self.val_query_tile = val.get("query_tile")
        self.val_scales: list[float] = []

    # ------------------------------------------------------------------ networks
    def forward(self, lr: Tensor, scale: float | None = None) -> Tensor:  # type: ignore[override]
        return upscale(
            self.eval_net,
            lr,
            scale=scale,
            tile=self.val_tile,
            overlap=self.val_overlap,
            max_pixels=self.val_max_pixels,
            query_tile=self.val_query_tile,
            tta=self.val_tta,
        )

    def val_borders(self, names: list[str]) -> list[int]:
        """One border per (set, scale) loader; the scale comes from the datamodule's ``val_scale_of`` (kept in
        ``val_scales``)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        scale_of: Mapping[str, float] = getattr(dm, "val_scale_of", None) or {}
        self.val_scales = [float(scale_of.get(n, self.scale)) for n in names]
        return [self.crop_border_for(s) for s in self.val_scales]

    def crop_border_for(self, scale: float) -> int:
        """Pixels shaved at ``scale`` (choice E6)."""
        return math.ceil(scale) if self.border_rule == "ceil_scale" else int(self.border_rule)

    # ------------------------------------------------------------------ training
    def train_forward_kwargs(self, batch: Mapping[str, Tensor]) -> dict[str, Any]:
        """Per-sample scale, query coordinates and cell of an arbitrary-scale training batch."""
        missing = [k for k in ("lr", "hr", "coord", "scale") if k not in batch]
        if missing:
            raise KeyError(
                f"arbitrary-scale training batches need {missing} (use an arbitrary-scale datamodule such as "
                "data=samples_arbitrary / df2k_arbitrary)"
            )
        self.log("train/scale_mean", batch["scale"].float().mean())
        return {"scale": batch["scale"], "coord": batch["coord"], "cell": batch.get("cell")}

    # ------------------------------------------------------------------ validation / test
    def eval_forward_kwargs(self, batch: Mapping[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """The loader's scale: ``batch["scale"]`` (arbitrary-scale sets), else the datamodule's, else HR / LR."""
        if "scale" in batch:
            return {"scale": float(torch.as_tensor(batch["scale"]).reshape(-1)[0])}
        if self.val_scales:
            return {"scale": self.val_scales[dataloader_idx]}
        return {"scale": batch["hr"].shape[-2] / batch["lr"].shape[-2]}
