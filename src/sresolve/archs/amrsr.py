"""AMRSR: Attention-based Multi-Reference Super-resolution (×4).

Pesavento, Volino, Hilton, "Attention-based Multi-Reference Learning for Image Super-Resolution", ICCV 2021. No
official code exists; this file is written from ``/work/shared/specs/archs_eqsr_amrsr.md`` part B:

* :class:`AMRSRGenerator` - the texture-transfer generator of supp. Table 1 (spec B6), which is SRNTT's conditional
  texture-transfer network: content features of the LR are fused with the swapped reference features ``O_3``
  (relu3_1, LR size), ``O_2`` (relu2_1, 2×) and ``O_1`` (relu1_1, 4×) at three scales, each followed by residual
  blocks, with two pixel-shuffle ×2 upsamplers in between. Choices C7 (tail) and C8 (content depth) follow the
  recommendations of spec B13.
* :class:`SRNTTDiscriminator` - the discriminator "the same as SRNTT" (spec B7), with TTSR's BN-free variant as the
  default (choice C9).

* :class:`AMRSR` - the registered network ``amrsr``: the reference matcher (:mod:`sresolve.ops.refmatch`) and the
  generator; ``net(lr, refs)``.

LeakyReLU slope: every LeakyReLU here uses :data:`LRELU_SLOPE` = 0.2, the slope of SRNTT's TF texture-transfer net and
of the SRGAN-lineage discriminator (spec B7). srntt-pytorch uses 0.1 in its generator; we keep one slope for the whole
generator (content head, fusion convs, pixel-shuffle convs and tail) so that the network has one activation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sresolve.archs.registry import register_arch, register_detector
from sresolve.ops.refmatch import VGG_LEVELS

__all__ = [
    "AMRSR",
    "LRELU_SLOPE",
    "REF_CHANNELS",
    "AMRSRGenerator",
    "ContentExtractor",
    "ResBlock",
    "SRNTTDiscriminator",
    "amrsr",
    "detect_amrsr",
    "zero_references",
]

#: negative slope of every LeakyReLU in this file (SRNTT TF generator and discriminator).
LRELU_SLOPE = 0.2
#: channels of the swapped VGG-19 maps: ``o3`` relu3_1, ``o2`` relu2_1, ``o1`` relu1_1 (spec B1, B6).
REF_CHANNELS = tuple(channels for _, channels, _ in VGG_LEVELS)
#: the generator's only scale factor (spec B6: two pixel-shuffle ×2 stages).
SCALE = 4


def _fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


class ResBlock(nn.Module):
    """Conv3×3 → ReLU → Conv3×3 with an identity skip and no BN (spec B6, ids 3–38; EDSR/SRNTT style).

    ``res_scale`` multiplies the residual branch before the addition (1.0 = SRNTT).
    """

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, 1, 1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, 1, 1)
        self.res_scale = float(res_scale)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.act(self.conv1(x)))
        if self.res_scale != 1.0:
            out = out * self.res_scale
        return x + out


def _res_blocks(n: int, n_feats: int, res_scale: float) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(n_feats, res_scale) for _ in range(n)))


def _conv_lrelu(c_in: int, c_out: int) -> nn.Sequential:
    """Conv3×3 + LeakyReLU(0.2): the fusion convs of spec B6 (ids 2, 22, 34)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.LeakyReLU(LRELU_SLOPE, inplace=True))


def _upsample_x2(n_feats: int) -> nn.Sequential:
    """Conv3×3 n→4n, PixelShuffle(2), LeakyReLU(0.2) (spec B6, ids 20 and 32)."""
    return nn.Sequential(
        nn.Conv2d(n_feats, 4 * n_feats, 3, 1, 1), nn.PixelShuffle(2), nn.LeakyReLU(LRELU_SLOPE, inplace=True)
    )


class ContentExtractor(nn.Module):
    """``ImgFeature`` of spec B6 (id 0): Conv3×3 3→n_feats, LeakyReLU(0.2), ``n_blocks`` :class:`ResBlock`.

    Choice C8: SRNTT uses a frozen, pretrained SRGAN trunk here; AMRSR's table says "Residual Blocks" and we train
    the extractor end to end with the rest of the generator.
    """

    def __init__(self, n_feats: int = 64, n_blocks: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.head = _conv_lrelu(3, n_feats)
        self.body = _res_blocks(n_blocks, n_feats, res_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.head(x))


def zero_references(lr: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Empty references for ``lr`` (B×3×h×w): zero ``o3``, ``o2``, ``o1`` and a zero weight map.

    This is the input the generator gets when no reference is available (e.g. a no-reference ablation); the
    generator then acts as a plain single-image SR network with zero texture inputs.
    """
    b, _, h, w = lr.shape
    kw = {"dtype": lr.dtype, "device": lr.device}
    o3 = torch.zeros(b, REF_CHANNELS[0], h, w, **kw)
    o2 = torch.zeros(b, REF_CHANNELS[1], 2 * h, 2 * w, **kw)
    o1 = torch.zeros(b, REF_CHANNELS[2], 4 * h, 4 * w, **kw)
    weight = torch.zeros(b, 1, h, w, **kw)
    return o3, o2, o1, weight


class AMRSRGenerator(nn.Module):
    """AMRSR / SRNTT texture-transfer generator, ×4 (spec B6 = AMRSR supp. Table 1; C7, C8).

    Layout (resolutions relative to the LR h×w; ``n`` = ``n_feats``):

    ==========  =====================================================================  ============
    ids         module                                                                 output
    ==========  =====================================================================  ============
    0           ``content``: Conv 3→n, LeakyReLU, ``n_feat_blocks`` ResBlocks           n×h×w
    1–2         concat(content, ``o3``) → ``fuse3``: Conv (n+256)→n, LeakyReLU          n×h×w
    3–18        ``body3``: ``n_blocks[0]`` ResBlocks                                    n×h×w
    19          + content (skip from id 0)                                             n×h×w
    20          ``up2``: Conv n→4n, PixelShuffle ×2, LeakyReLU                          n×2h×2w
    21–22       concat(up2, ``o2``) → ``fuse2``: Conv (n+128)→n, LeakyReLU              n×2h×2w
    23–30       ``body2``: ``n_blocks[1]`` ResBlocks                                    n×2h×2w
    31          + up2 output                                                           n×2h×2w
    32          ``up1``: Conv n→4n, PixelShuffle ×2, LeakyReLU                          n×4h×4w
    33–34       concat(up1, ``o1``) → ``fuse1``: Conv (n+64)→n, LeakyReLU               n×4h×4w
    35–38       ``body1``: ``n_blocks[2]`` ResBlocks                                    n×4h×4w
    39          + up1 output                                                           n×4h×4w
    tail (C7)   ``tail``: Conv3×3 n→n/2, LeakyReLU, Conv3×3 n/2→3 (no tanh)             3×4h×4w
    ==========  =====================================================================  ============

    Table 1's id 40 ("Conv, PixelShuffle(2x), LeakyReLU") would make the network ×8, so the tail is srntt-pytorch's
    (choice C7), with LeakyReLU(0.2) like the rest of this generator (see the module docstring) and no tanh; with
    ``global_residual`` the bicubic ×4 upsampling of the LR is added to the output.

    Weight map (SRNTT's "concat weights" variant, ``use_weight_map``): before each concatenation the swapped map is
    gated, ``O_v ← O_v · sigmoid(a_v · up_v(W) + b_v)``, with ``up_v`` the bicubic ×1/×2/×4 upsampling of the
    confidence map ``W`` and learnable scalars ``gate_a[v]``, ``gate_b[v]`` (index 0, 1, 2 = relu3_1, relu2_1,
    relu1_1), initialised to ``gate_init`` = (a, b) (SRNTT TF: a=1, b=0; srntt-pytorch: a=b=1). ``weight=None``
    disables the gating for that call.

    Empty references: pass zero ``o3``/``o2``/``o1`` and a zero ``weight`` (:func:`zero_references`).

    Args:
        n_feats: feature width (64 in SRNTT/AMRSR).
        n_feat_blocks: ResBlocks of the content extractor (C8).
        n_blocks: ResBlocks after the ×1 / ×2 / ×4 fusions (16, 8, 4).
        use_weight_map: gate the swapped maps by the similarity map.
        gate_init: initial (a_v, b_v) of the gates.
        global_residual: add ``bicubic(lr, ×4)`` to the output (C7 option).
        res_scale: scale of the residual branch of every ResBlock.

    Input: ``lr`` B×3×h×w in [0, 1]; ``o3`` B×256×h×w, ``o2`` B×128×2h×2w, ``o1`` B×64×4h×4w, ``weight`` B×1×h×w
    in [0, 1] or ``None``. Output: B×3×4h×4w (not clamped).
    """

    scale = SCALE

    def __init__(
        self,
        n_feats: int = 64,
        n_feat_blocks: int = 16,
        n_blocks: Sequence[int] = (16, 8, 4),
        use_weight_map: bool = True,
        gate_init: Sequence[float] = (1.0, 0.0),
        global_residual: bool = False,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        n_blocks = tuple(int(n) for n in n_blocks)
        if len(n_blocks) != 3 or min(n_blocks) < 0:
            raise ValueError(f"AMRSRGenerator: n_blocks must be 3 non-negative ints (×1, ×2, ×4), got {n_blocks}")
        if n_feats < 2 or n_feat_blocks < 0:
            raise ValueError(f"AMRSRGenerator: need n_feats >= 2, n_feat_blocks >= 0; got {n_feats}, {n_feat_blocks}")
        gate_init = tuple(float(g) for g in gate_init)
        if len(gate_init) != 2:
            raise ValueError(f"AMRSRGenerator: gate_init must be (a, b), got {gate_init}")
        self.n_feats = n_feats
        self.use_weight_map = use_weight_map
        self.global_residual = global_residual
        c3, c2, c1 = REF_CHANNELS

        self.content = ContentExtractor(n_feats, n_feat_blocks, res_scale)
        self.fuse3 = _conv_lrelu(n_feats + c3, n_feats)
        self.body3 = _res_blocks(n_blocks[0], n_feats, res_scale)
        self.up2 = _upsample_x2(n_feats)
        self.fuse2 = _conv_lrelu(n_feats + c2, n_feats)
        self.body2 = _res_blocks(n_blocks[1], n_feats, res_scale)
        self.up1 = _upsample_x2(n_feats)
        self.fuse1 = _conv_lrelu(n_feats + c1, n_feats)
        self.body1 = _res_blocks(n_blocks[2], n_feats, res_scale)
        self.tail = nn.Sequential(
            nn.Conv2d(n_feats, n_feats // 2, 3, 1, 1),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            nn.Conv2d(n_feats // 2, 3, 3, 1, 1),
        )
        if use_weight_map:
            self.gate_a = nn.Parameter(torch.full((3,), gate_init[0]))
            self.gate_b = nn.Parameter(torch.full((3,), gate_init[1]))

    # ------------------------------------------------------------------------------------------------ validation
    @staticmethod
    def check_inputs(lr: Tensor, o3: Tensor, o2: Tensor, o1: Tensor, weight: Tensor | None) -> None:
        """Raise a ValueError naming the first tensor whose shape does not match ``lr`` (B×3×h×w)."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"AMRSRGenerator: lr must be B×3×h×w, got {_fmt_shape(lr.shape)}")
        b, _, h, w = lr.shape
        c3, c2, c1 = REF_CHANNELS
        expected = [
            ("o3", o3, f"B×{c3}×h×w", (b, c3, h, w)),
            ("o2", o2, f"B×{c2}×2h×2w", (b, c2, 2 * h, 2 * w)),
            ("o1", o1, f"B×{c1}×4h×4w", (b, c1, 4 * h, 4 * w)),
        ]
        if weight is not None:
            expected.append(("weight", weight, "B×1×h×w", (b, 1, h, w)))
        for name, t, formula, shape in expected:
            if tuple(t.shape) != shape:
                raise ValueError(
                    f"AMRSRGenerator: {name} must be {formula} = {_fmt_shape(shape)} for lr {_fmt_shape(lr.shape)}, "
                    f"got {_fmt_shape(t.shape)}"
                )

    # ------------------------------------------------------------------------------------------------ gating
    def gate(self, weight: Tensor, level: int, size: tuple[int, int]) -> Tensor:
        """``sigmoid(a_v · up_v(W) + b_v)`` for level index ``level`` (0 = relu3_1, 1 = relu2_1, 2 = relu1_1)."""
        up = weight
        if tuple(weight.shape[-2:]) != size:
            up = F.interpolate(weight, size=size, mode="bicubic", align_corners=False)
        return torch.sigmoid(self.gate_a[level] * up + self.gate_b[level])

    def _gated(self, o: Tensor, weight: Tensor | None, level: int) -> Tensor:
        if not self.use_weight_map or weight is None:
            return o
        return o * self.gate(weight, level, (o.shape[-2], o.shape[-1]))

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, lr: Tensor, o3: Tensor, o2: Tensor, o1: Tensor, weight: Tensor | None = None) -> Tensor:
        self.check_inputs(lr, o3, o2, o1, weight)
        content = self.content(lr)  # id 0
        x = self.fuse3(torch.cat([content, self._gated(o3, weight, 0)], dim=1))  # ids 1-2
        x = self.body3(x) + content  # ids 3-19
        up = self.up2(x)  # id 20
        x = self.fuse2(torch.cat([up, self._gated(o2, weight, 1)], dim=1))  # ids 21-22
        x = self.body2(x) + up  # ids 23-31
        up = self.up1(x)  # id 32
        x = self.fuse1(torch.cat([up, self._gated(o1, weight, 2)], dim=1))  # ids 33-34
        x = self.body1(x) + up  # ids 35-39
        out = self.tail(x)
        if self.global_residual:
            out = out + F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        return out


class SRNTTDiscriminator(nn.Module):
    """SRNTT's discriminator (spec B7), with TTSR's BN-free layout by default (choice C9).

    Five stages of (Conv3×3 s1 → norm → LeakyReLU(0.2), Conv3×3 s2 → norm → LeakyReLU(0.2)) with ``channels``
    (32, 64, 128, 256, 512), flatten ((patch_size/32)²·512 features), Linear → 1024, LeakyReLU(0.2), Linear → 1
    (a logit / critic value, no sigmoid).

    ``norm="none"`` (default) is TTSR's variant and the one to use with WGAN-GP, whose per-sample gradient penalty is
    ill-defined with batch statistics; ``norm="batch"`` is SRNTT's (BN after every conv, the convs then have no bias
    since BN's shift replaces it). Init: weights ~ N(0, 0.02), biases 0; BN gamma ~ N(1, 0.02), beta 0.

    The first fully connected layer ties the network to ``patch_size`` (the HR training patch, 160 in SRNTT); inputs
    must be exactly B×3×patch_size×patch_size.
    """

    def __init__(
        self,
        patch_size: int = 160,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        norm: Literal["none", "batch"] = "none",
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        n_down = len(channels)
        if norm not in ("none", "batch"):
            raise ValueError(f"SRNTTDiscriminator: norm must be 'none' or 'batch', got {norm!r}")
        if not channels or min(channels) < 1:
            raise ValueError(f"SRNTTDiscriminator: channels must be positive ints, got {channels}")
        if patch_size < 2**n_down or patch_size % 2**n_down:
            raise ValueError(
                f"SRNTTDiscriminator: patch_size={patch_size} must be a positive multiple of {2**n_down} "
                f"(one stride-2 conv per each of the {n_down} stages)"
            )
        self.patch_size = patch_size
        self.norm = norm
        use_bn = norm == "batch"
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            for stride, cin in ((1, c_in), (2, c)):
                layers.append(nn.Conv2d(cin, c, 3, stride, 1, bias=not use_bn))
                if use_bn:
                    layers.append(nn.BatchNorm2d(c))
                layers.append(nn.LeakyReLU(LRELU_SLOPE, inplace=True))
            c_in = c
        self.features = nn.Sequential(*layers)
        side = patch_size // 2**n_down
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(side * side * channels[-1], 1024),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            nn.Linear(1024, 1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights and zero biases; BN gamma ~ N(1, 0.02), beta 0 (SRNTT/DCGAN init, spec B7)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, p, p):
            raise ValueError(
                f"SRNTTDiscriminator: input must be B×3×{p}×{p} (patch_size={p}), got {_fmt_shape(x.shape)}; "
                "the first Linear layer fixes the input size"
            )
        return self.classifier(self.features(x))


# ---- full network (matcher + generator), registered below
class AMRSR(nn.Module):
    """The full AMRSR network: the reference matcher (frozen VGG-19 + hierarchical attention-based similarity,
    :class:`~sresolve.ops.refmatch.ReferenceMatcher`) and the texture-transfer generator.

    ``net(lr, refs)`` with ``refs[b]`` the N_M ≥ 1 references of sample b (3×H×W tensors of any sizes) returns the ×4
    SR image; ``refs=None`` runs the generator on empty references (zero maps and weight). ``match`` runs the matching
    alone (no gradient), ``generator`` the fusion. The matcher's VGG weights are part of the state dict (relu1_1 to
    relu3_1, 0.56 M parameters), so a saved network is self-contained.
    """

    scale = SCALE
    in_channels = 3
    #: the forward takes reference images (evaluation loops pass ``batch["refs"]``; tiling/self-ensemble do not apply).
    needs_references = True

    def __init__(self, generator: AMRSRGenerator, matcher: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.matcher = matcher

    def match(self, lr: Tensor, refs: Sequence[Sequence[Tensor]], names: Sequence[str] | None = None) -> Any:
        """Swapped features (:class:`~sresolve.ops.refmatch.SwappedFeatures`) of a batch; no gradient."""
        return self.matcher(lr, refs, names=names)

    def forward(
        self,
        lr: Tensor,
        refs: Sequence[Sequence[Tensor]] | None = None,
        *,
        names: Sequence[str] | None = None,
        swapped: Any = None,
    ) -> Tensor:
        """``swapped``: features already matched (e.g. cached) instead of ``refs``."""
        if swapped is None and refs is None:
            return self.generator(lr, *zero_references(lr))
        if swapped is None:
            swapped = self.match(lr, refs, names)
        s = swapped.to(lr.device, lr.dtype)
        return self.generator(lr, s.o3, s.o2, s.o1, s.weight)


@register_arch(family="amrsr")
def amrsr(
    scale: int = 4,
    n_feats: int = 64,
    n_feat_blocks: int = 16,
    n_blocks: Sequence[int] = (16, 8, 4),
    use_weight_map: bool = True,
    gate_init: Sequence[float] = (1.0, 0.0),
    global_residual: bool = False,
    res_scale: float = 1.0,
    vgg_weights: str | None = None,
    n_input_parts: int = 1,
    n_ref_parts: int = 1,
    n_subvectors: int = 4,
    similarity: Literal["cosine", "ref_norm"] = "cosine",
    level1: Literal["joint", "per_group"] = "joint",
    projection: Literal["per_group", "single"] = "per_group",
    padding: Literal["same", "valid"] = "same",
    stream: bool = True,
    key_chunk: int | None = None,
    subvector_division: Literal["input", "none", "refs", "both"] = "input",
) -> AMRSR:
    """AMRSR ×4 (spec B2-B6, choices C1-C8, C14): generator keys, then the matcher's N_I, N_R, N_C and C3-C5, C14.

    ``subvector_division`` (supp. Table 4): which feature vectors are split into the N_C subvectors: ``input``
    (level 1 / INPUTATT only: AMRSR's "input only", the default), ``refs`` (levels 2/3 / REFATT only), ``both`` or
    ``none``; see :mod:`sresolve.ops.refmatch` for the exact semantics and the weight map in each case.

    ``vgg_weights``: torchvision's VGG-19 file, ``"random"`` (tests) or ``None`` (the torch hub cache); a missing
    file stops here with :class:`~sresolve.archs.vgg.VGGWeightsMissing` naming the file and where to put it.
    """
    from sresolve.ops.refmatch import ReferenceMatcher

    if scale != SCALE:
        raise ValueError(f"amrsr is a ×4 network (spec B6: two pixel-shuffle ×2 stages), got scale={scale}")
    generator = AMRSRGenerator(n_feats, n_feat_blocks, n_blocks, use_weight_map, gate_init, global_residual, res_scale)
    matcher = ReferenceMatcher(
        vgg_weights=vgg_weights,
        n_input_parts=n_input_parts,
        n_ref_parts=n_ref_parts,
        n_subvectors=n_subvectors,
        similarity=similarity,
        level1=level1,
        projection=projection,
        padding=padding,
        stream=stream,
        key_chunk=key_chunk,
        subvector_division=subvector_division,
    )
    return AMRSR(generator, matcher)


@register_detector("amrsr", priority=30)
def detect_amrsr(state_dict: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]] | None:
    """Recognise a saved AMRSR network (``generator.*`` + ``matcher.vgg.*`` keys) and infer the generator's width,
    block counts and weight-map gating. The matching options (N_I, N_R, N_C, ...) are not in the weights: defaults are
    returned, override them at load time (``load_model(path, n_ref_parts=16)``). The VGG weights come from the file
    (``vgg_weights="random"`` only builds the placeholder that the file then fills)."""
    if "generator.content.head.0.weight" not in state_dict or "matcher.vgg.features.0.weight" not in state_dict:
        return None

    def count(prefix: str) -> int:
        ids = {int(k[len(prefix) :].split(".", 1)[0]) for k in state_dict if k.startswith(prefix)}
        return len(ids)

    kwargs: dict[str, Any] = {
        "n_feats": int(state_dict["generator.content.head.0.weight"].shape[0]),
        "n_feat_blocks": count("generator.content.body."),
        "n_blocks": [count(f"generator.body{i}.") for i in (3, 2, 1)],
        "use_weight_map": "generator.gate_a" in state_dict,
        "vgg_weights": "random",
    }
    return "amrsr", kwargs
