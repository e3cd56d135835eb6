"""``SRModule``: the LightningModule for paired (LR, HR) super-resolution, shared by every family that trains so.

It follows BasicSR's ``SRModel`` semantics where they matter for reproducing papers:
- iteration-based schedules: the LR scheduler steps per optimizer step (``interval: step``);
- an exponential moving average of the weights, ``ema = d·ema + (1-d)·param`` after every optimizer step
  (decay 0.999 in HAT/HMA/SAFMN), initialised as a copy of the network; validation and export use the EMA net;
- validation PSNR/SSIM with the BasicSR/MATLAB protocol (8-bit rounding, Y channel, shave = scale), one metric pair
  per validation set, reduced across DDP ranks as sum and count; optionally LPIPS (Zhang et al. 2018) and NIQE
  (Mittal et al. 2013) per set (``val.lpips`` / ``val.niqe``, off by default; :mod:`sresolve.metrics.perceptual`),
  logged as ``val/<set>/lpips`` and ``val/<set>/niqe``;
- weights export in BasicSR's ``{'params', 'params_ema'}`` layout and as safetensors.

Differences, on purpose: buffers of the EMA net are copied from the raw net (BasicSR leaves them at their initial
value; for the constant index buffers of HAT/HMA the two agree), and the RNG states are saved in the checkpoint so a
resumed run continues the same random stream.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from sresolve import archs
from sresolve.checkpoints import export_basicsr, load_state_dict, save_safetensors
from sresolve.metrics import PSNRY, SSIMY, LPIPSMetric, NIQEMetric, PerceptualMetrics, perceptual_from_config
from sresolve.models.losses import WeightedLoss
from sresolve.ops.tiling import upscale
from sresolve.pretrain import InitReport, transfer_weights

log = logging.getLogger("sresolve.train")


def build_optimizer(params: Any, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """``model.optim``: ``name`` in {adam, adamw}, ``lr``, ``betas``, ``weight_decay``."""
    name = str(cfg.get("name", "adam")).lower()
    kwargs = {
        "lr": float(cfg["lr"]),
        "betas": tuple(cfg.get("betas", (0.9, 0.99))),
        "weight_decay": float(cfg.get("weight_decay", 0.0)),
    }
    if name == "adam":
        return torch.optim.Adam(params, **kwargs)
    if name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    raise ValueError(f"model.optim.name: unknown optimizer {name!r}; allowed: ['adam', 'adamw']")


def build_scheduler(opt: torch.optim.Optimizer, cfg: Mapping[str, Any], total_iter: int) -> Any:
    """``model.sched``: ``name`` in {cosine, multistep, constant}, with optional linear ``warmup_iter``.

    ``cosine`` decays from ``lr`` to ``eta_min`` over ``total_iter`` steps (BasicSR ``CosineAnnealingRestartLR``, one
    period and restart weight 1); ``multistep`` halves (``gamma``) at ``milestones`` given in iterations.
    """
    name = str(cfg.get("name", "cosine")).lower()
    if name == "cosine":
        main: Any = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=total_iter, eta_min=float(cfg.get("eta_min", 0))
        )
    elif name == "multistep":
        main = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=[int(m) for m in cfg["milestones"]], gamma=float(cfg.get("gamma", 0.5))
        )
    elif name == "constant":
        main = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    else:
        raise ValueError(f"model.sched.name: unknown scheduler {name!r}; allowed: ['cosine', 'multistep', 'constant']")
    warmup = int(cfg.get("warmup_iter", 0) or 0)
    if warmup <= 0:
        return main
    ramp = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, main], milestones=[warmup])


class SRModule(L.LightningModule):
    """Paired SR training/validation/test around any registered network.

    Args:
        arch: registry name (``sresolve.archs.list_archs()``).
        arch_kwargs: constructor arguments of the network (the paper's hyper-parameters, incl. ``scale``).
        optim, sched: see :func:`build_optimizer`, :func:`build_scheduler`.
        loss: weights of the pixel losses, e.g. ``{"l1": 1.0, "fft": 0.05}``.
        ema_decay: EMA decay (0 disables the EMA net).
        total_iter: number of optimizer steps of the recipe (the scheduler's horizon).
        val: ``crop_border`` (default = scale), ``y_channel`` (True), ``tile``/``tile_overlap``/``max_pixels`` for
            large validation images, ``tta`` (×8 self-ensemble), ``log_images`` (val images per set logged as
            LR|SR|HR crops), ``lpips`` / ``lpips_net`` / ``lpips_backbone`` and ``niqe`` / ``niqe_model`` (the
            perceptual metrics, off by default; a missing weights or model file skips the metric with one warning,
            :func:`sresolve.metrics.perceptual_from_config`).
        compile: ``torch.compile`` the network's training forward (:meth:`compile_target`) with ``compile_backend``;
            the compiled wrapper stays out of the module tree, so checkpoints and exported weights keep plain keys
            (no ``_orig_mod.``), and validation/test run the eager network, so images of any size never recompile.
        channels_last: NHWC memory format for the networks and the image batches (faster convolutions on GPUs with
            tensor cores, notably in bf16; ``benchmarks/bench_train.py`` measures it per family).
    """

    def __init__(
        self,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        optim: Mapping[str, Any],
        sched: Mapping[str, Any],
        loss: Mapping[str, float],
        ema_decay: float = 0.999,
        total_iter: int = 500_000,
        val: Mapping[str, Any] | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = self.build_network(arch, arch_kwargs)
        self.scale = int(self.net.scale)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1), got {ema_decay}")
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False).eval() if ema_decay > 0 else None
        self.criterion = WeightedLoss(loss)
        val = dict(val or {})
        self.crop_border = int(val.get("crop_border") if val.get("crop_border") is not None else self.scale)
        self.y_channel = bool(val.get("y_channel", True))
        self.val_tile = val.get("tile")
        self.val_overlap = int(val.get("tile_overlap", 32))
        self.val_max_pixels = val.get("max_pixels")
        self.log_images = int(val.get("log_images", 1))
        self.val_tta = bool(val.get("tta", False))
        self.val_psnr = nn.ModuleList()
        self.val_ssim = nn.ModuleList()
        # LPIPS / NIQE (optional): the networks / models stay out of the module tree (no checkpoint keys); per-loader
        # means in val_lpips / val_niqe (set_val_names).
        perceptual = perceptual_from_config(val, prefix="val.", logger=log)
        object.__setattr__(self, "_perceptual", perceptual)
        self.val_lpips = nn.ModuleList()
        self.val_niqe = nn.ModuleList()
        self.val_names: list[str] = []
        self._image_rows: dict[int, Tensor] = {}
        self.nonfinite_steps = 0  # NaN/Inf guard (on_before_optimizer_step): skipped steps in the run, in a row
        self._nonfinite_run: dict[int, int] = {}  # per optimizer (a GAN's generator and discriminator apart)
        self._step_skipped = False

    # ------------------------------------------------------------------ networks
    def build_network(self, arch: str, arch_kwargs: Mapping[str, Any]) -> nn.Module:
        """The trained network (``hparams`` are already saved; subclasses may build a composite)."""
        return archs.create(arch, **dict(arch_kwargs))

    @property
    def eval_net(self) -> nn.Module:
        """The network used for validation, test and export: the EMA net when there is one."""
        return self.net_ema if self.net_ema is not None else self.net

    def forward(self, lr: Tensor) -> Tensor:
        return upscale(
            self.eval_net,
            lr,
            tile=self.val_tile,
            overlap=self.val_overlap,
            max_pixels=self.val_max_pixels,
            tta=self.val_tta,
        )

    def setup(self, stage: str) -> None:
        if self.hparams.get("channels_last", False):
            self.to(memory_format=torch.channels_last)  # conv weights NHWC; batches follow (on_*_batch_start)
        if stage == "fit" and self.hparams.compile:
            # Kept out of the module tree so state-dict keys never carry ``_orig_mod.``.
            target = torch.compile(self.compile_target(), backend=self.hparams.get("compile_backend", "inductor"))
            object.__setattr__(self, "_train_forward", target)
        names = getattr(getattr(self.trainer, "datamodule", None), "val_names", None) if self._trainer else None
        self.set_val_names(list(names) if names else ["val"])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """With ``channels_last``, the batch's images (4-D tensors, also in nested dicts) move to NHWC, in place."""
        if self.hparams.get("channels_last", False):
            _to_channels_last(batch)

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_train_batch_start(batch, batch_idx)

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_train_batch_start(batch, batch_idx)

    def on_fit_start(self) -> None:
        reason = self.fp16_refusal()
        precision = str(self.trainer.precision)
        if reason is not None and precision.startswith("16"):
            raise ValueError(f"trainer.precision={precision}: {reason}; use trainer.precision=bf16-mixed")

    def fp16_refusal(self) -> str | None:
        """Why fp16 training is refused for this network (its class's ``fp16_unsafe``), or None when it is allowed."""
        return getattr(self.net, "fp16_unsafe", None)

    def compile_target(self) -> nn.Module:
        """What ``compile=True`` compiles for training: the network (subclasses may narrow it)."""
        return self.net

    def set_val_names(self, names: list[str]) -> None:
        """One metric set per validation loader: PSNR, SSIM and, when on, LPIPS / NIQE, each shaving that loader's
        :meth:`val_borders`."""
        if names == self.val_names:
            return
        self.val_names = names
        borders = self.val_borders(names)
        perceptual: PerceptualMetrics = self.__dict__["_perceptual"]
        self.val_psnr = nn.ModuleList(PSNRY(b, y_channel=self.y_channel) for b in borders).to(self.device)
        self.val_ssim = nn.ModuleList(SSIMY(b, y_channel=self.y_channel) for b in borders).to(self.device)
        lpips, niqe = perceptual.lpips, perceptual.niqe_model
        self.val_lpips = nn.ModuleList(LPIPSMetric(lpips, b) for b in borders if lpips is not None).to(self.device)
        self.val_niqe = nn.ModuleList(NIQEMetric(niqe, b) for b in borders if niqe is not None).to(self.device)

    def val_borders(self, names: list[str]) -> list[int]:
        """Pixels shaved by the metrics of each validation loader: ``val.crop_border`` (default: the scale)."""
        return [self.crop_border] * len(names)

    # ------------------------------------------------------------------ training
    def train_forward_kwargs(self, batch: Mapping[str, Tensor]) -> dict[str, Any]:
        """Extra arguments of the network's training call (none for paired SR; per-sample scale and query
        coordinates for arbitrary-scale networks)."""
        return {}

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        fwd = self.__dict__.get("_train_forward", self.net)
        sr = fwd(batch["lr"], **self.train_forward_kwargs(batch))
        total, parts = self.criterion(sr, batch["hr"])
        self.log("train/loss", total, prog_bar=True)
        for name, value in parts.items():
            self.log(f"train/l_{name}", value)
        return total

    #: Consecutive skipped (non-finite) steps after which the run stops (train config ``nonfinite_limit``).
    nonfinite_limit: int = 10

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """NaN/Inf guard, before every optimizer step (automatic and manual optimisation): when a gradient is not
        finite (a NaN/Inf loss makes them so), the gradients are dropped, so the optimizer leaves the weights and its
        own state untouched, and the EMA is not updated; the step still counts (``global_step``, scheduler, data
        position stay in step, also across DDP ranks, which all see the same all-reduced gradients). Skipped steps
        are counted (``train/nonfinite_steps``, kept in checkpoints); ``nonfinite_limit`` in a row of one optimizer
        (a GAN's finite discriminator steps do not reset its generator's count) stop the run with a message naming
        the step. Under fp16 the GradScaler already skips such steps and this guard stays out."""
        self._step_skipped = False
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        key = id(optimizer)
        if not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            self._nonfinite_run[key] = 0
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self._step_skipped = True
        self.nonfinite_steps += 1
        run = self._nonfinite_run[key] = self._nonfinite_run.get(key, 0) + 1
        self.log("train/nonfinite_steps", float(self.nonfinite_steps))
        log.warning(
            "non-finite loss or gradients at step %d: step skipped (%d in a row, %d in the run)",
            self.global_step,
            run,
            self.nonfinite_steps,
        )
        if run >= self.nonfinite_limit:
            raise FloatingPointError(
                f"{run} consecutive training steps with a non-finite loss or gradients, the last at "
                f"step {self.global_step}: the run stops (nonfinite_limit={self.nonfinite_limit}). Train in "
                "trainer.precision=bf16-mixed rather than fp16, lower model.optim.lr, or check the data"
            )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer step, then the EMA update — before any ``on_train_batch_end`` callback (checkpointing)."""
        super().optimizer_step(*args, **kwargs)
        if self.net_ema is not None and not self._step_skipped:
            self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema = d·ema + (1-d)·param`` over parameters; buffers copied."""
        assert self.net_ema is not None
        decay = float(self.hparams.ema_decay)
        ema_params = dict(self.net_ema.named_parameters())
        for name, param in self.net.named_parameters():
            ema_params[name].lerp_(param.detach(), 1.0 - decay)
        ema_buffers = dict(self.net_ema.named_buffers())
        for name, buf in self.net.named_buffers():
            ema_buffers[name].copy_(buf)

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.net.parameters(), self.hparams.optim)
        sched = build_scheduler(opt, self.hparams.sched, int(self.hparams.total_iter))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ validation / test
    def eval_forward_kwargs(self, batch: Mapping[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Extra arguments of :meth:`forward` for an evaluation batch (none here; the output scale for
        arbitrary-scale networks)."""
        return {}

    def _shared_eval(self, batch: Mapping[str, Any], dataloader_idx: int) -> Tensor:
        lr, hr = batch["lr"], batch["hr"]
        kwargs = self.eval_forward_kwargs(batch, dataloader_idx)
        sr = self(lr, **kwargs)
        if sr.shape != hr.shape:
            name = batch.get("name", ["?"])
            where = f" at x{kwargs['scale']:g}" if "scale" in kwargs else ""
            raise ValueError(f"SR output {tuple(sr.shape)}{where} does not match HR {tuple(hr.shape)} for image {name}")
        for metrics in (self.val_psnr, self.val_ssim, self.val_lpips, self.val_niqe):
            if len(metrics):
                metrics[dataloader_idx].update(sr, hr)
        return sr

    def _epoch_means(self, i: int) -> dict[str, Tensor]:
        """``{"psnr", "ssim"[, "lpips", "niqe"]: mean}`` of loader ``i`` (float32), and reset those metrics."""
        out = {}
        metrics = (("psnr", self.val_psnr), ("ssim", self.val_ssim), ("lpips", self.val_lpips), ("niqe", self.val_niqe))
        for name, per_loader in metrics:
            if i < len(per_loader):
                out[name] = per_loader[i].compute().float()
                per_loader[i].reset()
        return out

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        sr = self._shared_eval(batch, dataloader_idx)
        if batch_idx < self.log_images and self.global_rank == 0:
            self._image_rows[dataloader_idx * 1000 + batch_idx] = comparison_row(batch["lr"][0], sr[0], batch["hr"][0])

    def on_validation_epoch_end(self) -> None:
        for i, name in enumerate(self.val_names):
            means = self._epoch_means(i)
            for metric, value in means.items():
                self.log(f"val/{name}/{metric}", value, sync_dist=False)
            if i == 0:  # the first set is the one ModelCheckpoint tracks as ``val/psnr``
                self.log("val/psnr", means["psnr"], prog_bar=True, sync_dist=False)
        if self._image_rows:
            self._log_images()
            self._image_rows.clear()

    def test_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._shared_eval(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        for i, name in enumerate(self.val_names):
            for metric, value in self._epoch_means(i).items():
                self.log(f"test/{name}/{metric}", value)

    def _log_images(self) -> None:
        """LR (nearest-upsampled) | SR | HR crops: to wandb/TensorBoard when used, else PNGs in the run folder."""
        from sresolve.data.io import write_image

        grid = torch.cat([row for _, row in sorted(self._image_rows.items())], dim=1)
        tag, step = "val/comparison", self.global_step
        for logger in self.loggers:
            exp = getattr(logger, "experiment", None)
            if type(logger).__name__ == "WandbLogger":
                # wandb (0.2x+) casts pixel values to uint8 as they are: send 0..255, rounded, not floats in [0, 1]
                logger.log_image(key=tag, images=[grid.mul(255).round().to(torch.uint8)], step=step)
                return
            if hasattr(exp, "add_image"):
                exp.add_image(tag, grid, step)
                return
        out_dir = Path(self.trainer.default_root_dir) / "val_images"
        write_image(out_dir / f"{step:08d}.png", grid)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nonfinite_steps"] = self.nonfinite_steps
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state_to_tensors(np.random.get_state()),
            "python": _python_state_to_tensors(random.getstate()),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_steps = int(checkpoint.get("nonfinite_steps", 0))
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        np.random.set_state(_numpy_state_from_tensors(states["numpy"]))
        random.setstate(_python_state_from_tensors(states["python"]))

    def load_pretrained(
        self,
        path: str | Path,
        key: str | None = "params_ema",
        strict: bool = True,
        exclude: Sequence[str] = (),
    ) -> InitReport:
        """Initialise net (and EMA net) from a weights file, BasicSR ``pretrain_network_g`` semantics.

        The file may be a sresolve ``.ckpt`` (EMA weights preferred), an exported ``net_g_*.pth`` / ``.safetensors``
        or an official BasicSR ``.pth`` (``params_ema``, falling back to ``params`` as BasicSR does, or a bare dict).
        Key matching is :func:`sresolve.pretrain.transfer_weights`: keys matching ``exclude`` (e.g. ``upsample.*``
        for cross-scale initialisation) are not transferred; with ``strict`` every other key must be present with the
        same shape, otherwise :class:`~sresolve.pretrain.PretrainMismatchError` names the keys. The EMA net starts as
        a copy of the initialised net (BasicSR loads the same file into both). Returns the :class:`InitReport`.
        """
        try:
            state = load_state_dict(path, key=key)
        except KeyError:
            if key == "params_ema":  # BasicSR falls back to 'params' (and we to the usual containers)
                state = load_state_dict(path, key=None)
            else:
                raise
        hint = "pretrain.exclude lists the keys allowed to differ; pretrain.strict=false loads what fits"
        report = transfer_weights(self.net, state, exclude=exclude, strict=strict, source=str(path), hint=hint)
        if self.net_ema is not None:
            self.net_ema.load_state_dict(self.net.state_dict())
        return report

    def export_weights(self, out_dir: str | Path, stem: str = "net_g_latest") -> dict[str, Path]:
        """Write ``<stem>.pth`` (BasicSR ``{'params', 'params_ema'}``) and ``<stem>.safetensors`` (EMA weights)."""
        raw, ema = self.weights_to_export()
        return self.write_weights(Path(out_dir), stem, raw, ema, self.scale)

    def weights_to_export(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The raw and the evaluated (EMA when there is one) network weights, on the CPU."""
        raw = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        ema = {k: v.detach().cpu() for k, v in self.eval_net.state_dict().items()}
        return raw, ema

    def write_weights(
        self, out_dir: Path, stem: str, raw: dict[str, Tensor], ema: dict[str, Tensor], scale: int
    ) -> dict[str, Path]:
        """``<stem>.pth`` (BasicSR layout; ``params_ema`` only when there is an EMA net) and ``<stem>.safetensors``
        (``ema``, with the arch and ``scale`` as metadata)."""
        pth, st = out_dir / f"{stem}.pth", out_dir / f"{stem}.safetensors"
        export_basicsr(pth, raw, ema if self.net_ema is not None else None)
        save_safetensors(st, ema, metadata={"arch": str(self.hparams.arch), "scale": str(scale)})
        return {"basicsr": pth, "safetensors": st}


def comparison_row(lr: Tensor, sr: Tensor, hr: Tensor, crop: int = 192) -> Tensor:
    """A 3×crop×3crop strip: the LR (nearest-upsampled to the HR size, any scale) | SR | HR centre crops of one image,
    for logging."""
    h, w = hr.shape[-2:]
    up = torch.nn.functional.interpolate(lr[None].float(), size=(h, w), mode="nearest")[0]
    c = min(crop, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    parts = [t[:, top : top + c, left : left + c].float().clamp(0, 1).cpu() for t in (up, sr, hr)]
    return torch.cat(parts, dim=2)


# RNG states as tensors/ints so checkpoints load with ``weights_only=True``.
def _numpy_state_to_tensors(state: tuple) -> dict[str, Any]:
    return {
        "keys": torch.from_numpy(state[1].astype(np.int64)),
        "pos": int(state[2]),
        "has_gauss": int(state[3]),
        "gauss": float(state[4]),
    }


def _numpy_state_from_tensors(d: Mapping[str, Any]) -> tuple:
    return ("MT19937", d["keys"].numpy().astype(np.uint32), int(d["pos"]), int(d["has_gauss"]), float(d["gauss"]))


def _python_state_to_tensors(state: tuple) -> dict[str, Any]:
    return {
        "version": int(state[0]),
        "internal": torch.tensor(state[1], dtype=torch.int64),
        "gauss": state[2] if state[2] is None else float(state[2]),
    }


def _python_state_from_tensors(d: Mapping[str, Any]) -> tuple:
    return (int(d["version"]), tuple(int(x) for x in d["internal"].tolist()), d["gauss"])


def _to_channels_last(batch: Any) -> None:
    """Replace every 4-D tensor of a (nested) dict/list batch by its NHWC copy."""
    items = batch.items() if isinstance(batch, dict) else enumerate(batch) if isinstance(batch, list) else ()
    for key, value in list(items):
        if isinstance(value, Tensor) and value.ndim == 4:
            batch[key] = value.contiguous(memory_format=torch.channels_last)
        elif isinstance(value, dict | list):
            _to_channels_last(value)
