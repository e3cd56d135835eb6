"""``MultiTaskSRModule``: multi-related-task pre-training (``pretrain=multi_task``), the alternative to same-task
pre-training in HAT Table 7 (after EDT, Li et al. 2021): one network body shared by ×2, ×3 and ×4 SR, one
pixel-shuffle head per scale (:class:`~sresolve.archs.layers.MultiScaleHeads`), all trained jointly.

It differs from :class:`~sresolve.models.sr_module.SRModule` (optimiser, scheduler, EMA, checkpoints are the same) in
three places:

* a training batch holds one ``(LR, HR)`` pair per scale (``batch["x2"]``, ...,
  :class:`~sresolve.data.datasets.MultiScalePairedDataset`); every step runs each head on its pair and minimises the
  mean of the per-scale losses (each logged as ``train/loss_x<s>``), so every parameter gets a gradient at every step;
* validation runs each set at each scale (loaders ``<set>`` at the target ``scale``, ``<set>_x<s>`` at the others,
  :class:`~sresolve.data.PairedSRDataModule` ``scales``), shaving ``s`` pixels at scale ``s`` (``val.crop_border``
  overrides it for all);
* export writes the multi-scale weights (``net_g_latest.pth``: ``body.*`` + ``heads.x<s>.*``) and, per scale, the
  plain single-scale network (``net_g_latest_x<s>.pth`` / ``.safetensors``) that ``sresolve-test`` and
  ``pretrain=finetune`` load; ``pretrain=finetune`` also accepts the multi-scale file directly (the head of the
  run's scale is selected, :func:`sresolve.pretrain.transfer_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sresolve import archs
from sresolve.archs.layers import MultiScaleHeads, single_scale_state_dict
from sresolve.models.sr_module import SRModule
from sresolve.ops.tiling import upscale

#: The scales of HAT Table 7's multi-related-task pre-training (EDT: ×2, ×3, ×4 SR).
DEFAULT_SCALES = (2, 3, 4)


class MultiTaskSRModule(SRModule):
    """Joint training of scale-specific heads over one shared body.

    Arguments as :class:`SRModule`, plus ``scales`` (at least two; the network's ``scale`` argument, the target scale
    of the later fine-tuning, must be one of them).
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
        scales: Sequence[int] = DEFAULT_SCALES,
    ) -> None:
        self.val_scales: list[int] = []
        super().__init__(
            arch, arch_kwargs, optim, sched, loss, ema_decay, total_iter, val, compile, compile_backend, channels_last
        )
        self.scale = int(dict(arch_kwargs).get("scale", self.net.scale))
        if self.scale not in self.net.scales:
            raise ValueError(f"scale={self.scale} (the target scale) must be one of pretrain.scales={list(scales)}")
        self.fixed_border = (val or {}).get("crop_border")

    def build_network(self, arch: str, arch_kwargs: Mapping[str, Any]) -> nn.Module:
        scales = [int(s) for s in self.hparams.scales]
        if len(scales) < 2 or len(set(scales)) != len(scales):
            raise ValueError(f"pretrain.scales must list at least two different scales, got {scales}")
        kwargs = dict(arch_kwargs)
        return MultiScaleHeads({s: archs.create(arch, **{**kwargs, "scale": s}) for s in scales})

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        fwd = self.__dict__.get("_train_forward", self.net)
        losses = []
        for s in self.net.scales:
            pair = batch[f"x{s}"]
            loss, _ = self.criterion(fwd(pair["lr"], scale=s), pair["hr"])
            self.log(f"train/loss_x{s}", loss)
            losses.append(loss)
        total = torch.stack(losses).mean()
        self.log("train/loss", total, prog_bar=True)
        return total

    # ------------------------------------------------------------------ validation
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
        scales = getattr(dm, "test_scales" if stage == "test" else "val_scales", None)
        self.val_scales = [int(s) for s in scales] if scales else []
        super().setup(stage)

    def val_borders(self, names: list[str]) -> list[int]:
        """Each loader shaves its scale (or the fixed ``val.crop_border``)."""
        if len(self.val_scales) != len(names):
            self.val_scales = [self.scale] * len(names)
        return [int(self.fixed_border) if self.fixed_border is not None else s for s in self.val_scales]

    def forward(self, lr: Tensor, scale: int | None = None) -> Tensor:  # type: ignore[override]
        return upscale(
            self.eval_net.at_scale(self.scale if scale is None else int(scale)),
            lr,
            tile=self.val_tile,
            overlap=self.val_overlap,
            max_pixels=self.val_max_pixels,
            tta=self.val_tta,
        )

    def eval_forward_kwargs(self, batch: Mapping[str, Any], dataloader_idx: int) -> dict[str, Any]:
        return {"scale": self.val_scales[dataloader_idx] if self.val_scales else self.scale}

    # ------------------------------------------------------------------ export
    def export_weights(self, out_dir: str | Path, stem: str = "net_g_latest") -> dict[str, Path]:
        """The multi-scale ``<stem>.pth`` / ``.safetensors``, then ``<stem>_x<s>.*``: the plain ×s network per
        scale (BasicSR ``{'params', 'params_ema'}`` and safetensors with the EMA weights)."""
        paths = super().export_weights(out_dir, stem)
        raw, ema = self.weights_to_export()
        for s in self.net.scales:
            single = self.write_weights(
                Path(out_dir), f"{stem}_x{s}", single_scale_state_dict(raw, s), single_scale_state_dict(ema, s), s
            )
            paths[f"x{s}"] = single["basicsr"]
        return paths
