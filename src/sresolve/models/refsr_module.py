"""``RefSRGANModule``: training and evaluation of reference-based SR networks (AMRSR), spec archs_eqsr_amrsr.md B8,
B9, B13 (C9, C11, C16, C17) and C.

It extends :class:`~sresolve.models.sr_module.SRModule` (validation metrics, checkpoints with RNG states, export,
optional EMA are shared) with what a multi-reference GAN needs:

* batches carry the references (:mod:`sresolve.data.multiref`); the network matches them (no gradient) and the
  generator fuses the swapped features: ``net(lr, refs)``;
* manual optimisation of a generator and a discriminator (:class:`~sresolve.archs.amrsr.SRNTTDiscriminator`):
  ``gan.d_steps`` (2, SRNTT/TTSR) discriminator updates per generator update, WGAN-GP (λ = 10) or BCE (C9);
* the losses of B8: L = w_rec·L1 + w_per·MSE(relu5_1) + w_adv·L_adv + w_tex·Gram texture loss, weights
  ``loss.l1/perceptual/adversarial/texture`` (paper 1, 1e-4, 1e-6, 1e-4);
* the reconstruction-only warm-up: ``gan.warmup_iter`` generator iterations with L1 only (the paper's 5 epochs), then
  every loss (the paper's 100 epochs); ``model.sched`` decays both learning rates (SRNTT: ×0.1 at half the main phase);
* iterations count generator updates (as BasicSR counts them): discriminator updates go through the strategy's
  optimizer step without advancing ``global_step``, so ``total_iter``, ``val_freq`` and ``save_freq`` keep their
  meaning;
* the RefSR evaluation convention (C12): Y channel, no border crop (``val.crop_border: 0``; BasicSR's 4 px on demand);
* matching online under ``no_grad`` (C13: needed for random crops, augmentation and random distractors), with an
  optional cache of the validation images' swapped features (``val.cache_matching``; off by default: the relu1_1 map
  alone is 64·H·W floats per image).

The frozen VGG-19 of the losses (up to relu5_1) is not part of the checkpoint: it is rebuilt from ``vgg_weights``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sresolve.models.sr_module import SRModule, build_optimizer, build_scheduler

__all__ = ["RefSRGANModule"]

# Checkpoints are written after the generator step of an iteration (like BasicSR's); Lightning's note about
# pre-optimisation states under manual optimisation does not apply.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
# The matcher's frozen VGG stays in eval mode on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

#: Loss names of ``model.loss`` understood here and their paper weights (B8).
PAPER_LOSS_WEIGHTS = {"l1": 1.0, "perceptual": 1e-4, "adversarial": 1e-6, "texture": 1e-4}
GAN_DEFAULTS: dict[str, Any] = {
    "warmup_iter": 0,  # generator iterations with the reconstruction loss only
    "d_steps": 2,  # discriminator updates per generator update (SRNTT TF, TTSR GAN_k)
    "adversarial": "wgan_gp",  # or "bce" (C9)
    "gp_weight": 10.0,
    "d_norm": "none",  # "batch" = SRNTT's BN (C9)
    "d_optim": {"name": "adam", "lr": 1e-4, "betas": [0.0, 0.9], "weight_decay": 0.0},  # TTSR's D optimiser
    "texture_gate": "none",  # "srntt": sigmoid(-20·up(W) + 0.65) (B8)
    "perceptual_layer": "relu5_1",
    "train_with_truth": False,  # C17: an extra pass with O = VGG(HR), W = 1
}


def _noop() -> None:
    return None


class RefSRGANModule(SRModule):
    """Multi-reference SR training (GAN or reconstruction only) around a registered network whose forward is
    ``net(lr, refs)`` and which exposes ``match(lr, refs)`` and ``generator(lr, o3, o2, o1, weight)`` (AMRSR).

    Arguments as :class:`SRModule`, plus ``gan`` (keys of :data:`GAN_DEFAULTS`) and ``hr_patch_size`` (the
    discriminator's input side). ``loss`` keys: ``l1``, ``perceptual``, ``adversarial``, ``texture``.
    """

    def __init__(
        self,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        optim: Mapping[str, Any],
        sched: Mapping[str, Any],
        loss: Mapping[str, float],
        ema_decay: float = 0.0,
        total_iter: int = 138_495,
        val: Mapping[str, Any] | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        channels_last: bool = False,
        gan: Mapping[str, Any] | None = None,
        hr_patch_size: int = 160,
    ) -> None:
        from sresolve.archs.amrsr import SRNTTDiscriminator
        from sresolve.archs.vgg import VGG19Features
        from sresolve.models.losses import GramTextureLoss, PerceptualLoss

        unknown = sorted(set(loss) - set(PAPER_LOSS_WEIGHTS))
        if unknown:
            raise ValueError(f"model.loss: unknown loss name(s) {unknown}; allowed: {sorted(PAPER_LOSS_WEIGHTS)}")
        weights = {k: float(loss.get(k, 0.0)) for k in PAPER_LOSS_WEIGHTS}
        if weights["l1"] <= 0:
            raise ValueError(f"model.loss.l1 must be > 0 (the reconstruction loss drives the warm-up), got {weights}")
        gan_cfg = {**GAN_DEFAULTS, **dict(gan or {})}
        unknown = sorted(set(gan_cfg) - set(GAN_DEFAULTS))
        if unknown:
            raise ValueError(f"model.gan: unknown key(s) {unknown}; allowed: {sorted(GAN_DEFAULTS)}")
        if gan_cfg["adversarial"] not in ("wgan_gp", "bce"):
            raise ValueError(f"model.gan.adversarial={gan_cfg['adversarial']!r}: allowed ['wgan_gp', 'bce']")
        if gan_cfg["texture_gate"] not in ("none", "srntt"):
            raise ValueError(f"model.gan.texture_gate={gan_cfg['texture_gate']!r}: allowed ['none', 'srntt']")
        val = dict(val or {})
        if val.get("crop_border") is None:
            val["crop_border"] = 0  # RefSR convention (C12)
        super().__init__(
            arch,
            arch_kwargs,
            optim,
            sched,
            {"l1": 1.0},
            ema_decay,
            total_iter,
            val,
            compile,
            compile_backend,
            channels_last,
        )
        if not getattr(self.net, "needs_references", False):
            raise ValueError(f"model.task=refsr_gan needs a reference-based network (amrsr); {arch!r} is not one")
        self.automatic_optimization = False
        self.loss_weights = weights
        self.gan = gan_cfg
        self.discriminator = (
            SRNTTDiscriminator(patch_size=int(hr_patch_size), norm=str(gan_cfg["d_norm"]))
            if weights["adversarial"] > 0
            else None
        )
        layers = ["relu1_1", "relu2_1", "relu3_1", str(gan_cfg["perceptual_layer"])]
        needs_vgg = weights["perceptual"] > 0 or weights["texture"] > 0 or gan_cfg["train_with_truth"]
        # Kept out of the module tree: frozen, rebuilt from the same file, never written to checkpoints.
        loss_vgg = VGG19Features(layers, weights=dict(arch_kwargs).get("vgg_weights")) if needs_vgg else None
        object.__setattr__(self, "_loss_vgg", loss_vgg)
        perceptual = PerceptualLoss(loss_vgg, layers[-1]) if loss_vgg is not None else None
        object.__setattr__(self, "_perceptual_loss", perceptual)
        self.texture_loss = GramTextureLoss()
        self.cache_matching = bool(val.get("cache_matching", False))
        self._match_cache: dict[Any, Any] = {}

    # ------------------------------------------------------------------ plumbing
    def _apply(self, fn: Any, recurse: bool = True) -> RefSRGANModule:
        super()._apply(fn, recurse)
        if self._loss_vgg is not None:  # device/dtype moves reach the VGG kept outside the module tree
            self._loss_vgg._apply(fn)
        return self

    def compile_target(self) -> nn.Module:
        """``model.compile`` compiles the generator (the matcher is Python loops over references and parts)."""
        return self.net.generator

    def forward(  # type: ignore[override]
        self, lr: Tensor, refs: Any = None, names: Any = None, cache_key: Any = None
    ) -> Tensor:
        """SR of ``lr`` with its references; with ``cache_key`` (``val.cache_matching``, choice C13) the swapped
        features of an evaluation image are computed once and reused at every later validation (kept on the CPU)."""
        net = self.eval_net
        swapped = self._match_cache.get(cache_key) if cache_key is not None else None
        if swapped is None and cache_key is not None and refs is not None:
            swapped = self._match_cache[cache_key] = net.match(lr, refs, names).to("cpu")
        return net(lr, refs, names=names, swapped=swapped)

    def eval_forward_kwargs(self, batch: Mapping[str, Any], dataloader_idx: int) -> dict[str, Any]:
        key = None
        if self.cache_matching:  # the matcher is frozen: same image, same references, same settings → same maps
            matcher = self.eval_net.matcher
            key = (dataloader_idx, tuple(batch["name"]), str(batch.get("ref_names")), matcher.extra_repr())
        return {"refs": batch["refs"], "names": batch.get("name"), "cache_key": key}

    def fp16_refusal(self) -> str | None:
        return "fp16 overflows in the Gram texture loss and WGAN-GP"

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        missing = [k for k in ("lr", "hr", "refs") if k not in batch]
        if missing:
            raise KeyError(f"reference-based training batches need {missing} (use data=samples_multiref / cufed)")
        opts = self.optimizers()
        g_opt, *d_opt = opts if isinstance(opts, list) else [opts]  # amrsr_l2: the generator's only
        lr, hr = batch["lr"], batch["hr"]
        swapped = self.net.match(lr, batch["refs"], names=batch.get("name"))
        generator = self.__dict__.get("_train_forward", self.net.generator)
        sr = generator(lr, swapped.o3, swapped.o2, swapped.o1, swapped.weight)
        full = self.global_step >= int(self.gan["warmup_iter"])
        if full and self.discriminator is not None:
            for _ in range(int(self.gan["d_steps"])):
                self._discriminator_step(d_opt[0], hr, sr.detach())
        total, parts = self._generator_loss(sr, hr, swapped, full)
        if self.gan["train_with_truth"]:
            truth = self._truth_features(hr)
            sr_truth = generator(lr, *truth, torch.ones_like(swapped.weight))
            parts["truth"] = self.loss_weights["l1"] * F.l1_loss(sr_truth, hr)
            total = total + parts["truth"]
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        g_opt.step()
        with warnings.catch_warnings():  # the D schedule also advances during the warm-up, before D's first step
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            for sched in self._schedulers():
                sched.step()
        if self.net_ema is not None and not self._step_skipped:  # the NaN/Inf guard skipped the G step
            self.update_ema()
        self.log("train/loss", total, prog_bar=True)
        self.log("train/gan_phase", float(full))
        for name, value in parts.items():
            self.log(f"train/l_{name}", value)
        return total

    def _schedulers(self) -> list[Any]:
        scheds = self.lr_schedulers()
        if scheds is None:
            return []
        return list(scheds) if isinstance(scheds, (list, tuple)) else [scheds]

    def _generator_loss(self, sr: Tensor, hr: Tensor, swapped: Any, full: bool) -> tuple[Tensor, dict[str, Tensor]]:
        from sresolve.models.losses import bce_g_loss, srntt_texture_gates, wgan_g_loss

        w = self.loss_weights
        parts = {"rec": w["l1"] * F.l1_loss(sr, hr)}
        if full:
            feats = None
            if w["perceptual"] > 0 or w["texture"] > 0:
                assert self._loss_vgg is not None
                feats = self._loss_vgg(sr)
            if w["perceptual"] > 0:
                parts["per"] = w["perceptual"] * self._perceptual_loss(sr, hr, sr_feats=feats)
            if w["adversarial"] > 0:
                assert self.discriminator is not None
                d_fake = self.discriminator(sr)
                adv = wgan_g_loss(d_fake) if self.gan["adversarial"] == "wgan_gp" else bce_g_loss(d_fake)
                parts["adv"] = w["adversarial"] * adv
            if w["texture"] > 0:
                gate = srntt_texture_gates(swapped.weight) if self.gan["texture_gate"] == "srntt" else None
                parts["tex"] = w["texture"] * self.texture_loss(feats, swapped.as_dict(), gate)
        return torch.stack(list(parts.values())).sum(), parts

    def _discriminator_step(self, d_opt: Any, real: Tensor, fake: Tensor) -> None:
        """One discriminator update; through the strategy's optimizer step so that precision plugins apply but the
        trainer's ``global_step`` (generator iterations) does not advance."""
        from sresolve.models.losses import bce_d_loss, wgan_gp_d_loss

        assert self.discriminator is not None
        if self.gan["adversarial"] == "wgan_gp":
            d_loss, parts = wgan_gp_d_loss(self.discriminator, real, fake, gp_weight=float(self.gan["gp_weight"]))
        else:
            d_loss, parts = bce_d_loss(self.discriminator(real), self.discriminator(fake))
        d_opt.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        self.trainer.strategy.optimizer_step(d_opt.optimizer, closure=_noop, model=self)
        self.log("train/d_loss", d_loss.detach())
        for name, value in parts.items():
            self.log(f"train/d_{name}", value.detach())

    @torch.no_grad()
    def _truth_features(self, hr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """SRNTT's "train with truth" pass (C17): the swapped maps replaced by the VGG features of the HR itself."""
        assert self._loss_vgg is not None
        f = self._loss_vgg(hr)
        return f["relu3_1"], f["relu2_1"], f["relu1_1"]

    def configure_optimizers(self) -> Any:
        total = int(self.hparams.total_iter)
        g_opt = build_optimizer(self.net.generator.parameters(), self.hparams.optim)
        opts, scheds = [g_opt], [build_scheduler(g_opt, self.hparams.sched, total)]
        if self.discriminator is not None:
            d_opt = build_optimizer(self.discriminator.parameters(), self.gan["d_optim"])
            opts.append(d_opt)
            scheds.append(build_scheduler(d_opt, self.hparams.sched, total))
        return opts, scheds
