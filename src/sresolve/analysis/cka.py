"""Centred kernel alignment (CKA) between the layer features of two SR networks (``sresolve-analyze cka``).

Linear CKA (Kornblith, Norouzi, Lee and Hinton, "Similarity of Neural Network Representations Revisited", ICML 2019,
Eq. (2)-(4)) compares two representations ``X`` (n × d1) and ``Y`` (n × d2) of the same n examples:

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)),    K = X Xᵀ,  L = Y Yᵀ.

It is invariant to orthogonal transforms and isotropic scaling of either representation (not to arbitrary invertible
linear maps) and lies in [0, 1]; CKA(X, X) = 1. Two HSIC estimators are offered (``estimator=``):

* ``"biased"``: ``tr(K H L H) / (n - 1)²`` with the centring matrix ``H`` (Gretton et al., ALT 2005), the estimator
  of Kornblith et al.; for linear kernels ``‖X̄ᵀ Ȳ‖²_F / (n - 1)²`` with column-centred ``X̄, Ȳ`` (their Eq. (4)).
  Its bias makes unrelated representations score above 0 when n is not ≫ d (about d / n for random features).
* ``"unbiased"`` (default): the unbiased HSIC estimator of Song, Smola, Gretton, Bedo and Borgwardt ("Feature
  Selection via Dependence Maximization", JMLR 13, 2012, Eq. (5)), as used for CKA by Nguyen, Raghu and Kornblith
  ("Do Wide and Deep Networks Learn the Same Things?", ICLR 2021, §3.1, Eq. (3)). Independent features score ≈ 0
  whatever n / d, which matters here because the examples are the pixels (tokens) of a few images.

Both are evaluated in feature space (``X ᵀ Y`` is d1 × d2) when there are many examples, never forming the n × n
Gram matrices, so tens of thousands of examples cost little memory; with few examples of many features they are
evaluated from the n × n Gram matrices instead (:func:`hsic_gram`).

Two protocols (``--examples``):

``pixels`` (default, :func:`cka_matrix`): full-data CKA with the LR pixels as examples.

``images`` (:class:`MinibatchCKA`, :func:`minibatch_cka_matrix`): minibatch CKA with images as examples, the
protocol of the EQSR supplement (§3; Nguyen, Raghu and Kornblith 2021, §3.1). Every example is a fixed-size HR crop
(``--hr-crop``, default 192: a grid of non-overlapping crops of each image, :func:`load_hr_crops`), downscaled with
the MATLAB bicubic ``imresize`` by the scale of model A for A and of model B for B (HR 192 → LR 96 / 64 / 48 at
×2 / ×3 / ×4), and a layer's whole output map of that image, ``C × h × w`` flattened, is its row (so A and B may
have different numbers of features). The crops go through the networks in minibatches of ``--batch-size`` (default
4, the minimum of the unbiased estimator); per minibatch the unbiased HSIC of every layer pair is computed from the
4 × 4 Gram matrices, and ``CKA = mean HSIC(K, L) / sqrt(mean HSIC(K, K) · mean HSIC(L, L))`` over the minibatches
(the three sums accumulated and divided once). An arbitrary-scale network (attribute ``arbitrary_scale = True``,
EQSR) is run as ``net(lr, scale=s)`` at ``--scale-a`` / ``--scale-b`` (any real > 0), so one network can be compared
with itself at two scales; a fixed-scale network is run as ``net(lr)`` at its own scale (×2 vs ×4 HAT: the HMA
supplement's Fig. 1).

Examples and features with ``pixels``. Both networks get the same LR inputs (``--images``: the embedded validation
photographs or a folder, bicubic-downscaled by ``--downscale``, default = ``--scale``, and centre-cropped to
``--crop`` LR pixels, a multiple of every network's window so no padding token exists). A layer's output is read
with a forward hook: token sequences ``(B, hw, C)`` (HAT / HMA residual groups) are reshaped to maps using the
``x_size`` argument of the module; ``(B, C, h, w)`` maps (SAFMN blocks) are used as they are; maps at a multiple of
the LR size (upsampler stages) are average-pooled to the LR grid. Every LR pixel is an example with the channels as
features; at most ``--max-examples`` pixels are kept, the same ones for every layer of both networks (a seeded
random subset, split evenly over the images). Comparing a ×2 with a ×4 network thus compares their bodies on the
same inputs (the premise of HMA's cross-scale initialisation, Chu et al., CVPRW 2024, supplement Table 1).

Default layers: the outputs of the residual groups (``layers.N``: HAT's RHAGs, HMA's RHTBs) or of the SAFMN blocks
(``feats.N``). Patterns are globs over module names in which ``*`` stays inside one dotted component and ``**``
crosses components: ``layers.*`` = the residual groups, ``layers.*.residual_group.blocks.*`` = every HAB,
``feats.**`` = every module under ``feats``.

Models: ``sresolve-analyze cka MODEL_A [MODEL_B]``. Without ``MODEL_B``, B is the network of A (at ``--scale-b``
when given; a fixed-scale config spec is then rebuilt at that scale, with new random weights). ``MODEL_B`` equal to
``MODEL_A`` also means the same network when it is an arbitrary-scale one; two fixed-scale specs are always built
separately. ``--scale-a`` (default ``--scale``) and ``--scale-b`` (default: that of A) are the scales config specs
are built at (``--scale`` when not an integer) and, with ``--examples images``, the downscaling / query scales (for
a fixed-scale model they must be its own). Every run writes ``<stem>.png`` (heat-map), ``<stem>.csv`` and
``<stem>.npz`` (``matrix``, ``layers_a``, ``layers_b``, ``labels``; :meth:`CKAResult.save_npz`, loads with
``allow_pickle=False``).

Examples::

    sresolve-analyze cka hat "SwinIR-like=hat,alpha=0,use_ocab=false" --scale 4 --out outputs/analysis/cka
    sresolve-analyze cka x2=weights/HAT_SRx2.pth x4=weights/HAT_SRx4.pth --images datasets/benchmark/Set5/HR
    sresolve-analyze cka outputs/train/demo_safmn_x4/weights/net_g_latest.pth safmn --layers 'feats.*'
    # EQSR protocol: one arbitrary-scale network at ×2 vs ×4, HR 192 px crops of Urban100, minibatches of 4
    sresolve-analyze cka eqsr --examples images --scale-a 2 --scale-b 4 --images Urban100/HR --max-images 100
    sresolve-analyze cka eqsr eqsr --examples images --scale-a 2 --scale-b 3.5 --layers 'layers.*.residual_group.*'
    # HMA supplement Fig. 1: ×2 vs ×4 HAT, each on the same HR content downscaled by its own scale
    sresolve-analyze cka x2=weights/HAT_SRx2.pth x4=weights/HAT_SRx4.pth --examples images
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CKAResult",
    "Estimator",
    "MinibatchCKA",
    "centred_gram",
    "cka",
    "cka_matrix",
    "collect_features",
    "default_layer_patterns",
    "example_indices",
    "grid_crops",
    "hsic",
    "hsic_gram",
    "is_arbitrary_scale",
    "load_hr_crops",
    "load_lr_images",
    "main",
    "minibatch_cka_matrix",
    "plot_cka",
    "random_copy",
    "select_layers",
]

Estimator = Literal["unbiased", "biased"]
ESTIMATORS: tuple[str, ...] = ("unbiased", "biased")


# ------------------------------------------------------------------------------------------------------------ HSIC/CKA
def _as_matrix(x: Tensor, name: str) -> Tensor:
    if x.dim() != 2:
        raise ValueError(f"{name} must be an (examples, features) matrix, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


def _check_estimator(estimator: str, n: int) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if estimator == "biased" and n < 2:
        raise ValueError(f"biased HSIC needs at least 2 examples, got {n}")
    if estimator == "unbiased" and n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 examples, got {n}")


def _hsic_from_sums(kl: Tensor, kd: Tensor, ld: Tensor, k1: Tensor, l1: Tensor, n: int, estimator: str) -> Tensor:
    """HSIC from what it needs of the Gram matrices ``K``, ``L`` of *centred* features: ``kl = Σ_ij K_ij L_ij``, the
    diagonals ``kd``, ``ld`` and the row sums ``k1 = K 1``, ``l1 = L 1`` (see :func:`hsic` for the formulas)."""
    if estimator == "biased":
        return kl / (n - 1) ** 2  # tr(K H L H) = tr(K L) once the features are centred
    trace = kl - kd.dot(ld)  # tr(K̃ L̃) = Σ_{i≠j} K_ij L_ij
    k_sum = k1.sum() - kd.sum()  # 1ᵀ K̃ 1
    l_sum = l1.sum() - ld.sum()  # 1ᵀ L̃ 1
    k_row, l_row = k1 - kd, l1 - ld  # K̃ 1, L̃ 1
    return (trace + k_sum * l_sum / ((n - 1) * (n - 2)) - 2.0 * k_row.dot(l_row) / (n - 2)) / (n * (n - 3))


def _hsic_centred_grams(k: Tensor, l_: Tensor, estimator: str) -> Tensor:
    """HSIC from two n × n Gram matrices of centred features (``H K H``, ``H L H``)."""
    return _hsic_from_sums((k * l_).sum(), k.diagonal(), l_.diagonal(), k.sum(1), l_.sum(1), k.shape[0], estimator)


def _double_centre(k: Tensor) -> Tensor:
    """``H K H``: the Gram matrix of the same embedding with its sample mean removed."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def centred_gram(x: Tensor) -> Tensor:
    """``X̄ X̄ᵀ`` (n × n, float64): the linear-kernel Gram matrix of the examples ``x`` (n, ...), each example
    flattened into one row and the columns centred (``= H K H``). Cheap for a few rows however many features."""
    if x.dim() < 2:
        raise ValueError(f"features must be (examples, ...) with one row per example, got shape {tuple(x.shape)}")
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    return x @ x.T


def hsic_gram(k: Tensor, l_: Tensor, estimator: Estimator = "unbiased") -> Tensor:
    """HSIC (float64, 0-d) between two kernels given by their n × n Gram matrices ``K``, ``L`` of the same examples.

    The Gram matrices are double-centred first (``H K H``: translating the embedding by its mean changes neither
    estimator), so those of uncentred and of centred features give the same value. Formulas: :func:`hsic`.
    """
    k, l_ = (g.detach().to(torch.float64) for g in (k, l_))
    if k.dim() != 2 or k.shape[0] != k.shape[1] or l_.shape != k.shape:
        raise ValueError(f"need two n × n Gram matrices of the same n, got {tuple(k.shape)} and {tuple(l_.shape)}")
    _check_estimator(estimator, k.shape[0])
    return _hsic_centred_grams(_double_centre(k), _double_centre(l_), estimator)


def hsic(x: Tensor, y: Tensor, estimator: Estimator = "unbiased") -> Tensor:
    """HSIC between the linear kernels of ``x`` (n × d1) and ``y`` (n × d2), in float64 (a 0-d tensor).

    ``"biased"``: ``‖X̄ᵀȲ‖²_F / (n-1)²`` (Gretton et al. 2005 with linear kernels; Kornblith et al. 2019, Eq. (4)).
    ``"unbiased"``: Song et al. (JMLR 2012, Eq. (5)) with ``K̃ = K - diag(K)``, ``L̃ = L - diag(L)``::

        [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n-1)(n-2)) - 2 / (n-2) · 1ᵀK̃L̃1] / (n(n-3))

    each term written with ``Xᵀ Y`` and row norms instead of the n × n Gram matrices when there are many examples
    (pixels), or with the Gram matrices ``X̄X̄ᵀ``, ``ȲȲᵀ`` when they are cheaper (few examples with many features:
    the flattened feature maps of minibatch CKA). Needs n > 3.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y must hold the same examples, got {n} and {y.shape[0]} rows")
    _check_estimator(estimator, n)
    # HSIC of linear kernels is translation invariant; centring first keeps the float64 sums well conditioned.
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    d1, d2 = x.shape[1], y.shape[1]
    if n * (d1 + d2) < d1 * d2:  # two n × n Gram matrices cost less than the d1 × d2 cross-covariance
        return _hsic_centred_grams(x @ x.T, y @ y.T, estimator)
    kd = x.square().sum(1)  # diag(K)
    ld = y.square().sum(1)  # diag(L)
    return _hsic_from_sums((x.T @ y).square().sum(), kd, ld, x @ x.sum(0), y @ y.sum(0), n, estimator)


def _cka_from_hsic(xy: Tensor, xx: Tensor, yy: Tensor) -> float:
    denom = math.sqrt(max(float(xx), 0.0) * max(float(yy), 0.0))
    return float(xy) / denom if denom > 0 else math.nan


def cka(x: Tensor, y: Tensor, estimator: Estimator = "unbiased") -> float:
    """Linear CKA of two representations of the same examples (rows): ``HSIC(X,Y) / sqrt(HSIC(X,X) HSIC(Y,Y))``.

    Kornblith et al. (ICML 2019), Eq. (3); ``estimator`` as in :func:`hsic`. NaN when a representation is constant.
    """
    return _cka_from_hsic(hsic(x, y, estimator), hsic(x, x, estimator), hsic(y, y, estimator))


# -------------------------------------------------------------------------------------------------------------- layers
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` = within one dotted component, ``**`` = across components, ``?`` = one character."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^.]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def default_layer_patterns(net: nn.Module) -> list[str]:
    """``layers.*`` for the SwinIR-lineage shells (HAT, HMA), ``feats.*`` for SAFMN, else the top-level children."""
    for name in ("layers", "feats"):
        if isinstance(getattr(net, name, None), (nn.ModuleList, nn.Sequential)):
            return [f"{name}.*"]
    return ["*"]


def select_layers(net: nn.Module, patterns: Sequence[str] | None = None) -> list[str]:
    """Names of the modules of ``net`` matching any of ``patterns`` (see the module docstring), in module order;
    ``ModuleList`` / ``ModuleDict`` containers (never called, so without an output) are skipped."""
    patterns = list(patterns) if patterns else default_layer_patterns(net)
    regexes = [_glob_regex(p) for p in patterns]
    names = [
        n
        for n, m in net.named_modules()
        if n and not isinstance(m, (nn.ModuleList, nn.ModuleDict)) and any(r.match(n) for r in regexes)
    ]
    if not names:
        tops = [n for n, _ in net.named_children()]
        raise ValueError(f"no module of {type(net).__name__} matches {patterns}; top-level modules: {tops}")
    return names


def random_copy(net: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``net`` with every parameter re-initialised (``reset_parameters`` of each module, seeded): the
    "untrained network" reference of Kornblith et al. (2019, §6.1)."""
    import copy

    clone = copy.deepcopy(net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone.eval()


# ------------------------------------------------------------------------------------------------------------ features
def _load_hr_images(source: str | Path, max_images: int) -> list[Tensor]:
    """Up to ``max_images`` images ``(3, H, W)`` in [0, 1]: the embedded validation photographs (``"samples"``) or
    an image file / the sorted images of a folder."""
    if str(source) == "samples":
        from sresolve.data.samples import SAMPLE_SPLIT, load_sample

        names = SAMPLE_SPLIT["val"][:max_images]
        return [torch.from_numpy(load_sample(n)).permute(2, 0, 1).float() / 255 for n in names]
    from sresolve.data.io import list_images, read_image

    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"images: no such file or folder: {path}")
    files = [path] if path.is_file() else list_images(path)
    return [read_image(f).float() for f in files[:max_images]]


def load_lr_images(
    source: str | Path = "samples",
    *,
    downscale: float = 4,
    crop: int = 48,
    align: int = 1,
    max_images: int = 3,
) -> list[Tensor]:
    """LR inputs ``(3, h, w)`` in [0, 1]: images of ``source`` (``"samples"`` = the embedded validation photographs,
    else an image file or folder, sorted), bicubic-downscaled by ``downscale`` (MATLAB ``imresize``; 1 = as they
    are), centre-cropped to at most ``crop`` px a side, rounded down to a multiple of ``align`` (window size)."""
    from sresolve.data.degradation import imresize

    out = []
    for hr in _load_hr_images(source, max_images):
        lr = hr if downscale == 1 else imresize(hr[None], 1 / float(downscale))[0].clamp(0, 1)
        h, w = lr.shape[-2:]
        side_h, side_w = (min(crop, s) // align * align for s in (h, w))
        if side_h < 1 or side_w < 1:
            raise ValueError(f"an LR image of {h}×{w} px is smaller than the window alignment {align}")
        top, left = (h - side_h) // 2, (w - side_w) // 2
        out.append(lr[:, top : top + side_h, left : left + side_w].contiguous())
    return out


def grid_crops(image: Tensor, size: int) -> list[Tensor]:
    """The non-overlapping ``size × size`` crops of ``image`` (``(C, H, W)``) on a grid of ``⌊H/size⌋ × ⌊W/size⌋``
    cells centred in the image, row by row (none when the image is smaller than ``size``)."""
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    h, w = image.shape[-2:]
    rows, cols = h // size, w // size
    top, left = (h - rows * size) // 2, (w - cols * size) // 2
    return [
        image[..., top + i * size : top + (i + 1) * size, left + j * size : left + (j + 1) * size].contiguous()
        for i in range(rows)
        for j in range(cols)
    ]


def load_hr_crops(source: str | Path = "samples", *, size: int = 192, max_images: int = 3) -> list[Tensor]:
    """HR examples for :func:`minibatch_cka_matrix`: the :func:`grid_crops` of ``size`` px of each image of
    ``source`` (as in :func:`load_lr_images`), image by image. The three embedded validation photographs give 12
    crops of 192 px (4 + 2 + 6), i.e. three minibatches of 4."""
    crops = [c for hr in _load_hr_images(source, max_images) for c in grid_crops(hr, size)]
    if not crops:
        raise ValueError(f"no image of {source} is at least {size}×{size} px")
    return crops


def example_indices(sizes: Sequence[tuple[int, int]], max_examples: int, seed: int = 0) -> list[Tensor]:
    """Per image, the sorted flat pixel indices used as examples: a seeded random subset, ``max_examples`` in all
    split evenly over the images (all pixels when fewer). The same for every layer and both networks."""
    quota = [max_examples // len(sizes) + (i < max_examples % len(sizes)) for i in range(len(sizes))]
    out = []
    for i, ((h, w), k) in enumerate(zip(sizes, quota, strict=True)):
        if k >= h * w:
            out.append(torch.arange(h * w))
            continue
        gen = torch.Generator().manual_seed(seed * 100_003 + i)
        out.append(torch.randperm(h * w, generator=gen)[:k].sort().values)
    return out


def _token_size(length: int, args: tuple[Any, ...], lr_size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size of a ``(B, L, C)`` token sequence: the ``x_size`` argument of the module, else the LR grid
    (or an integer multiple of it)."""
    for a in args:
        is_size = isinstance(a, (tuple, list)) and len(a) == 2 and all(isinstance(v, int) for v in a)
        if is_size and a[0] * a[1] == length:
            return int(a[0]), int(a[1])
    h, w = lr_size
    k = math.isqrt(length // (h * w)) if length % (h * w) == 0 else 0
    if k and k * k * h * w == length:
        return k * h, k * w
    raise ValueError(f"cannot tell the spatial size of {length} tokens (LR input {h}×{w})")


def _as_map(out: Any, args: tuple[Any, ...], lr_size: tuple[int, int]) -> Tensor:
    """A hooked output (first tensor of a tuple) as a ``(B, C, h, w)`` map: ``(B, hw, C)`` tokens are reshaped with
    the module's ``x_size`` argument (:func:`_token_size`)."""
    if isinstance(out, (tuple, list)):
        out = next((o for o in out if isinstance(o, Tensor)), None)
    if not isinstance(out, Tensor):
        raise ValueError("the module output is not a tensor")
    if out.dim() == 3:  # tokens (B, hw, C)
        b, length, c = out.shape
        hh, ww = _token_size(length, args, lr_size)
        return out.transpose(1, 2).reshape(b, c, hh, ww)
    if out.dim() != 4:
        raise ValueError(f"output of shape {tuple(out.shape)} is neither a (B, C, H, W) map nor (B, L, C) tokens")
    return out


def _image_map(out: Any, args: tuple[Any, ...], lr_size: tuple[int, int]) -> Tensor:
    """A hooked output as the ``(B, C, h, w)`` map flattened into one row per image (minibatch CKA): a map on the LR
    grid padded at the bottom / right (window multiples: HAT, HMA, SAFMN < 8 px) is cropped to the LR size; maps at
    other resolutions (upsampler stages) are used whole."""
    out = _as_map(out, args, lr_size)
    h, w = lr_size
    hh, ww = out.shape[-2:]
    if h <= hh < 2 * h and w <= ww < 2 * w:
        return out[..., :h, :w]
    return out


def _to_lr_grid(out: Any, args: tuple[Any, ...], lr_size: tuple[int, int]) -> Tensor:
    """A hooked output as a ``(B, C, h, w)`` map on the LR grid (see the module docstring)."""
    out = _as_map(out, args, lr_size)
    h, w = lr_size
    hh, ww = out.shape[-2:]
    if (hh, ww) == (h, w):
        return out
    if hh % h == 0 and ww % w == 0 and hh // h == ww // w:
        return F.avg_pool2d(out, hh // h)
    if hh >= h and ww >= w:  # padded to a window multiple at the bottom / right (HAT, HMA, SAFMN < 8 px)
        return out[..., :h, :w]
    return F.adaptive_avg_pool2d(out, (h, w))


@torch.no_grad()
def collect_features(
    net: nn.Module,
    images: Sequence[Tensor],
    layers: Sequence[str],
    indices: Sequence[Tensor],
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """``{layer: (n, C) float64}``: the output of each named module at the example pixels ``indices[i]`` of each
    image, rows stacked over the images (one forward pass per image; the last call of a module counts)."""
    modules = dict(net.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"{type(net).__name__} has no module(s) {missing}")
    net = net.to(device).eval()
    feats: dict[str, list[Tensor]] = {n: [] for n in layers}
    current: dict[str, Tensor] = {}
    state: dict[str, Any] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            fmap = _to_lr_grid(output, args, state["lr_size"])[0]  # (C, h, w), batch of one
            # gather (a copy) now: SAFMN adds the long skip into its last block's output in place after the hook
            current[name] = fmap.flatten(1).index_select(1, state["idx"].to(fmap.device)).T.to("cpu", torch.float64)

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in layers]
    try:
        for img, idx in zip(images, indices, strict=True):
            state["lr_size"] = tuple(img.shape[-2:])
            state["idx"] = idx
            current.clear()
            net(img[None].to(device))
            for n in layers:
                if n not in current:
                    raise ValueError(f"module {n!r} of {type(net).__name__} was not called in the forward pass")
                feats[n].append(current[n])
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in feats.items()}


# -------------------------------------------------------------------------------------------------------------- result
@dataclass
class CKAResult:
    """``matrix[i, j]`` = CKA between layer ``layers_a[i]`` of model A and ``layers_b[j]`` of model B.

    ``examples``: what one example is (``"pixel"``: :func:`cka_matrix`; ``"image"``: :func:`minibatch_cka_matrix`);
    ``n_batches``: the number of minibatches whose HSIC values were averaged (0 = one full-data estimate).
    """

    matrix: Tensor
    layers_a: list[str]
    layers_b: list[str]
    label_a: str = "A"
    label_b: str = "B"
    estimator: str = "unbiased"
    n_examples: int = 0
    n_images: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    examples: str = "pixel"
    n_batches: int = 0

    def diagonal(self) -> list[float]:
        """``matrix[i, i]`` (meaningful when both layer lists correspond, e.g. a model against itself)."""
        return [float(v) for v in torch.diagonal(self.matrix)]

    def describe(self) -> str:
        """One line stating what was compared and how (plus ``meta``: inputs, scales)."""
        extra = "".join(f"; {k} {v}" for k, v in self.meta.items())
        models = f"{self.label_a} ({len(self.layers_a)} layers) vs {self.label_b} ({len(self.layers_b)} layers)"
        if not self.n_batches:
            return (
                f"linear CKA ({self.estimator} HSIC), {models}, {self.n_examples} {self.examples} examples from "
                f"{self.n_images} images{extra}"
            )
        source = f" from {self.n_images} images" if self.n_images else ""
        return (
            f"minibatch linear CKA ({self.estimator} HSIC averaged over {self.n_batches} minibatches), {models}, "
            f"{self.n_examples} {self.examples} examples{source}{extra}"
        )

    def write_csv(self, path: str | Path) -> Path:
        """Rows = layers of A, columns = layers of B; a first line ``# <describe()>``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            f.write(f"# {self.describe()}\n")
            w = csv.writer(f)
            w.writerow([f"{self.label_a} \\ {self.label_b}", *self.layers_b])
            for name, row in zip(self.layers_a, self.matrix.tolist(), strict=True):
                w.writerow([name, *(f"{v:.6f}" for v in row)])
        return path

    @classmethod
    def read_csv(cls, path: str | Path) -> CKAResult:
        """Read back :meth:`write_csv` (matrix, layer names, labels)."""
        lines = [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]
        rows = list(csv.reader(lines))
        label_a, _, label_b = rows[0][0].partition(" \\ ")
        matrix = torch.tensor([[float(v) for v in r[1:]] for r in rows[1:]], dtype=torch.float64)
        return cls(matrix, [r[0] for r in rows[1:]], rows[0][1:], label_a, label_b)

    def save_npz(self, path: str | Path) -> Path:
        """Write ``matrix`` (float64) with ``layers_a``, ``layers_b``, ``labels`` (A, B), ``estimator`` and
        ``description`` (:meth:`describe`) as a NumPy ``.npz`` of plain arrays: ``numpy.load(path,
        allow_pickle=False)`` reads it (``["matrix"]``), as does :meth:`load_npz`."""
        import numpy as np

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a file object: numpy would append ".npz" to another suffix
            np.savez(
                f,
                matrix=self.matrix.detach().cpu().to(torch.float64).numpy(),
                layers_a=np.array(self.layers_a, dtype=str),
                layers_b=np.array(self.layers_b, dtype=str),
                labels=np.array([self.label_a, self.label_b], dtype=str),
                estimator=np.array(self.estimator),
                description=np.array(self.describe()),
            )
        return path

    @classmethod
    def load_npz(cls, path: str | Path) -> CKAResult:
        """Read back :meth:`save_npz` (matrix, layer names, labels, estimator)."""
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            label_a, label_b = (str(v) for v in z["labels"])
            return cls(
                torch.from_numpy(z["matrix"].copy()),
                [str(v) for v in z["layers_a"]],
                [str(v) for v in z["layers_b"]],
                label_a,
                label_b,
                str(z["estimator"]),
            )

    def save_heatmap(self, path: str | Path, annotate: bool | None = None) -> Path:
        """Write the heat-map PNG (see :func:`plot_cka`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_cka(self, annotate=annotate).savefig(path, dpi=120, bbox_inches="tight")
        return path


def cka_matrix(
    net_a: nn.Module,
    net_b: nn.Module,
    images: Sequence[Tensor],
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    *,
    label_a: str = "A",
    label_b: str = "B",
    estimator: Estimator = "unbiased",
    max_examples: int = 4096,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> CKAResult:
    """CKA between every chosen layer of ``net_a`` and of ``net_b`` on the same LR ``images`` (``(3, h, w)``).

    ``layers_*``: glob patterns or module names (default :func:`default_layer_patterns`). HSIC(X, X) of each layer
    is computed once; the matrix costs one ``d_a × d_b`` product per pair.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if not images:
        raise ValueError("no images")
    names_a = select_layers(net_a, layers_a)
    names_b = select_layers(net_b, layers_b)
    indices = example_indices([tuple(img.shape[-2:]) for img in images], max_examples, seed)
    feats_a = collect_features(net_a, images, names_a, indices, device)
    feats_b = (
        feats_a if net_b is net_a and names_b == names_a else collect_features(net_b, images, names_b, indices, device)
    )
    self_a = {n: hsic(x, x, estimator) for n, x in feats_a.items()}
    self_b = self_a if feats_b is feats_a else {n: hsic(y, y, estimator) for n, y in feats_b.items()}
    matrix = torch.empty(len(names_a), len(names_b), dtype=torch.float64)
    for i, na in enumerate(names_a):
        for j, nb in enumerate(names_b):
            matrix[i, j] = _cka_from_hsic(hsic(feats_a[na], feats_b[nb], estimator), self_a[na], self_b[nb])
    n = int(sum(len(i) for i in indices))
    return CKAResult(matrix, names_a, names_b, label_a, label_b, estimator, n, len(images))


# ------------------------------------------------------------------------------------------------------ minibatch CKA
class MinibatchCKA:
    """Minibatch linear CKA between layers of model A and of model B (Nguyen, Raghu and Kornblith, ICLR 2021, §3.1;
    the EQSR supplement §3, with the symmetric normalisation of the spec, A10)::

        CKA_mb = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) · mean_i HSIC_1(L_i, L_i))

    over the minibatches ``i`` added with :meth:`update`, ``K_i = X_i X_iᵀ`` and ``L_i = Y_i Y_iᵀ`` the linear
    kernels of the minibatch's examples (one flattened row each) in a layer of A and of B, ``HSIC_1`` the unbiased
    estimator of Song et al. (:func:`hsic`; needs n ≥ 4 examples per minibatch). The three sums are accumulated in
    float64 for every (A, B) layer pair and divided once in :meth:`compute`; ``K_i`` is n × n however many features
    a row has, and the numbers of features of A and B may differ.

    Invariances: per minibatch, an orthogonal transform of a layer's features changes nothing (the Gram matrices are
    unchanged); an isotropic scaling does not either when the same factor applies to every minibatch.
    ``estimator="biased"`` averages the biased HSIC instead, whose bias does not shrink with more minibatches.
    """

    def __init__(
        self,
        layers_a: Sequence[str],
        layers_b: Sequence[str] | None = None,
        *,
        estimator: Estimator = "unbiased",
        label_a: str = "A",
        label_b: str = "B",
        examples: str = "image",
    ) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.layers_a = list(layers_a)
        self.layers_b = list(self.layers_a if layers_b is None else layers_b)
        for which, names in (("A", self.layers_a), ("B", self.layers_b)):
            if not names or len(set(names)) != len(names):
                raise ValueError(f"layers of model {which} must be a non-empty list without repeats, got {names}")
        self.estimator = estimator
        self.label_a, self.label_b, self.examples = label_a, label_b, examples
        self.reset()

    def reset(self) -> None:
        """Forget every minibatch."""
        self.hsic_ab = torch.zeros(len(self.layers_a), len(self.layers_b), dtype=torch.float64)  # Σ_i HSIC(K_i, L_i)
        self.hsic_aa = torch.zeros(len(self.layers_a), dtype=torch.float64)  # Σ_i HSIC(K_i, K_i)
        self.hsic_bb = torch.zeros(len(self.layers_b), dtype=torch.float64)  # Σ_i HSIC(L_i, L_i)
        self.n_batches = 0
        self.n_examples = 0

    def update(self, feats_a: Mapping[str, Tensor], feats_b: Mapping[str, Tensor] | None = None) -> None:
        """Add one minibatch: ``feats_a[layer]`` = ``(n, p_a)`` features of the n examples in each layer of A (or
        ``(n, C, h, w)`` maps, flattened per example), ``feats_b`` those of B (default: ``feats_a``, the same
        model's layers)."""
        grams_a = {n: centred_gram(_layer_feats(feats_a, n, "A")) for n in self.layers_a}
        if feats_b is None or feats_b is feats_a:
            feats_b, known = feats_a, grams_a
        else:
            known = {}
        grams_b = {n: known[n] if n in known else centred_gram(_layer_feats(feats_b, n, "B")) for n in self.layers_b}
        self.update_grams(grams_a, grams_b)

    def update_grams(self, grams_a: Mapping[str, Tensor], grams_b: Mapping[str, Tensor] | None = None) -> None:
        """:meth:`update` from the n × n linear-kernel Gram matrices of each layer (:func:`centred_gram`;
        uncentred Gram matrices are double-centred, which changes nothing), e.g. computed in forward hooks."""
        grams_b = grams_a if grams_b is None else grams_b
        ka = {n: _double_centre(_layer_feats(grams_a, n, "A").to(torch.float64)) for n in self.layers_a}
        lb = {n: _double_centre(_layer_feats(grams_b, n, "B").to(torch.float64)) for n in self.layers_b}
        sizes = {tuple(g.shape) for g in (*ka.values(), *lb.values())}
        n = next(iter(sizes))[0]
        if len(sizes) != 1 or n != next(iter(sizes))[1]:
            raise ValueError(f"every layer of a minibatch must hold the same n examples (n × n Gram), got {sizes}")
        _check_estimator(self.estimator, n)
        est = self.estimator
        ab = [[float(_hsic_centred_grams(k, g, est)) for g in lb.values()] for k in ka.values()]
        self.hsic_ab += torch.tensor(ab, dtype=torch.float64)
        self.hsic_aa += torch.tensor([float(_hsic_centred_grams(k, k, est)) for k in ka.values()], dtype=torch.float64)
        self.hsic_bb += torch.tensor([float(_hsic_centred_grams(g, g, est)) for g in lb.values()], dtype=torch.float64)
        self.n_batches += 1
        self.n_examples += n

    def compute(self) -> CKAResult:
        """The layers-of-A × layers-of-B matrix of minibatch CKA (NaN where a layer is constant)."""
        if not self.n_batches:
            raise ValueError("MinibatchCKA: no minibatch was added (call update() first)")
        k = self.n_batches
        matrix = torch.empty_like(self.hsic_ab)
        for i in range(len(self.layers_a)):
            for j in range(len(self.layers_b)):
                matrix[i, j] = _cka_from_hsic(self.hsic_ab[i, j] / k, self.hsic_aa[i] / k, self.hsic_bb[j] / k)
        return CKAResult(
            matrix,
            list(self.layers_a),
            list(self.layers_b),
            self.label_a,
            self.label_b,
            self.estimator,
            n_examples=self.n_examples,
            examples=self.examples,
            n_batches=k,
        )


def _layer_feats(feats: Mapping[str, Tensor], name: str, which: str) -> Tensor:
    if name not in feats:
        raise ValueError(f"no features for layer {name!r} of model {which}; got {sorted(feats)}")
    return feats[name]


def is_arbitrary_scale(net: nn.Module) -> bool:
    """Whether ``net`` is an arbitrary-scale network (attribute ``arbitrary_scale = True``), run as
    ``net(lr, scale=s)``; other networks have a fixed scale and are run as ``net(lr)``."""
    return bool(getattr(net, "arbitrary_scale", False))


def _forward(net: nn.Module, lr: Tensor, scale: float) -> Any:
    return net(lr, scale=scale) if is_arbitrary_scale(net) else net(lr)


class _GramHooks:
    """Forward hooks on named modules of ``net`` storing, per forward pass, the n × n :func:`centred_gram` of each
    module's output (one row per image of the batch: :func:`_image_map` flattened). Computing it inside the hook
    keeps only n × n numbers per layer and is immune to later in-place updates of the output (SAFMN)."""

    def __init__(self, net: nn.Module, layers: Sequence[str]) -> None:
        modules = dict(net.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise ValueError(f"{type(net).__name__} has no module(s) {missing}")
        self.net, self.layers = net, list(layers)
        self.grams: dict[str, Tensor] = {}
        self.lr_size = (0, 0)
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.layers]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            fmap = _image_map(output, args, self.lr_size)
            rows = fmap.detach().reshape(fmap.shape[0], -1)
            if rows.device.type == "mps":  # no float64 there
                rows = rows.cpu()
            self.grams[name] = centred_gram(rows).cpu()

        return hook

    def run(self, lr: Tensor, scale: float) -> dict[str, Tensor]:
        """``{layer: n × n Gram}`` of one forward pass on the LR batch ``lr`` at ``scale``."""
        self.grams.clear()
        self.lr_size = (int(lr.shape[-2]), int(lr.shape[-1]))
        _forward(self.net, lr, scale)
        missing = [n for n in self.layers if n not in self.grams]
        if missing:
            raise ValueError(f"module(s) {missing} of {type(self.net).__name__} were not called in the forward pass")
        return dict(self.grams)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _query_scale(net: nn.Module, scale: float | None, which: str) -> float:
    if scale is not None:
        if not float(scale) > 0:
            raise ValueError(f"scale_{which} must be > 0, got {scale!r}")
        return float(scale)
    if is_arbitrary_scale(net):
        raise ValueError(f"model {which.upper()} is an arbitrary-scale network: give scale_{which}")
    own = getattr(net, "scale", None)
    if own is None:
        raise ValueError(f"model {which.upper()} ({type(net).__name__}) has no .scale attribute: give scale_{which}")
    return float(own)


def _downscale(hr: Tensor, scale: float) -> Tensor:
    from sresolve.data.degradation import imresize

    return hr if scale == 1 else imresize(hr, 1 / scale).clamp(0, 1)


@torch.no_grad()
def minibatch_cka_matrix(
    net_a: nn.Module,
    net_b: nn.Module,
    hr_crops: Sequence[Tensor] | Tensor,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    *,
    scale_a: float | None = None,
    scale_b: float | None = None,
    batch_size: int = 4,
    max_examples: int | None = None,
    seed: int | None = 0,
    label_a: str = "A",
    label_b: str = "B",
    estimator: Estimator = "unbiased",
    device: torch.device | str = "cpu",
) -> CKAResult:
    """Minibatch CKA with images as examples (the EQSR protocol, supplement §3; spec A10 / E8).

    The same HR content ``hr_crops`` (equal-size ``(3, H, W)`` crops in [0, 1], e.g. :func:`load_hr_crops`) is
    downscaled with MATLAB bicubic ``imresize`` by ``scale_a`` for model A and by ``scale_b`` for model B (HR 192 →
    LR 96 / 64 / 48 at ×2 / ×3 / ×4). An arbitrary-scale network (``arbitrary_scale = True``) is run as
    ``net(lr, scale=s)``, any other as ``net(lr)``; the scale of a fixed-scale network defaults to its ``.scale``
    (for it the scale only sets the downscaling), that of an arbitrary-scale one must be given (``scale_b`` defaults
    to ``scale_a`` then). ``net_b`` may be ``net_a``: one network at two scales (EQSR), or at the same scale (a unit
    diagonal). Two fixed-scale networks, e.g. ×2 and ×4 HAT, give the HMA supplement's Fig. 1.

    The crops are shuffled (``seed``; None keeps their order), at most ``max_examples`` are kept, and they go
    through the networks in minibatches of ``batch_size`` (an incomplete last one is dropped). Each layer's output
    (``layers_*``: globs or names, default :func:`default_layer_patterns`) is read with a forward hook, tokens
    reshaped to maps with the module's ``x_size``, window padding cropped, and every image's ``C × h × w`` map is one
    row; :class:`MinibatchCKA` accumulates the unbiased HSIC of every layer pair over the minibatches.
    """
    crops = hr_crops if isinstance(hr_crops, Tensor) else _stack_crops(hr_crops)
    if crops.dim() != 4 or crops.shape[1] != 3:
        raise ValueError(f"hr_crops must be (N, 3, H, W) or a list of (3, H, W) crops, got {tuple(crops.shape)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    need = 4 if estimator == "unbiased" else 2
    if batch_size < need:
        raise ValueError(f"{estimator} HSIC needs at least {need} examples per minibatch, got batch_size={batch_size}")
    s_a = _query_scale(net_a, scale_a, "a")
    if scale_b is None and is_arbitrary_scale(net_b):
        scale_b = s_a
    s_b = _query_scale(net_b, scale_b, "b")
    order = torch.arange(len(crops))
    if seed is not None:
        order = torch.randperm(len(crops), generator=torch.Generator().manual_seed(seed))
    if max_examples is not None:
        order = order[:max_examples]
    n_batches = len(order) // batch_size
    if n_batches < 1:
        raise ValueError(f"{len(order)} HR crops do not fill one minibatch of {batch_size}")
    names_a = select_layers(net_a, layers_a)
    names_b = select_layers(net_b, layers_b)
    acc = MinibatchCKA(names_a, names_b, estimator=estimator, label_a=label_a, label_b=label_b)
    same_net = net_b is net_a
    hooks_a = _GramHooks(net_a.to(device).eval(), list(dict.fromkeys(names_a + names_b)) if same_net else names_a)
    hooks_b = hooks_a if same_net else _GramHooks(net_b.to(device).eval(), names_b)
    lr_sizes: tuple[tuple[int, ...], ...] = ()
    try:
        for k in range(n_batches):
            hr = crops[order[k * batch_size : (k + 1) * batch_size]].to(device, torch.float32)
            lr_a = _downscale(hr, s_a)
            grams_a = hooks_a.run(lr_a, s_a)
            if same_net and s_b == s_a:
                lr_b, grams_b = lr_a, grams_a
            else:
                lr_b = _downscale(hr, s_b)
                grams_b = hooks_b.run(lr_b, s_b)
            acc.update_grams({n: grams_a[n] for n in names_a}, {n: grams_b[n] for n in names_b})
            lr_sizes = (tuple(lr_a.shape[-2:]), tuple(lr_b.shape[-2:]))
    finally:
        hooks_a.close()
        if hooks_b is not hooks_a:
            hooks_b.close()
    result = acc.compute()
    (ha, wa), (hb, wb) = lr_sizes
    result.meta.update(
        minibatches=f"{n_batches} of {batch_size}",
        scales=f"x{s_a:g} / x{s_b:g}",
        crops=f"HR {crops.shape[-2]}×{crops.shape[-1]} → LR {ha}×{wa} / {hb}×{wb} px",
    )
    return result


def _stack_crops(crops: Sequence[Tensor]) -> Tensor:
    if not crops:
        raise ValueError("no HR crops")
    sizes = {tuple(c.shape) for c in crops}
    if len(sizes) != 1:
        raise ValueError(f"the HR crops must all have the same size (one row length per layer), got {sorted(sizes)}")
    return torch.stack(list(crops))


# ------------------------------------------------------------------------------------------------------------- figures
def _short(names: Sequence[str]) -> list[str]:
    """Drop the dotted prefix all names share (``layers.0`` ... → ``0`` ...), keep full names otherwise."""
    parts = [n.split(".") for n in names]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [".".join(p[common:]) for p in parts]


def plot_cka(result: CKAResult, ax: Any = None, annotate: bool | None = None, cmap: str = "magma") -> Any:
    """Heat-map of ``result.matrix`` (layers of A on the y axis from the bottom, of B on the x axis, as in Kornblith
    et al. 2019, Fig. 2), colour range [0, 1]; returns the matplotlib Figure. ``annotate`` writes the values in the
    cells (default: when the matrix has at most 12 × 12 cells). No pyplot state is touched when ``ax`` is None."""
    from matplotlib.figure import Figure

    m = result.matrix.numpy()
    rows, cols = m.shape
    if ax is None:
        fig = Figure(figsize=(1.2 + 0.45 * max(cols, 4), 1.0 + 0.45 * max(rows, 4)))
        ax = fig.subplots()
    else:
        fig = ax.figure
    im = ax.imshow(m, origin="lower", vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto")
    ax.set_xticks(range(cols), _short(result.layers_b), rotation=90 if cols > 8 else 0, fontsize=8)
    ax.set_yticks(range(rows), _short(result.layers_a), fontsize=8)
    ax.set_xlabel(textwrap.fill(f"{result.label_b} layers", 48), fontsize=9)
    ax.set_ylabel(textwrap.fill(f"{result.label_a} layers", 48), fontsize=9)
    kind = "minibatch linear CKA" if result.n_batches else "linear CKA"
    ax.set_title(f"{kind} ({result.estimator})", fontsize=10)
    if annotate if annotate is not None else rows * cols <= 144:
        for i in range(rows):
            for j in range(cols):
                v = m[i, j]
                ax.text(
                    j,
                    i,
                    "–" if math.isnan(v) else f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if v > 0.6 else "white",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


# ------------------------------------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sresolve-analyze cka",
        description="Linear CKA between the layer features of two models (heat-map PNG + CSV + NPZ).",
        epilog="Model specs: a weights file, or a model config with overrides ('hat', 'hat,alpha=0,use_ocab=false'), "
        "optionally 'label=spec' (see sresolve.analysis.models). Without MODEL_B, or with the same spec for an "
        "arbitrary-scale model, B is the network of A (e.g. at another --scale-b). Patterns: '*' within a dotted "
        "name component, '**' across components.",
    )
    p.add_argument("model_a", help="model spec A")
    p.add_argument("model_b", nargs="?", default=None, help="model spec B (default: the network of A)")
    p.add_argument(
        "--examples",
        choices=("pixels", "images"),
        default="pixels",
        help="pixels: every LR pixel is an example, full-data CKA (default); images: every HR crop is an example, "
        "minibatch CKA with the content downscaled by the scale of each model (EQSR protocol)",
    )
    p.add_argument("--images", default="samples", help="'samples' (embedded photographs) or an image file/folder")
    p.add_argument("--max-images", type=int, default=3, help="images used (default 3)")
    p.add_argument("--scale", type=int, default=4, help="scale config specs are built at (default 4)")
    p.add_argument(
        "--scale-a",
        type=float,
        default=None,
        help="scale of model A (default --scale): the config scale and, with --examples images, the downscaling "
        "and query scale (any real > 0 for an arbitrary-scale model)",
    )
    p.add_argument("--scale-b", type=float, default=None, help="scale of model B when it differs (e.g. x2 vs x4)")
    p.add_argument(
        "--downscale",
        type=float,
        default=None,
        help="pixels: bicubic factor making the LR inputs (default: scale of A)",
    )
    p.add_argument("--crop", type=int, default=48, help="pixels: LR crop side in px (default 48)")
    p.add_argument("--hr-crop", type=int, default=192, help="images: side of the HR crops in px (default 192)")
    p.add_argument("--batch-size", type=int, default=4, help="images: examples per minibatch (default 4, at least 4)")
    p.add_argument("--layers", nargs="+", default=None, help="module patterns of A (default layers.* / feats.*)")
    p.add_argument("--layers-b", nargs="+", default=None, help="module patterns of B (default: --layers)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="unbiased", help="HSIC estimator (default unbiased)")
    p.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="examples used: pixels (default 4096) or HR crops (default all)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the pixel subset / of the order of the HR crops")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--out", type=Path, default=Path("outputs/analysis/cka"), help="output folder")
    p.add_argument("--stem", default="cka", help="file names <stem>.csv / .png / .npz (default cka)")
    return p


def _align(nets: Iterable[nn.Module]) -> int:
    """Least common multiple of the networks' window sizes (``tile_align``), so the LR crops need no padding."""
    return reduce(math.lcm, (int(getattr(n, "tile_align", 1) or 1) for n in nets), 1)


def _format(result: CKAResult) -> str:
    """The matrix as text: rows = layers of A, columns = layers of B (common name prefix dropped)."""
    short_b = _short(result.layers_b)
    width = max(6, *(len(s) for s in short_b))
    first = max(len(a) for a in result.layers_a) + 1
    head = " " * first + "".join(f"{s:>{width + 1}}" for s in short_b)
    rows = [
        f"{a:<{first}}" + "".join(f"{v:>{width + 1}.3f}" for v in row)
        for a, row in zip(result.layers_a, result.matrix.tolist(), strict=True)
    ]
    return "\n".join([result.describe(), head, *rows])


def _config_scale(scale: float | None, default: int) -> int:
    """The integer scale a config spec is built at (a non-integer scale, for an arbitrary-scale model: ``default``)."""
    return int(scale) if scale is not None and float(scale).is_integer() else default


def _cli_scale(net: nn.Module, requested: float | None, default: float, which: str) -> float:
    """Images mode: the query scale of an arbitrary-scale model (``requested``, else ``default``), the own scale of
    a fixed-scale one (a different ``requested`` scale is an error)."""
    if is_arbitrary_scale(net):
        return float(requested if requested is not None else default)
    own = getattr(net, "scale", None)
    if own is None:
        return float(requested if requested is not None else default)
    if requested is not None and float(requested) != float(own):
        raise ValueError(
            f"model {which} is a fixed x{own} network; --scale-{which.lower()} {requested:g} does not apply"
        )
    return float(own)


def _models(args: argparse.Namespace) -> tuple[str, nn.Module, str, nn.Module]:
    """Build A and B; B is the network of A when MODEL_B is omitted (and its scale allows) or names the same spec
    as an arbitrary-scale A."""
    from sresolve.analysis.models import build_model

    build_a = _config_scale(args.scale_a, args.scale)
    build_b = _config_scale(args.scale_b, build_a)
    label_a, net_a = build_model(args.model_a, scale=build_a)
    spec_b = args.model_a if args.model_b is None else args.model_b
    if spec_b == args.model_a and (is_arbitrary_scale(net_a) or (args.model_b is None and build_b == build_a)):
        return label_a, net_a, label_a, net_a
    label_b, net_b = build_model(spec_b, scale=build_b)
    return label_a, net_a, label_b, net_b


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build both models, compute the matrix, write ``<out>/<stem>.csv``, ``.png`` and ``.npz``; returns paths and
    result."""
    from sresolve.cli._common import pick_device

    label_a, net_a, label_b, net_b = _models(args)
    if args.examples == "images":
        result = _run_images(args, label_a, net_a, label_b, net_b)
    else:
        result = _run_pixels(args, label_a, net_a, label_b, net_b, pick_device(args.device))
    csv_path = result.write_csv(args.out / f"{args.stem}.csv")
    png_path = result.save_heatmap(args.out / f"{args.stem}.png")
    npz_path = result.save_npz(args.out / f"{args.stem}.npz")
    return {"result": result, "csv": csv_path, "png": png_path, "npz": npz_path}


def _distinct(label_a: str, label_b: str) -> tuple[str, str]:
    return (f"{label_a} (A)", f"{label_b} (B)") if label_a == label_b else (label_a, label_b)


def _run_pixels(
    args: argparse.Namespace, label_a: str, net_a: nn.Module, label_b: str, net_b: nn.Module, device: torch.device
) -> CKAResult:
    if is_arbitrary_scale(net_a) or is_arbitrary_scale(net_b):
        raise ValueError("an arbitrary-scale model needs --examples images (with --scale-a / --scale-b)")
    label_a, label_b = _distinct(label_a, label_b)
    images = load_lr_images(
        args.images,
        downscale=args.downscale or float(getattr(net_a, "scale", args.scale)),
        crop=args.crop,
        align=_align([net_a, net_b]),
        max_images=args.max_images,
    )
    result = cka_matrix(
        net_a,
        net_b,
        images,
        args.layers,
        args.layers_b or args.layers,
        label_a=label_a,
        label_b=label_b,
        estimator=args.estimator,
        max_examples=4096 if args.max_examples is None else args.max_examples,
        seed=args.seed,
        device=device,
    )
    lr = images[0].shape[-1]
    result.meta.update(
        images=f"{args.images} (LR crops of {lr} px)",
        scales=f"x{getattr(net_a, 'scale', '?')} / x{getattr(net_b, 'scale', '?')}",
    )
    return result


def _run_images(args: argparse.Namespace, label_a: str, net_a: nn.Module, label_b: str, net_b: nn.Module) -> CKAResult:
    from sresolve.cli._common import pick_device

    s_a = _cli_scale(net_a, args.scale_a, args.scale, "A")
    s_b = _cli_scale(net_b, args.scale_b, s_a, "B")
    label_a, label_b = _distinct(f"{label_a} x{s_a:g}", f"{label_b} x{s_b:g}")
    hrs = _load_hr_images(args.images, args.max_images)
    per_image = [grid_crops(hr, args.hr_crop) for hr in hrs]
    crops = [c for cs in per_image for c in cs]
    if not crops:
        raise ValueError(f"no image of {args.images} is at least {args.hr_crop}×{args.hr_crop} px (--hr-crop)")
    result = minibatch_cka_matrix(
        net_a,
        net_b,
        crops,
        args.layers,
        args.layers_b or args.layers,
        scale_a=s_a,
        scale_b=s_b,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        seed=args.seed,
        label_a=label_a,
        label_b=label_b,
        estimator=args.estimator,
        device=pick_device(args.device),
    )
    result.n_images = sum(1 for cs in per_image if cs)
    result.meta = {"images": str(args.images), **result.meta}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``sresolve-analyze cka MODEL_A MODEL_B [options]``; returns the exit status."""
    import yaml

    from sresolve.config import ConfigError

    args = _parser().parse_args(argv)
    try:
        out = run(args)
    except (ConfigError, ValueError, FileNotFoundError, yaml.YAMLError) as err:
        print(f"sresolve-analyze cka: error: {err}", file=sys.stderr)
        return 2
    print(_format(out["result"]))
    print(f"\nwritten {out['csv']}, {out['png']} and {out['npz']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
