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

Both are evaluated in feature space (``X ᵀ Y`` is d1 × d2), never forming the n × n Gram matrices, so tens of
thousands of examples cost little memory.

Examples and features. Both networks get the same LR inputs (``--images``: the embedded validation photographs or a
folder, bicubic-downscaled by ``--downscale``, default = ``--scale``, and centre-cropped to ``--crop`` LR pixels, a
multiple of every network's window so no padding token exists). A layer's output is read with a forward hook:
token sequences ``(B, hw, C)`` (HAT / HMA residual groups) are reshaped to maps using the ``x_size`` argument of the
module; ``(B, C, h, w)`` maps (SAFMN blocks) are used as they are; maps at a multiple of the LR size (upsampler
stages) are average-pooled to the LR grid. Every LR pixel is an example with the channels as features; at most
``--max-examples`` pixels are kept, the same ones for every layer of both networks (a seeded random subset, split
evenly over the images). Comparing a ×2 with a ×4 network thus compares their bodies on the same inputs (the
premise of HMA's cross-scale initialisation, Chu et al., CVPRW 2024, supplement Table 1).

Default layers: the outputs of the residual groups (``layers.N``: HAT's RHAGs, HMA's RHTBs) or of the SAFMN blocks
(``feats.N``). Patterns are globs over module names in which ``*`` stays inside one dotted component and ``**``
crosses components: ``layers.*`` = the residual groups, ``layers.*.residual_group.blocks.*`` = every HAB,
``feats.**`` = every module under ``feats``.

Examples::

    sresolve-analyze cka hat "SwinIR-like=hat,alpha=0,use_ocab=false" --scale 4 --out outputs/analysis/cka
    sresolve-analyze cka x2=weights/HAT_SRx2.pth x4=weights/HAT_SRx4.pth --images datasets/benchmark/Set5/HR
    sresolve-analyze cka outputs/train/demo_safmn_x4/weights/net_g_latest.pth safmn --layers 'feats.*'
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
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
    "cka",
    "cka_matrix",
    "collect_features",
    "default_layer_patterns",
    "example_indices",
    "hsic",
    "load_lr_images",
    "main",
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


def hsic(x: Tensor, y: Tensor, estimator: Estimator = "unbiased") -> Tensor:
    """HSIC between the linear kernels of ``x`` (n × d1) and ``y`` (n × d2), in float64 (a 0-d tensor).

    ``"biased"``: ``‖X̄ᵀȲ‖²_F / (n-1)²`` (Gretton et al. 2005 with linear kernels; Kornblith et al. 2019, Eq. (4)).
    ``"unbiased"``: Song et al. (JMLR 2012, Eq. (5)) with ``K̃ = K - diag(K)``, ``L̃ = L - diag(L)``::

        [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n-1)(n-2)) - 2 / (n-2) · 1ᵀK̃L̃1] / (n(n-3))

    each term written with ``Xᵀ Y`` and row norms instead of the n × n Gram matrices. Needs n > 3.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y must hold the same examples, got {n} and {y.shape[0]} rows")
    # HSIC of linear kernels is translation invariant; centring first keeps the float64 sums well conditioned.
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    if estimator == "biased":
        if n < 2:
            raise ValueError(f"biased HSIC needs at least 2 examples, got {n}")
        return (x.T @ y).square().sum() / (n - 1) ** 2
    if estimator != "unbiased":
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 examples, got {n}")
    kd = x.square().sum(1)  # diag(K)
    ld = y.square().sum(1)  # diag(L)
    trace = (x.T @ y).square().sum() - (kd * ld).sum()  # tr(K̃ L̃) = Σ_{i≠j} K_ij L_ij
    sx, sy = x.sum(0), y.sum(0)
    k_sum = sx.dot(sx) - kd.sum()  # 1ᵀ K̃ 1
    l_sum = sy.dot(sy) - ld.sum()  # 1ᵀ L̃ 1
    k_row = x @ sx - kd  # K̃ 1
    l_row = y @ sy - ld  # L̃ 1
    return (trace + k_sum * l_sum / ((n - 1) * (n - 2)) - 2.0 * k_row.dot(l_row) / (n - 2)) / (n * (n - 3))


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

    if str(source) == "samples":
        from sresolve.data.samples import SAMPLE_SPLIT, load_sample

        hrs = [torch.from_numpy(load_sample(n)).permute(2, 0, 1).float() / 255 for n in SAMPLE_SPLIT["val"]]
    else:
        from sresolve.data.io import list_images, read_image

        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"images: no such file or folder: {path}")
        files = [path] if path.is_file() else list_images(path)
        hrs = [read_image(f).float() for f in files[:max_images]]
    out = []
    for hr in hrs[:max_images]:
        lr = hr if downscale == 1 else imresize(hr[None], 1 / float(downscale))[0].clamp(0, 1)
        h, w = lr.shape[-2:]
        side_h, side_w = (min(crop, s) // align * align for s in (h, w))
        if side_h < 1 or side_w < 1:
            raise ValueError(f"an LR image of {h}×{w} px is smaller than the window alignment {align}")
        top, left = (h - side_h) // 2, (w - side_w) // 2
        out.append(lr[:, top : top + side_h, left : left + side_w].contiguous())
    return out


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


def _to_lr_grid(out: Any, args: tuple[Any, ...], lr_size: tuple[int, int]) -> Tensor:
    """A hooked output as a ``(B, C, h, w)`` map on the LR grid (see the module docstring)."""
    if isinstance(out, (tuple, list)):
        out = next((o for o in out if isinstance(o, Tensor)), None)
    if not isinstance(out, Tensor):
        raise ValueError("the module output is not a tensor")
    if out.dim() == 3:  # tokens (B, hw, C)
        b, length, c = out.shape
        hh, ww = _token_size(length, args, lr_size)
        out = out.transpose(1, 2).reshape(b, c, hh, ww)
    elif out.dim() != 4:
        raise ValueError(f"output of shape {tuple(out.shape)} is neither a (B, C, H, W) map nor (B, L, C) tokens")
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
    """``matrix[i, j]`` = CKA between layer ``layers_a[i]`` of model A and ``layers_b[j]`` of model B."""

    matrix: Tensor
    layers_a: list[str]
    layers_b: list[str]
    label_a: str = "A"
    label_b: str = "B"
    estimator: str = "unbiased"
    n_examples: int = 0
    n_images: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def diagonal(self) -> list[float]:
        """``matrix[i, i]`` (meaningful when both layer lists correspond, e.g. a model against itself)."""
        return [float(v) for v in torch.diagonal(self.matrix)]

    def describe(self) -> str:
        """One line stating what was compared and how (plus ``meta``: inputs, scales)."""
        extra = "".join(f"; {k} {v}" for k, v in self.meta.items())
        return (
            f"linear CKA ({self.estimator} HSIC), {self.label_a} ({len(self.layers_a)} layers) vs {self.label_b} "
            f"({len(self.layers_b)} layers), {self.n_examples} pixel examples from {self.n_images} images{extra}"
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
    ax.set_title(f"linear CKA ({result.estimator})", fontsize=10)
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
        description="Linear CKA between the layer features of two models (heat-map PNG + CSV).",
        epilog="Model specs: a weights file, or a model config with overrides ('hat', 'hat,alpha=0,use_ocab=false'), "
        "optionally 'label=spec' (see sresolve.analysis.models). Patterns: '*' within a dotted name component, "
        "'**' across components.",
    )
    p.add_argument("model_a", help="model spec A")
    p.add_argument("model_b", help="model spec B (may be the same spec, e.g. at another --scale-b)")
    p.add_argument("--images", default="samples", help="'samples' (embedded photographs) or an image file/folder")
    p.add_argument("--max-images", type=int, default=3, help="images used (default 3)")
    p.add_argument("--scale", type=int, default=4, help="scale of config specs (default 4)")
    p.add_argument("--scale-b", type=int, default=None, help="scale of model B when it differs (e.g. x2 vs x4)")
    p.add_argument(
        "--downscale", type=float, default=None, help="bicubic factor making the LR inputs (default: scale of A)"
    )
    p.add_argument("--crop", type=int, default=48, help="LR crop side in px (default 48)")
    p.add_argument("--layers", nargs="+", default=None, help="module patterns of A (default layers.* / feats.*)")
    p.add_argument("--layers-b", nargs="+", default=None, help="module patterns of B (default: --layers)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="unbiased", help="HSIC estimator (default unbiased)")
    p.add_argument("--max-examples", type=int, default=4096, help="pixels used as examples (default 4096)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pixel subset")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--out", type=Path, default=Path("outputs/analysis/cka"), help="output folder")
    p.add_argument("--stem", default="cka", help="file names <stem>.csv / <stem>.png (default cka)")
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build both models, compute the matrix, write ``<out>/<stem>.csv`` and ``.png``; returns paths and result."""
    from sresolve.analysis.models import build_model
    from sresolve.cli._common import pick_device

    label_a, net_a = build_model(args.model_a, scale=args.scale)
    label_b, net_b = build_model(args.model_b, scale=args.scale_b or args.scale)
    if label_a == label_b:
        label_a, label_b = f"{label_a} (A)", f"{label_b} (B)"
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
        max_examples=args.max_examples,
        seed=args.seed,
        device=pick_device(args.device),
    )
    lr = images[0].shape[-1]
    result.meta.update(
        images=f"{args.images} (LR crops of {lr} px)",
        scales=f"x{getattr(net_a, 'scale', '?')} / x{getattr(net_b, 'scale', '?')}",
    )
    csv_path = result.write_csv(args.out / f"{args.stem}.csv")
    png_path = result.save_heatmap(args.out / f"{args.stem}.png")
    return {"result": result, "csv": csv_path, "png": png_path}


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
    print(f"\nwritten {out['csv']} and {out['png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
