"""Pixel losses used by the SR recipes.

``FFTLoss`` is the frequency term of SAFMN (Sun et al., ICCV 2023, Sec. 3.4 "Loss function"): the L1 distance
between the real and imaginary parts of the 2-D real FFT of prediction and target, added to the L1 pixel loss
with weight 0.05 in the official recipes.

The AMRSR / SRNTT terms (spec ``archs_eqsr_amrsr.md`` B8, choice C9) follow the pixel losses: :class:`PerceptualLoss`
(MSE on VGG-19 relu5_1), :class:`GramTextureLoss` (Gram matrices of the swapped reference features, with SRNTT's
optional fixed gate :func:`srntt_texture_gate`) and the adversarial terms, WGAN-GP (:func:`wgan_gp_d_loss`,
:func:`wgan_g_loss`, :func:`gradient_penalty`) and the BCE-with-logits alternative (:func:`bce_d_loss`,
:func:`bce_g_loss`). Discriminator losses return ``(loss, parts)``; generator losses return the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sresolve.archs.vgg import VGG19Features
from sresolve.ops.refmatch import VGG_LEVELS


class L1Loss(nn.Module):
    """Mean absolute error (BasicSR ``L1Loss`` with ``reduction='mean'``)."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(pred, target)


class FFTLoss(nn.Module):
    """L1 between ``rfft2`` spectra (real and imaginary parts stacked), default 'backward' normalisation."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        pred_f = torch.fft.rfft2(pred.float())
        target_f = torch.fft.rfft2(target.float())
        return F.l1_loss(torch.view_as_real(pred_f), torch.view_as_real(target_f))


LOSSES: dict[str, type[nn.Module]] = {"l1": L1Loss, "fft": FFTLoss}


class WeightedLoss(nn.Module):
    """Weighted sum of named losses, e.g. ``{"l1": 1.0, "fft": 0.05}``; returns the total and each weighted term."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(LOSSES))
        if unknown:
            raise ValueError(f"model.loss: unknown loss name(s) {unknown}; allowed: {sorted(LOSSES)}")
        active = {k: float(v) for k, v in weights.items() if float(v) != 0.0}
        if not active:
            raise ValueError(f"model.loss: at least one loss needs a non-zero weight, got {dict(weights)}")
        self.weights = active
        self.terms = nn.ModuleDict({k: LOSSES[k]() for k in active})

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {k: self.weights[k] * self.terms[k](pred, target) for k in self.weights}
        return torch.stack(list(parts.values())).sum(), parts


# ---------------------------------------------------------------------------------------------- AMRSR / SRNTT (B8)
#: VGG level → resolution of its swapped map relative to the LR (relu3_1 ×1, relu2_1 ×2, relu1_1 ×4; spec B1).
TEXTURE_LEVEL_SCALES: dict[str, int] = {name: factor for name, _, factor in VGG_LEVELS}


class PerceptualLoss(nn.Module):
    """``L_per = MSE(VGG_layer(SR), VGG_layer(HR))`` with ``layer = relu5_1`` (SRNTT TF default; spec B8).

    ``vgg`` is the shared frozen :class:`~sresolve.archs.vgg.VGG19Features` (it must return ``layer``); the HR branch
    runs without autograd, gradients flow to SR only (the VGG parameters never require grad). Pass ``sr_feats`` when
    the VGG features of SR were already computed for the texture loss, to skip a second forward.
    """

    def __init__(self, vgg: VGG19Features, layer: str = "relu5_1") -> None:
        super().__init__()
        if layer not in vgg.layers:
            raise ValueError(f"PerceptualLoss: the VGG extractor returns {list(vgg.layers)}, not layer={layer!r}")
        self.vgg = vgg
        self.layer = layer

    def forward(self, sr: Tensor, hr: Tensor, sr_feats: Mapping[str, Tensor] | None = None) -> Tensor:
        f_sr = sr_feats[self.layer] if sr_feats is not None else self.vgg(sr)[self.layer]
        with torch.no_grad():
            f_hr = self.vgg(hr)[self.layer]
        return F.mse_loss(f_sr.float(), f_hr.float())


def gram_matrix(feat: Tensor) -> Tensor:
    """``G = F Fᵀ`` per sample, with ``F`` = ``feat`` (B×C×H×W) reshaped to B×C×(H·W); returns B×C×C in float32."""
    f = feat.float().flatten(2)
    return torch.bmm(f, f.transpose(1, 2))


def srntt_texture_gate(weight: Tensor, level_scale: int) -> Tensor:
    """SRNTT's fixed texture-loss gate ``S_v = sigmoid(−20·up_v(W) + 0.65)`` (spec B8).

    ``weight`` is the B×1×h×w matching confidence at the LR (relu3_1) resolution, ``level_scale`` the level's size
    ratio (1 relu3_1, 2 relu2_1, 4 relu1_1; :data:`TEXTURE_LEVEL_SCALES`); ``up_v`` is bicubic. Note: this gate
    *down-weights* well-matched regions (W → 1 gives S ≈ 0); it is SRNTT's code as written, while the paper text reads
    otherwise. Kept as an option; :class:`GramTextureLoss` defaults to no gate (S_v = 1).
    """
    if level_scale < 1:
        raise ValueError(f"srntt_texture_gate: level_scale must be >= 1, got {level_scale}")
    up = weight
    if level_scale != 1:
        up = F.interpolate(weight, scale_factor=level_scale, mode="bicubic", align_corners=False)
    return torch.sigmoid(-20.0 * up + 0.65)


def srntt_texture_gates(weight: Tensor, levels: Sequence[str] = ("relu3_1", "relu2_1", "relu1_1")) -> dict[str, Tensor]:
    """:func:`srntt_texture_gate` for each VGG level name, ready for :class:`GramTextureLoss`'s ``gate``."""
    return {v: srntt_texture_gate(weight, TEXTURE_LEVEL_SCALES[v]) for v in levels}


class GramTextureLoss(nn.Module):
    """Texture loss of SRNTT TF on the swapped features (spec B8, ``L_tex``):

    ``L_tex = (1/N) Σ_v mean_{b,i,j}[(G(φ_v(SR)·S_v) − G(O_v·S_v))²_ij] / (4·(H_v·W_v·C_v)²)``

    over the ``levels`` (relu3_1, relu2_1, relu1_1; N = 3), where ``G(F) = F Fᵀ`` is the C×C Gram matrix of the
    features flattened to C×(H·W), ``φ_v(SR)`` the VGG features of the SR output, ``O_v`` the swapped reference
    features at the same level and ``S_v`` an optional B×1×H_v×W_v gate (1 without gating, SRNTT's default; SRNTT's
    fixed gate is :func:`srntt_texture_gate`, which down-weights well-matched regions as the code is written).
    Computed in float32 (the Gram entries and the normaliser are large).
    """

    def __init__(self, levels: Sequence[str] = ("relu3_1", "relu2_1", "relu1_1")) -> None:
        super().__init__()
        if not levels:
            raise ValueError("GramTextureLoss: levels must not be empty")
        self.levels = tuple(levels)

    def level_losses(
        self,
        sr_feats: Mapping[str, Tensor],
        swapped: Mapping[str, Tensor],
        gate: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The per-level terms (before the mean over levels)."""
        out: dict[str, Tensor] = {}
        for v in self.levels:
            f, o = sr_feats[v], swapped[v]
            if f.shape != o.shape:
                raise ValueError(
                    f"GramTextureLoss: {v}: SR features {tuple(f.shape)} and swapped features {tuple(o.shape)} differ"
                )
            if gate is not None:
                s = gate[v]
                f, o = f * s, o * s
            c, h, w = f.shape[1:]
            diff = gram_matrix(f) - gram_matrix(o)
            out[v] = diff.square().mean() / (4.0 * float(h * w * c) ** 2)
        return out

    def forward(
        self,
        sr_feats: Mapping[str, Tensor],
        swapped: Mapping[str, Tensor],
        gate: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        return torch.stack(list(self.level_losses(sr_feats, swapped, gate).values())).mean()


def gradient_penalty(
    d: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    alpha: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP penalty ``E[(‖∇_x̂ D(x̂)‖₂ − 1)²]`` with ``x̂ = α·real + (1−α)·fake`` (spec B8; Gulrajani et al. 2017).

    ``α ~ U(0, 1)`` per sample (drawn with ``generator`` when given), or the B-element / broadcastable ``alpha``.
    The gradient is taken with ``create_graph=True`` so that backpropagating the penalty reaches D's parameters.
    The 2-norm is over all of a sample's elements.
    """
    real, fake = real.detach(), fake.detach()
    if alpha is None:
        device = generator.device if generator is not None else real.device
        alpha = torch.rand(real.shape[0], generator=generator, device=device).to(real.device, real.dtype)
    if alpha.ndim == 1:
        alpha = alpha.view(-1, *([1] * (real.ndim - 1)))
    x_hat = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
    with torch.enable_grad():
        out = d(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return (norm - 1.0).square().mean()


def wgan_gp_d_loss(
    d: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    gp_weight: float = 10.0,
    alpha: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """WGAN-GP critic loss ``E[D(fake)] − E[D(real)] + λ·GP`` (SRNTT TF default, λ = 10; spec B8, C9).

    ``fake`` is detached here (the D step never updates G). Returns the loss and detached parts for logging:
    ``d_real``, ``d_fake`` (mean critic values), ``wasserstein`` (= d_real − d_fake) and ``gp`` (unweighted).
    """
    fake = fake.detach()
    d_real = d(real).mean()
    d_fake = d(fake).mean()
    loss = d_fake - d_real
    parts = {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "wasserstein": (d_real - d_fake).detach()}
    if gp_weight:
        gp = gradient_penalty(d, real, fake, alpha=alpha, generator=generator)
        loss = loss + gp_weight * gp
        parts["gp"] = gp.detach()
    return loss, parts


def wgan_g_loss(d_fake: Tensor) -> Tensor:
    """WGAN generator loss ``−E[D(fake)]`` (spec B8); ``d_fake`` = D(SR) with the graph to G."""
    return -d_fake.mean()


def bce_d_loss(d_real: Tensor, d_fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Standard GAN discriminator loss on logits (choice C9 alternative): ``BCE(D(real), 1) + BCE(D(fake), 0)``.

    Pass ``d_fake`` computed on a detached SR. Returns the sum and its two detached terms ``real`` and ``fake``.
    """
    l_real = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
    l_fake = F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    return l_real + l_fake, {"real": l_real.detach(), "fake": l_fake.detach()}


def bce_g_loss(d_fake: Tensor) -> Tensor:
    """Non-saturating generator loss on logits: ``BCE(D(fake), 1)`` (choice C9 alternative)."""
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
