"""Reference matching of AMRSR (Pesavento et al., ICCV 2021): hierarchical attention-based similarity mapping over
several reference images, part-based to bound memory. Spec ``archs_eqsr_amrsr.md`` B2-B5, B11, B13 (C1-C6, C13, C14).

No learnable parameters: the frozen VGG-19 (:class:`~sresolve.archs.vgg.VGG19Features`, relu1_1/relu2_1/relu3_1) turns
images into features and everything runs under ``torch.no_grad`` in float32 (C13: online matching).

Per input part i (the LR split into an N_I grid, B3 step 1) and reference m (outer loop) and reference part r (inner
loop, an N_R grid on each reference), the supplement's Algorithm 1 reads:

* **level 1, INPUTATT** (Eq. 1+2): the LR relu3_1 feature X (queries, from the bicubic ×4 LR; C1) is split along
  channels into N_C subvectors (the *input* division of supp. Table 4; one subvector without it). Each is
  correlated with the L2-normalised 3×3 key patches of the same channels (keys from relu3_1 of the down-up reference
  part, C1) by one convolution; the argmax runs jointly over (subvector, patch)
  (C5 ``level1="joint"``; ``"per_group"`` keeps one winner per subvector). The winning patches of the HR reference's
  relu3_1/relu2_1/relu1_1 (values) are pasted with overlap averaging: :func:`swap_patches` → O¹ (256×h×w,
  128×2h×2w, 64×4h×4w) and the level-1 score σ¹ (cosine on both sides by default, C3).
* **level 2, REFATT over parts** (Eq. 1+3): per subvector j and position, the candidate part whose O¹ is most similar
  to X at that position (aligned 3×3 cosine, :func:`aligned_similarity`) wins; its relu2_1/relu1_1 choice follows
  by nearest upsampling of the per-subvector decision (C4 ``projection="per_group"``; ``"single"``: one winner per
  position). The split of query and candidates into N_C subvectors here is the *reference* division of supp.
  Table 4; without it there is one subvector j (the whole 256-channel vector). W_m = max_j of the winning level-2
  score (B3 step 5).
* **level 3, REFATT over references**: the same over the O² of the N_M references; W = max_m W_m (C6).

With N_R = 1, level 2 is skipped and W_m = σ¹ (the SRNTT weight); with N_M = 1, level 3 is skipped (B3 step 8).

Subvector division (supp. Table 4, ``subvector_division``): which feature vectors are split into the N_C subvectors.

* ``input`` (default; AMRSR's row "input only"): level 1 runs k over the N_C subvectors c of X (``level1`` applies);
  levels 2/3 compare query and candidates on the whole 256-channel vector (aligned 3×3 cosine over all channels)
  and pick one winner per position for all channels and all three VGG levels.
* ``refs`` (division of the reference vectors only): level 1 on the whole vector (one group: SRNTT's patch match);
  levels 2/3 split query and candidates into N_C subvectors j with a winner per j (``projection`` applies).
* ``both``: both split (the only behaviour of this matcher before the option existed).
* ``none``: no split anywhere; identical to ``n_subvectors=1``.

``level1`` only matters where level 1 is split and ``projection`` only where levels 2/3 are: with one subvector the
joint and per-group argmaxes, and the per-subvector and single winners, coincide.

Weight map W: W = max_m W_m (C6). Without level 2 (N_R = 1) W_m = σ¹, the level-1 winner's cosine: of the winning
subvector (joint argmax over a split level 1), the max over subvectors of the per-subvector winners' cosines
(``level1="per_group"``), or the full-vector cosine (unsplit level 1: ``refs``, ``none``). With level 2, W_m = max
over the subvectors j of the level-2 winners' aligned cosines, which for an unsplit level 2 (``input``, ``none``) is
the one winner's full-vector cosine.

Streaming (B3, "streaming form"): levels 2 and 3 keep a running best (score and features) per (subvector, position),
so peak memory holds one part's score volume and about three sets of O maps whatever N_M is. ``stream=False`` stores
every candidate and takes one batched argmax (the literal Algorithm 1; equal results, ties to the first candidate).
``key_chunk`` additionally splits the key patches of one part into chunks with a running argmax (SRNTT's filter
batches). Memory model (B11): the level-1 volume of one (input part, reference part) pair holds
(H·W/N_I)·(Hr·Wr/16/N_R) floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sresolve.ops.precision import autocast_disabled

__all__ = [
    "SUBVECTOR_DIVISIONS",
    "MatchLevelOne",
    "ReferenceMatcher",
    "SwappedFeatures",
    "aligned_similarity",
    "grid_bounds",
    "input_attention",
    "patch_norm",
    "ref_attention",
    "swap_patches",
]

#: channels of relu3_1 / relu2_1 / relu1_1 and their resolution factor relative to relu3_1 (B3).
VGG_LEVELS: tuple[tuple[str, int, int], ...] = (("relu3_1", 256, 1), ("relu2_1", 128, 2), ("relu1_1", 64, 4))
_EPS = 1e-6


@dataclass
class SwappedFeatures:
    """The matcher's output for a batch: swapped VGG maps at three levels and the weight map W (B3 steps 6-7).

    ``o3``: B×256×h×w (relu3_1, LR resolution), ``o2``: B×128×2h×2w (relu2_1), ``o1``: B×64×4h×4w (relu1_1),
    ``weight``: B×1×h×w in [0, 1] (cosine; VGG features are non-negative).
    """

    o3: Tensor
    o2: Tensor
    o1: Tensor
    weight: Tensor

    @classmethod
    def cat(cls, items: Sequence[SwappedFeatures]) -> SwappedFeatures:
        return cls(*(torch.cat([getattr(s, k) for s in items]) for k in ("o3", "o2", "o1", "weight")))

    def as_dict(self) -> dict[str, Tensor]:
        """``{"relu3_1": o3, "relu2_1": o2, "relu1_1": o1}`` (the texture loss's targets, B8)."""
        return {name: m for (name, _, _), m in zip(VGG_LEVELS, self.maps(), strict=True)}

    def maps(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.o3, self.o2, self.o1

    def to(self, *args: object, **kwargs: object) -> SwappedFeatures:
        return SwappedFeatures(*(getattr(self, k).to(*args, **kwargs) for k in ("o3", "o2", "o1", "weight")))


# --------------------------------------------------------------------------------------------------- primitives
def grid_bounds(length: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``parts`` near-equal consecutive pieces of ``range(length)`` (the N_I / N_R grids)."""
    edges = [round(i * length / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


def _box3(x: Tensor) -> Tensor:
    """Sum over each 3×3 neighbourhood (zero padding): ``(..., h, w)`` → same shape."""
    shape = x.shape
    y = F.avg_pool2d(x.reshape(-1, 1, *shape[-2:]), 3, stride=1, padding=1, count_include_pad=True) * 9.0
    return y.reshape(shape)


def patch_norm(x: Tensor, groups: int = 1) -> Tensor:
    """L2 norm of the 3×3×(C/groups) patch around every position of each channel group: C×h×w → groups×h×w."""
    c, h, w = x.shape
    return _box3(x.pow(2).reshape(groups, c // groups, h, w).sum(1)).clamp_min(0).sqrt()


def aligned_similarity(x: Tensor, o: Tensor, groups: int, similarity: str = "cosine") -> Tensor:
    """Per subvector j and position: the 3×3 patch of ``x`` against the 3×3 patch of candidate ``o`` *at the same
    position* (REFATT, B5: M[j](x,y) = Y_k*[j](x,y)). Cosine on both sides (C3) or normalised by the candidate only
    (``"ref_norm"``, the literal Eq. 1). ``x``, ``o``: C×h×w → groups×h×w."""
    c, h, w = x.shape
    dot = _box3((x * o).reshape(groups, c // groups, h, w).sum(1))
    denom = patch_norm(o, groups) + _EPS
    if similarity == "cosine":
        denom = denom * (patch_norm(x, groups) + _EPS)
    return dot / denom


@dataclass
class MatchLevelOne:
    """Level-1 result for one (input part, reference part): ``index`` G×h'×w' of the winning key patch (G = 1 for the
    joint argmax), ``score`` h'×w' (σ¹, the best score at each position), ``key_hw`` the key map size."""

    index: Tensor
    score: Tensor
    key_hw: tuple[int, int]


def input_attention(
    query: Tensor,
    keys: Tensor,
    groups: int,
    *,
    similarity: str = "cosine",
    level1: str = "joint",
    padding: str = "same",
    key_chunk: int | None = None,
) -> MatchLevelOne:
    """INPUTATT (B5, Eq. 1+2): cosine patch matching by convolution, streamed over channel groups and key chunks.

    ``query`` C×h×w (relu3_1 of the bicubic-upsampled LR part), ``keys`` C×hk×wk (relu3_1 of the down-up reference
    part). For group c the normalised 3×3 key patches of channels c are the conv filters applied to the query's
    channels c; the score volume of one group is P×h'×w' (P key patches). ``level1="joint"``: one argmax over (c, p)
    (variant A, C5); ``"per_group"``: each group its own argmax. ``similarity`` ranks the groups by the cosine (C3)
    or by the query-unnormalised score (Eq. 1); the returned σ¹ is the winner's cosine either way (SRNTT's weight).
    ``padding="same"`` (TTSR, C14) or ``"valid"`` (SRNTT; h' = h - 2).
    """
    c, h, w = query.shape
    cg = c // groups
    pad = 1 if padding == "same" else 0
    hk, wk = keys.shape[-2:]
    kernels = F.unfold(keys[None], 3, padding=pad)[0]  # (C·9)×P, channel-major
    n_patches = kernels.shape[1]
    kernels = kernels.t().reshape(n_patches, groups, cg, 3, 3)
    chunk = n_patches if not key_chunk else max(1, int(key_chunk))
    qnorm = patch_norm(query, groups)
    if pad == 0:
        qnorm = qnorm[:, 1:-1, 1:-1]
    out_h, out_w = h - 2 + 2 * pad, w - 2 + 2 * pad
    best = torch.full((groups, out_h, out_w), -math.inf, device=query.device)
    index = torch.zeros((groups, out_h, out_w), dtype=torch.long, device=query.device)
    qpad = F.pad(query[None], (pad, pad, pad, pad))
    for g in range(groups):
        q = qpad[:, g * cg : (g + 1) * cg]
        for start in range(0, n_patches, chunk):
            filt = kernels[start : start + chunk, g]
            filt = filt / (filt.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + _EPS)
            scores = F.conv2d(q, filt)[0]  # chunk×h'×w': the one score volume alive at a time
            val, idx = scores.max(dim=0)
            del scores  # freed before the next group's convolution allocates its own
            better = val > best[g]
            best[g] = torch.where(better, val, best[g])
            index[g] = torch.where(better, idx + start, index[g])
    cosine = best / (qnorm + _EPS)  # σ¹ is always the cosine (SRNTT's weight), whatever ranks the groups (C3)
    if level1 == "joint":
        group = (cosine if similarity == "cosine" else best).argmax(dim=0)
        return MatchLevelOne(index.gather(0, group[None]), cosine.gather(0, group[None])[0], (hk, wk))
    return MatchLevelOne(index, cosine.max(dim=0).values, (hk, wk))


def swap_patches(values: Tensor, index: Tensor, key_hw: tuple[int, int], factor: int, padding: str = "same") -> Tensor:
    """Paste the winning value patches (size 3·f, stride f; f = 1, 2, 4 for relu3_1/2_1/1_1) at every query position
    and average the overlaps (B3 step 3c).

    ``values`` C×(f·hk)×(f·wk) (VGG features of the HR reference part), ``index`` G×h'×w' (G divides C; channel group
    g uses its own winners), ``key_hw`` the relu3_1 key grid. With ``padding="same"`` the query position (y, x) is the
    centre of its patch (source patches reach one key pixel beyond the border: zeros, as in TTSR's padded unfold) and
    the output is C×(f·h')×(f·w'); with ``"valid"`` (y, x) is the top-left corner and the output is C×f(h'+2)×f(w'+2).
    Implemented as 9f² shifted gathers and strided adds: memory stays O(C·h'·w'), never the unfolded patches.
    """
    c = values.shape[0]
    groups, hq, wq = index.shape
    same = padding == "same"
    kw = key_hw[1] if same else key_hw[1] - 2  # width of the key patch grid
    f = factor
    vpad = F.pad(values, (f, f, f, f)) if same else values
    vh, vw = vpad.shape[-2:]
    py = torch.div(index, kw, rounding_mode="floor")
    px = index - py * kw
    base = (py * f * vw + px * f).reshape(groups, 1, hq * wq)  # top-left of the patch in vpad
    flat = vpad.reshape(groups, c // groups, vh * vw)
    oh, ow = f * hq + 2 * f, f * wq + 2 * f  # output with a margin of f (same) / exact size f(h'+2) (valid)
    out = torch.zeros(groups, c // groups, oh, ow, device=values.device, dtype=values.dtype)
    count = torch.zeros(oh, ow, device=values.device, dtype=values.dtype)
    for a in range(3 * f):
        for b in range(3 * f):
            src = flat.gather(2, (base + (a * vw + b)).expand(groups, c // groups, hq * wq))
            out[:, :, a : a + f * hq : f, b : b + f * wq : f] += src.reshape(groups, c // groups, hq, wq)
            count[a : a + f * hq : f, b : b + f * wq : f] += 1
    out = out / count.clamp_min(1)
    out = out.reshape(c, oh, ow)
    return out[:, f:-f, f:-f] if same else out


def ref_attention(query: Tensor, candidates: Sequence[Tensor], groups: int, similarity: str = "cosine") -> Tensor:
    """Batched REFATT (B5, Eq. 1+3): scores K×groups×h×w of each candidate relu3_1 map against ``query``, aligned;
    ``scores.argmax(0)`` is the per-subvector winner. The streaming matcher gets the same winners with a running max
    (:class:`_RunningBest`)."""
    return torch.stack([aligned_similarity(query, o, groups, similarity) for o in candidates])


def _selection_scores(scores: Tensor, projection: str) -> Tensor:
    """What levels 2/3 rank candidates by: per subvector (C4), or their mean for one winner per position."""
    return scores.mean(-3, keepdim=True).expand_as(scores) if projection == "single" else scores


class _RunningBest:
    """Running best candidate per (subvector, position) for levels 2/3: its ranking score, its cosine (for W) and its
    three swapped maps. ``update`` replaces only on strictly greater scores, so ties keep the first candidate (as
    ``argmax``)."""

    def __init__(self, groups: int, projection: str) -> None:
        self.groups, self.projection = groups, projection
        self.score: Tensor | None = None
        self.cosine: Tensor | None = None
        self.maps: list[Tensor] = []

    def update(self, scores: Tensor, maps: Sequence[Tensor], cosine: Tensor) -> None:
        """``scores`` groups×h×w of this candidate (ranking), ``cosine`` the same as cosines; ``maps`` its
        (o3, o2, o1)."""
        scores = _selection_scores(scores, self.projection)
        if self.score is None or self.cosine is None:
            self.score, self.cosine, self.maps = scores.clone(), cosine.clone(), [m.clone() for m in maps]
            return
        better = scores > self.score
        self.score = torch.where(better, scores, self.score)
        self.cosine = torch.where(better, cosine, self.cosine)
        for i, (old, new) in enumerate(zip(self.maps, maps, strict=True)):
            f = new.shape[-1] // better.shape[-1]
            mask = better if f == 1 else better.repeat_interleave(f, 1).repeat_interleave(f, 2)
            c = new.shape[0]
            shape = (self.groups, c // self.groups, *new.shape[-2:])
            self.maps[i] = torch.where(mask[:, None], new.reshape(shape), old.reshape(shape)).reshape(new.shape)


# --------------------------------------------------------------------------------------------------- the matcher
#: supp. Table 4: subvector division → (level 1 split into N_C subvectors, levels 2/3 split into N_C subvectors).
SUBVECTOR_DIVISIONS: dict[str, tuple[bool, bool]] = {
    "input": (True, False),
    "none": (False, False),
    "refs": (False, True),
    "both": (True, True),
}

_CHOICES = {
    "similarity": ("cosine", "ref_norm"),
    "level1": ("joint", "per_group"),
    "projection": ("per_group", "single"),
    "padding": ("same", "valid"),
    "subvector_division": tuple(SUBVECTOR_DIVISIONS),
}


def _grid_side(n: int, key: str) -> int:
    side = math.isqrt(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0
    if side == 0 or side * side != n:
        raise ValueError(f"{key} must be a square number of parts (1, 4, 16, ...: a g×g grid), got {n!r}")
    return side


class ReferenceMatcher(nn.Module):
    """Hierarchical attention-based similarity mapping (module docstring), with the frozen VGG-19 it needs.

    Args:
        vgg_weights: VGG-19 file, ``"random"`` or ``None`` (torch hub cache), see :mod:`sresolve.archs.vgg`.
        n_input_parts: N_I (square: 1, 4, 16); matching runs per LR part, outputs are stitched (C15).
        n_ref_parts: N_R (square: 1, 4, 16); each reference is split into a grid, level 2 selects across parts.
        n_subvectors: N_C, channel groups of the feature vectors (divides 64; C2, default 4).
        similarity: ``cosine`` (both sides normalised, C3) or ``ref_norm`` (Eq. 1 literally).
        level1: ``joint`` (variant A, C5) or ``per_group``.
        projection: ``per_group`` (C4) or ``single`` winner per position at levels 2/3 (only matters when levels 2/3
            are split, ``subvector_division`` ``refs`` or ``both``).
        subvector_division: supp. Table 4, which vectors are split into the N_C subvectors: ``input`` (level 1
            only, AMRSR's "input only", default), ``refs`` (levels 2/3 only), ``both`` or ``none`` (= N_C = 1); see
            the module docstring for the weight map W in each case.
        padding: ``same`` (C14) or ``valid`` (SRNTT; W border-replicated to h×w).
        stream: running best over candidates (flat memory in N_M) or stored candidates + batched argmax.
        key_chunk: key patches per convolution (``None``: one part at once).
    """

    def __init__(
        self,
        vgg_weights: str | Path | None = None,
        n_input_parts: int = 1,
        n_ref_parts: int = 1,
        n_subvectors: int = 4,
        similarity: str = "cosine",
        level1: str = "joint",
        projection: str = "per_group",
        padding: str = "same",
        stream: bool = True,
        key_chunk: int | None = None,
        subvector_division: str = "input",
    ) -> None:
        super().__init__()
        from sresolve.archs.vgg import VGG19Features

        for key, allowed in _CHOICES.items():
            if locals()[key] not in allowed:
                raise ValueError(f"{key}={locals()[key]!r}: allowed {list(allowed)}")
        if not isinstance(n_subvectors, int) or n_subvectors < 1 or 64 % n_subvectors:
            raise ValueError(f"n_subvectors (N_C) must divide 64 (and so 128 and 256), got {n_subvectors!r}")
        if key_chunk is not None and (not isinstance(key_chunk, int) or key_chunk < 1):
            raise ValueError(f"key_chunk must be a positive int or null, got {key_chunk!r}")
        self.set_parts(n_input_parts, n_ref_parts)
        self.n_subvectors = n_subvectors
        self.similarity, self.level1, self.projection, self.padding = similarity, level1, projection, padding
        self.subvector_division = subvector_division
        self.stream, self.key_chunk = bool(stream), key_chunk
        self.vgg = VGG19Features(("relu1_1", "relu2_1", "relu3_1"), weights=vgg_weights)

    def extra_repr(self) -> str:
        return (
            f"N_I={self.n_input_parts}, N_R={self.n_ref_parts}, N_C={self.n_subvectors}, similarity={self.similarity}, "
            f"level1={self.level1}, projection={self.projection}, padding={self.padding}, stream={self.stream}, "
            f"subvector_division={self.subvector_division}"
        )

    @property
    def input_groups(self) -> int:
        """Subvectors of level 1 (INPUTATT's k over c): N_C with the input division (``input``, ``both``), else 1."""
        return self.n_subvectors if SUBVECTOR_DIVISIONS[self.subvector_division][0] else 1

    @property
    def ref_groups(self) -> int:
        """Subvectors j of levels 2/3 (REFATT): N_C with the reference division (``refs``, ``both``), else 1."""
        return self.n_subvectors if SUBVECTOR_DIVISIONS[self.subvector_division][1] else 1

    def set_parts(self, n_input_parts: int, n_ref_parts: int) -> None:
        """Change N_I and N_R (the part-based trade-off of B11; e.g. for ``sresolve-test match_parts=...``)."""
        self.input_grid = _grid_side(n_input_parts, "n_input_parts")
        self.ref_grid = _grid_side(n_ref_parts, "n_ref_parts")
        self.n_input_parts, self.n_ref_parts = n_input_parts, n_ref_parts

    @property
    def min_ref_size(self) -> int:
        """Smallest reference side: each of the g_R parts must hold 3 relu3_1 pixels (12 px)."""
        return 12 * self.ref_grid

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def forward(
        self, lr: Tensor, refs: Sequence[Sequence[Tensor]], names: Sequence[str] | None = None
    ) -> SwappedFeatures:
        """``lr`` B×3×h×w in [0, 1]; ``refs[b]`` the N_M ≥ 1 references (3×H×W, any sizes) of sample b."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must be B×3×h×w, got {tuple(lr.shape)}")
        if len(refs) != lr.shape[0]:
            raise ValueError(f"{len(refs)} reference lists for a batch of {lr.shape[0]} LR images")
        names = list(names) if names is not None else [f"#{i}" for i in range(lr.shape[0])]
        with autocast_disabled(lr.device.type):
            out = [self.match_one(lr[b].float(), refs[b], name=names[b]) for b in range(lr.shape[0])]
        return SwappedFeatures.cat(out)

    @torch.no_grad()
    def match_one(self, lr: Tensor, refs: Sequence[Tensor], name: str = "?") -> SwappedFeatures:
        """One sample: LR 3×h×w and its references → maps with batch 1."""
        from sresolve.data.degradation import imresize

        refs = self._check_refs(refs, name, lr.device)
        h, w = lr.shape[-2:]
        if min(h, w) < 3 * self.input_grid:
            raise ValueError(
                f"LR of sample {name!r} is {h}×{w} px; with n_input_parts={self.n_input_parts} each side needs >= "
                f"{3 * self.input_grid} px (3 relu3_1 pixels per part)"
            )
        lr_up = imresize(lr, 4.0).clamp_(0, 1)  # I_LR↑ (C1)
        o3 = lr.new_zeros(256, h, w)
        o2 = lr.new_zeros(128, 2 * h, 2 * w)
        o1 = lr.new_zeros(64, 4 * h, 4 * w)
        weight = lr.new_zeros(1, h, w)
        for y0, y1 in grid_bounds(h, self.input_grid):
            for x0, x1 in grid_bounds(w, self.input_grid):
                part = lr_up[:, 4 * y0 : 4 * y1, 4 * x0 : 4 * x1]
                maps, wmap = self._match_part(part, refs)
                o3[:, y0:y1, x0:x1], o2[:, 2 * y0 : 2 * y1, 2 * x0 : 2 * x1] = maps[0], maps[1]
                o1[:, 4 * y0 : 4 * y1, 4 * x0 : 4 * x1], weight[0, y0:y1, x0:x1] = maps[2], wmap
        return SwappedFeatures(o3[None], o2[None], o1[None], weight[None])

    # ------------------------------------------------------------------ internals
    def _check_refs(self, refs: Sequence[Tensor], name: str, device: torch.device) -> list[Tensor]:
        if len(refs) == 0:
            raise ValueError(f"sample {name!r} has no reference images (AMRSR needs N_M >= 1)")
        out = []
        for i, ref in enumerate(refs):
            if ref.ndim != 3 or ref.shape[0] != 3:
                raise ValueError(f"reference {i} of sample {name!r} must be 3×H×W, got {tuple(ref.shape)}")
            hr, wr = (s - s % 4 for s in ref.shape[-2:])  # crop to a multiple of 4 (B3)
            if min(hr, wr) < self.min_ref_size:
                raise ValueError(
                    f"reference {i} of sample {name!r} is {ref.shape[-2]}×{ref.shape[-1]} px; with n_ref_parts="
                    f"{self.n_ref_parts} each side needs >= {self.min_ref_size} px (3 relu3_1 pixels per part)"
                )
            out.append(ref[:, :hr, :wr].to(device).float())
        return out

    def _features(self, img: Tensor) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.vgg(img[None]).items()}

    def _match_part(self, lr_up_part: Tensor, refs: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Levels 1-3 for one input part: returns the stitched (o3, o2, o1) of this part and its weight h×w."""
        from sresolve.data.degradation import imresize

        groups = self.ref_groups
        x = self._features(lr_up_part)["relu3_1"]
        level3 = _RunningBest(groups, self.projection)
        stored3: list[tuple[list[Tensor], Tensor, Tensor]] = []
        weight: Tensor | None = None  # W = max_m W_m (C6)
        for ref in refs:
            ref_du = imresize(imresize(ref, 0.25), 4.0).clamp_(0, 1)  # I_ref↓↑ (C1)
            hq, wq = ref.shape[-2] // 4, ref.shape[-1] // 4
            level2 = _RunningBest(groups, self.projection)
            stored2: list[tuple[list[Tensor], Tensor, Tensor]] = []
            for a0, a1 in grid_bounds(hq, self.ref_grid):
                for b0, b1 in grid_bounds(wq, self.ref_grid):
                    sl = (slice(None), slice(4 * a0, 4 * a1), slice(4 * b0, 4 * b1))
                    keys = self._features(ref_du[sl])["relu3_1"]
                    values = self._features(ref[sl])
                    maps, score = self._level_one(x, keys, values)
                    if self.ref_grid == 1:  # level 2 skipped (B3 step 8): W_m = σ¹
                        stored2.append((maps, score, score))
                        continue
                    scores, cosine = self._aligned(x, maps[0])
                    if self.stream:
                        level2.update(scores, maps, cosine)
                    else:
                        stored2.append((maps, scores, cosine))
            if self.ref_grid == 1:
                maps_m, weight_m = stored2[0][0], stored2[0][1]
            elif self.stream:
                assert level2.cosine is not None
                maps_m, weight_m = level2.maps, level2.cosine.max(0).values
            else:
                maps_m, weight_m = self._batched_select(stored2)
            if len(refs) == 1:  # level 3 skipped
                return maps_m, weight_m
            weight = weight_m if weight is None else torch.maximum(weight, weight_m)
            scores, cosine = self._aligned(x, maps_m[0])
            if self.stream:
                level3.update(scores, maps_m, cosine)
            else:
                stored3.append((maps_m, scores, cosine))
        assert weight is not None
        if self.stream:
            return level3.maps, weight
        return self._batched_select(stored3)[0], weight

    def _level_one(self, x: Tensor, keys: Tensor, values: Mapping[str, Tensor]) -> tuple[list[Tensor], Tensor]:
        """INPUTATT over :attr:`input_groups` subvectors + swap at the three VGG levels: ([o3, o2, o1], σ¹ h×w)."""
        m = input_attention(
            x,
            keys,
            self.input_groups,
            similarity=self.similarity,
            level1=self.level1,
            padding=self.padding,
            key_chunk=self.key_chunk,
        )
        maps = [swap_patches(values[name], m.index, m.key_hw, f, self.padding) for name, _, f in VGG_LEVELS]
        score = m.score
        if self.padding == "valid":  # (h-2)×(w-2) → h×w by border replication (SRNTT)
            score = F.pad(score[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
        return maps, score

    def _aligned(self, x: Tensor, o3: Tensor) -> tuple[Tensor, Tensor]:
        """Level-2/3 scores of a candidate, :attr:`ref_groups` × h × w: (ranking score per ``similarity``, cosine
        for W)."""
        cosine = aligned_similarity(x, o3, self.ref_groups, "cosine")
        if self.similarity == "cosine":
            return cosine, cosine
        return aligned_similarity(x, o3, self.ref_groups, self.similarity), cosine

    def _batched_select(self, stored: Sequence[tuple[list[Tensor], Tensor, Tensor]]) -> tuple[list[Tensor], Tensor]:
        """Non-streamed REFATT: stack the K candidates' scores, argmax over K, gather (identical to streaming).
        Returns the maps and W_m = max over subvectors of the winners' cosines (B3 step 5)."""
        scores = _selection_scores(torch.stack([s for _, s, _ in stored]), self.projection)  # K×G×h×w
        groups = self.ref_groups
        win = scores.argmax(0)  # G×h×w
        cosine = torch.stack([c for _, _, c in stored]).gather(0, win[None])[0]
        maps = []
        for level in range(3):
            cand = torch.stack([m[level] for m, _, _ in stored])  # K×C×H×W
            k, c, hh, ww = cand.shape
            f = hh // win.shape[-2]
            sel = win if f == 1 else win.repeat_interleave(f, 1).repeat_interleave(f, 2)
            cand = cand.reshape(k, groups, c // groups, hh, ww)
            idx = sel[None, :, None].expand(1, groups, c // groups, hh, ww)
            maps.append(cand.gather(0, idx)[0].reshape(c, hh, ww))
        return maps, cosine.max(0).values
