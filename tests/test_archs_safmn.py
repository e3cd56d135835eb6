"""SAFMN architecture, shared layers and the arch registry.

Reference: spandrel's independent SAFMN implementation (spandrel 0.4.2) and the facts of
``/work/shared/specs/archs_hat_hma_safmn.md`` §3 (key table, parameter counts).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from spandrel.architectures.SAFMN import SAFMN as RefSAFMN
from torch import nn

from sresolve.archs import arch_defaults, arch_family, create, detect_arch, get_arch, list_archs, register_arch
from sresolve.archs import registry as registry_mod
from sresolve.archs.layers import (
    FrozenBatchNorm2d,
    L2Norm2d,
    LayerNorm2d,
    pad_bottom_right,
    pad_to_min_size,
    pad_to_multiple,
)
from sresolve.archs.safmn import NORMS, SAFM, SAFMN, make_norm

VARIANTS = {"safmn": (36, 8), "safmn_c48n12": (48, 12), "safmn_l": (128, 16)}

# Exact counts measured on our implementation; the spec table (official class, rounded to 1e-3 M) must agree.
PARAM_COUNTS = {
    ("safmn", 2): 227_820,
    ("safmn", 3): 232_695,
    ("safmn", 4): 239_520,
    ("safmn_c48n12", 2): 597_516,
    ("safmn_c48n12", 3): 604_011,
    ("safmn_c48n12", 4): 613_104,
    ("safmn_l", 2): 5_559_308,
    ("safmn_l", 3): 5_576_603,
    ("safmn_l", 4): 5_600_816,
}
SPEC_MPARAMS = {
    "safmn": (0.228, 0.233, 0.240),
    "safmn_c48n12": (0.598, 0.604, 0.613),
    "safmn_l": (5.559, 5.577, 5.601),
}
SPEC_NUM_KEYS = {"safmn": 148, "safmn_c48n12": 220, "safmn_l": 292}
#: The official values of the ablation switches (SAFMN supplement Table 1 / Figures 1-2).
SWITCH_DEFAULTS = {
    "safm_levels": 4,
    "safm_modulation": True,
    "safm_multiscale": True,
    "safm_aggregation": True,
    "norm": "layernorm",
}


def _perturb(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Randomise every parameter (LayerNorm weights/biases included) so that parity tests see non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def _expected_keys(
    dim: int,
    n_blocks: int,
    ffn_scale: float,
    scale: int,
    levels: int = 4,
    aggregation: bool = True,
    norm: str = "layernorm",
) -> list[tuple[str, tuple[int, ...]]]:
    """Ordered state-dict (key, shape) list of spec table §3.2 (defaults), and of the ablation variants."""
    f, c = int(dim * ffn_scale), dim // levels
    keys = [("to_feat.weight", (dim, 3, 3, 3)), ("to_feat.bias", (dim,))]
    for j in range(n_blocks):
        p = f"feats.{j}."
        for n in ("norm1", "norm2"):
            if norm in ("layernorm", "batchnorm", "frozen_batchnorm"):
                keys += [(p + f"{n}.weight", (dim,)), (p + f"{n}.bias", (dim,))]
            if norm in ("batchnorm", "frozen_batchnorm"):
                keys += [(p + f"{n}.running_mean", (dim,)), (p + f"{n}.running_var", (dim,))]
                keys += [(p + f"{n}.num_batches_tracked", ())]
        for lv in range(levels):
            keys += [(p + f"safm.mfr.{lv}.weight", (c, 1, 3, 3)), (p + f"safm.mfr.{lv}.bias", (c,))]
        if aggregation:
            keys += [(p + "safm.aggr.weight", (dim, dim, 1, 1)), (p + "safm.aggr.bias", (dim,))]
        keys += [(p + "ccm.ccm.0.weight", (f, dim, 3, 3)), (p + "ccm.ccm.0.bias", (f,))]
        keys += [(p + "ccm.ccm.2.weight", (dim, f, 1, 1)), (p + "ccm.ccm.2.bias", (dim,))]
    keys += [("to_img.0.weight", (3 * scale**2, dim, 3, 3)), ("to_img.0.bias", (3 * scale**2,))]
    return keys


# ------------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_state_dict_keys_and_param_counts(name: str, scale: int) -> None:
    model = create(name, scale=scale)
    dim, n_blocks = VARIANTS[name]
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == _expected_keys(dim, n_blocks, 2.0, scale)
    assert len(got) == SPEC_NUM_KEYS[name]
    assert not list(model.buffers())
    n = sum(p.numel() for p in model.parameters())
    assert n == PARAM_COUNTS[(name, scale)]
    assert round(n / 1e6, 3) == SPEC_MPARAMS[name][scale - 2]
    assert model.scale == scale and model.in_channels == 3
    assert (model.dim, model.n_blocks, model.ffn_scale) == (dim, n_blocks, 2.0)


def test_initialisation_like_official() -> None:
    model = create("safmn")
    for name, mod in model.named_modules():
        if isinstance(mod, LayerNorm2d):
            assert torch.equal(mod.weight, torch.ones(36)) and torch.equal(mod.bias, torch.zeros(36)), name
            assert mod.eps == 1e-6
    # PyTorch default conv init: kaiming_uniform(a=sqrt(5)) -> |w| <= 1/sqrt(fan_in)
    w = model.feats[0].ccm.ccm[0].weight
    assert w.abs().max() <= 1 / math.sqrt(36 * 9) + 1e-7 and w.std() > 0


def test_registry_lists_and_families() -> None:
    assert {"safmn", "safmn_c48n12", "safmn_l"} <= set(list_archs())
    assert list_archs("safmn*") == ["safmn", "safmn_c48n12", "safmn_l"]
    assert list_archs("safmn_?") == ["safmn_l"]
    assert all(arch_family(n) == "safmn" for n in list_archs("safmn*"))
    assert arch_defaults("safmn_l") == {"scale": 4, "dim": 128, "n_blocks": 16, "ffn_scale": 2.0, **SWITCH_DEFAULTS}
    assert get_arch("safmn").module == "sresolve.archs.safmn"


# ------------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 8), (23, 17)])
def test_output_shapes_any_size(scale: int, size: tuple[int, int]) -> None:
    model = create("safmn", scale=scale).eval()
    h, w = size
    with torch.no_grad():
        y = model(torch.rand(2, 3, h, w))
    assert y.shape == (2, 3, h * scale, w * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (3, 12), (12, 2)])
def test_small_inputs_are_replicate_padded_to_8_and_cropped(size: tuple[int, int]) -> None:
    model = _perturb(create("safmn", scale=2)).eval()
    h, w = size
    x = torch.rand(1, 3, h, w)
    ph, pw = max(0, 8 - h), max(0, 8 - w)
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate")
    ref = RefSAFMN(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=2).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        y = model(x)
        y_ref = ref(xp)[..., : h * 2, : w * 2]
    assert y.shape == (1, 3, 2 * h, 2 * w)
    assert torch.equal(y, y_ref)


def test_rejects_bad_input_shape() -> None:
    model = create("safmn", scale=2)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 4, 8, 8\)"):
        model(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 8, 8))


@pytest.mark.parametrize(
    ("name", "scale", "size"),
    [
        ("safmn", 4, (32, 40)),
        ("safmn", 3, (32, 40)),
        ("safmn", 2, (16, 24)),
        ("safmn_c48n12", 4, (16, 24)),
        ("safmn_l", 2, (16, 16)),
    ],
)
def test_parity_with_spandrel_both_directions(name: str, scale: int, size: tuple[int, int]) -> None:
    dim, n_blocks = VARIANTS[name]
    h, w = size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))

    # our weights -> spandrel
    ours = _perturb(create(name, scale=scale), seed=2).eval()
    ref = RefSAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=2.0, upscaling_factor=scale).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
    assert y.shape == y_ref.shape == (1, 3, h * scale, w * scale)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)  # fp32 summation order only
    assert y.std() > 1e-3  # not a degenerate output

    # spandrel weights -> ours
    ref2 = _perturb(RefSAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=2.0, upscaling_factor=scale), seed=3).eval()
    ours2 = create(name, scale=scale).eval()
    ours2.load_state_dict(ref2.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours2(x), ref2(x), atol=1e-5, rtol=1e-5)  # fp32 summation order only


def test_parity_unpadded_non_multiple_of_8_size() -> None:
    """Sizes >= 8 run unpadded, like the official test path: identical to spandrel on 23x17 and 9x30."""
    ours = _perturb(create("safmn", scale=3), seed=4).eval()
    ref = RefSAFMN(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=3).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    for h, w in [(23, 17), (9, 30)]:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)  # fp32 summation order only


@pytest.mark.parametrize("size", [(32, 40), (12, 20), (23, 17), (5, 9)])
def test_inference_path_bit_identical_to_autograd_path(size: tuple[int, int]) -> None:
    """Without autograd the network runs an in-place / fused path; it must equal the plain path bit for bit, and
    the plain path must equal spandrel's (i.e. the official) code bit for bit."""
    model = _perturb(create("safmn", scale=2, n_blocks=2), seed=8).eval()
    ref = RefSAFMN(dim=36, n_blocks=2, ffn_scale=2.0, upscaling_factor=2).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(9))
    y_grad = model(x).detach()
    with torch.inference_mode():
        y_inf = model(x)
    with torch.no_grad():
        y_ng = model(x)
    assert torch.equal(y_grad, y_inf) and torch.equal(y_grad, y_ng)
    if min(size) >= 8:
        with torch.no_grad():
            assert torch.equal(y_grad, ref(x))


def test_bf16_forward_close_to_fp32() -> None:
    model = _perturb(create("safmn", scale=2), seed=5).eval()
    x = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        y32 = model(x)
        y16 = model.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16 and y16.shape == y32.shape
    assert torch.isfinite(y16.float()).all()
    err = (y16.float() - y32).abs().max().item()
    assert err <= 0.03 * y32.abs().max().item()


def test_backward_reaches_every_parameter() -> None:
    model = _perturb(create("safmn", scale=2, n_blocks=2), seed=7)
    y = model(torch.rand(2, 3, 12, 16))
    y.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------ validation errors
def test_dim_not_divisible_by_4() -> None:
    with pytest.raises(ValueError, match=r"dim must be a positive multiple of 4.*got 30"):
        create("safmn", dim=30)
    with pytest.raises(ValueError, match="n_blocks"):
        SAFMN(n_blocks=0)
    with pytest.raises(ValueError, match="upscaling_factor"):
        SAFMN(upscaling_factor=0)


def test_registry_unknown_name_lists_registered() -> None:
    with pytest.raises(KeyError, match=r"unknown architecture 'safmn_xl'.*'safmn'.*'safmn_c48n12'.*'safmn_l'"):
        create("safmn_xl")


def test_registry_unknown_kwarg_names_key_and_accepted() -> None:
    with pytest.raises(
        ValueError,
        match=r"\['upscale'\].*accepted arguments: \['scale', 'dim', 'n_blocks', 'ffn_scale', 'safm_levels', "
        r"'safm_modulation', 'safm_multiscale', 'safm_aggregation', 'norm'\]",
    ):
        create("safmn", upscale=4)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"dim": "36"}, r"'dim' expects int, got str '36'"),
        ({"scale": 2.0}, r"'scale' expects int, got float 2.0"),
        ({"scale": True}, r"'scale' expects int, got bool True"),
        ({"ffn_scale": "2"}, r"'ffn_scale' expects float, got str '2'"),
        ({"n_blocks": None}, r"'n_blocks' expects int, got NoneType None"),
    ],
)
def test_registry_wrong_type_names_key(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        create("safmn", **kwargs)


def test_registry_accepts_int_for_float() -> None:
    model = create("safmn", scale=2, n_blocks=1, ffn_scale=3)
    assert model.feats[0].ccm.ccm[0].weight.shape[0] == 108


class _Dummy(nn.Module):
    def __init__(self, depths: Sequence[int], window: tuple[int, int], scale: int, act: str) -> None:
        super().__init__()
        self.depths, self.window, self.scale, self.act, self.in_channels = depths, window, scale, act, 3
        self.conv = nn.Conv2d(3, 3, 1)


@pytest.fixture
def dummy_arch() -> Iterator[str]:
    def _sresolve_test_dummy(
        depths: Sequence[int] = (2, 2),
        window: tuple[int, int] = (8, 8),
        scale: int = 2,
        act: Literal["gelu", "relu"] = "gelu",
        mlp_ratio: float | None = None,
    ) -> nn.Module:
        return _Dummy(depths, window, scale, act)

    def _sresolve_test_bad() -> nn.Module:
        return nn.Conv2d(3, 3, 1)  # violates the interface: no .scale

    register_arch(_sresolve_test_dummy, family="_test")
    register_arch(family="_test")(_sresolve_test_bad)
    try:
        yield "_sresolve_test_dummy"
    finally:
        registry_mod._ARCHS.pop("_sresolve_test_dummy", None)
        registry_mod._ARCHS.pop("_sresolve_test_bad", None)


def test_registry_containers_literal_optional(dummy_arch: str) -> None:
    cfg = OmegaConf.create({"depths": [6, 6, 6], "window": [16, 16]})
    m = create(dummy_arch, depths=cfg.depths, window=cfg.window, act="relu", mlp_ratio=2)
    assert m.depths == [6, 6, 6] and type(m.depths) is list
    assert m.window == (16, 16) and type(m.window) is tuple
    assert create(dummy_arch, mlp_ratio=None).act == "gelu"
    with pytest.raises(ValueError, match=r"'depths' expects Sequence\[int\], got list \[6, '6'\]"):
        create(dummy_arch, depths=[6, "6"])
    with pytest.raises(ValueError, match=r"'depths' expects .*got str"):
        create(dummy_arch, depths="66")
    with pytest.raises(ValueError, match=r"'window' expects tuple\[int, int\]"):
        create(dummy_arch, window=[16, 16, 16])
    with pytest.raises(ValueError, match=r"'act' expects Literal\['gelu', 'relu'\], got str 'silu'"):
        create(dummy_arch, act="silu")
    with pytest.raises(TypeError, match="integer attribute 'scale'"):
        create("_sresolve_test_bad")
    with pytest.raises(ValueError, match="already registered"):
        register_arch(family="other")(_clash_safmn())


def _clash_safmn():  # a different function that happens to be called "safmn"
    def safmn() -> nn.Module:
        return nn.Identity()

    return safmn


# ------------------------------------------------------------------------------------------------ layers
def test_layernorm2d_formula() -> None:
    ln = LayerNorm2d(12)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(2, 12, 5, 7) * 3 + 1
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (12,), ln.weight, ln.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref, rtol=1e-5, atol=1e-5)
    # bitwise equal to the official explicit formula (spandrel's copy of it)
    from spandrel.architectures.SAFMN.__arch.safmn import LayerNorm as RefLN

    ref_ln = RefLN(12)
    ref_ln.load_state_dict(ln.state_dict())
    assert torch.equal(ln(x), ref_ln(x))


@pytest.mark.parametrize(
    ("mode", "np_mode"), [("reflect", "reflect"), ("replicate", "edge"), ("symmetric", "symmetric")]
)
def test_pad_modes_match_numpy(mode: str, np_mode: str) -> None:
    x = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(2, 5, 6)
    y = pad_bottom_right(x, 3, 4, mode)
    ref = np.pad(x.numpy(), ((0, 0), (0, 3), (0, 4)), mode=np_mode)
    np.testing.assert_array_equal(y.numpy(), ref)


def test_pad_fallbacks_and_helpers() -> None:
    x = torch.rand(1, 3, 2, 9)
    # reflect cannot pad 6 rows on a 2-row image: that axis falls back to replicate, the other stays reflect
    y = pad_bottom_right(x, 6, 2, "reflect")
    expected = F.pad(F.pad(x, (0, 2, 0, 0), mode="reflect"), (0, 0, 0, 6), mode="replicate")
    assert torch.equal(y, expected)
    # symmetric extends periodically beyond the side (HMA flip-concat, repeated)
    s = pad_bottom_right(torch.tensor([[1.0, 2.0]]), 0, 5, "symmetric")
    assert s.tolist() == [[1, 2, 2, 1, 1, 2, 2]]
    yp, pads = pad_to_multiple(torch.rand(1, 3, 17, 33), 16)
    assert yp.shape[-2:] == (32, 48) and pads == (15, 15)
    yp, pads = pad_to_multiple(torch.rand(3, 16, 10), (16, 4), mode="symmetric")
    assert yp.shape == (3, 16, 12) and pads == (0, 2)
    yp, pads = pad_to_min_size(torch.rand(1, 3, 5, 20), 8)
    assert yp.shape[-2:] == (8, 20) and pads == (3, 0)
    c = pad_bottom_right(torch.ones(1, 1, 2, 2), 1, 1, "constant", value=-1.0)
    assert c[0, 0, 2, 2] == -1 and c[0, 0, 1, 1] == 1
    x16 = torch.rand(1, 3, 4, 4).to(torch.bfloat16)
    assert pad_bottom_right(x16, 2, 2, "reflect").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="pad mode"):
        pad_bottom_right(x, 1, 1, "wrap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(x, 0)


# ------------------------------------------------------------------------------------------------ ablation switches
# SAFMN supplement Table 1 (safm_levels, safm_modulation, safm_multiscale, safm_aggregation) and Figures 1-2 (norm).
SWITCH_VARIANTS: list[dict] = [
    {"safm_levels": 3},
    {"safm_levels": 2},
    {"safm_levels": 1},
    {"safm_modulation": False},
    {"safm_multiscale": False},
    {"safm_aggregation": False},
    {"norm": "batchnorm"},
    {"norm": "frozen_batchnorm"},
    {"norm": "l2"},
    {"norm": "none"},
    {"safm_levels": 2, "safm_modulation": False, "safm_multiscale": False, "safm_aggregation": False, "norm": "l2"},
]

#: Parameters of the default ×4 SAFMN (dim 36, 8 blocks) under each switch, computed by hand: a block holds two norms
#: (2·36 each for LayerNorm / (frozen) BatchNorm, 0 for l2 / none), the depthwise convs of every level (10·36 = 360
#: whatever the number of levels: ``L · (36/L) · (9 + 1)``), ``aggr`` (36·36 + 36 = 1332) and the CCM
#: (72·36·9 + 72 + 36·72 + 36 = 26028); stem 1008, tail 15600.
X4_PARAMS = {
    "default": 1008 + 8 * (144 + 360 + 1332 + 26028) + 15600,  # 239,520
    "safm_levels": 239_520,  # levels 1-4 and modulation / multiscale off: the same parameters
    "safm_aggregation=False": 239_520 - 8 * 1332,  # 228,864
    "norm=batchnorm": 239_520,  # + 8·2·(36 + 36 + 1) buffer entries, no parameters
    "norm=l2|none": 239_520 - 8 * 144,  # 238,368
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _variant_id(kw: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("kwargs", SWITCH_VARIANTS, ids=_variant_id)
def test_switches_change_keys_params_and_keep_shapes(kwargs: dict) -> None:
    model = create("safmn", scale=4, **kwargs)
    full = {**SWITCH_DEFAULTS, **kwargs}
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == _expected_keys(36, 8, 2.0, 4, full["safm_levels"], full["safm_aggregation"], full["norm"])
    expected = X4_PARAMS["default"]
    if not full["safm_aggregation"]:
        expected -= 8 * 1332
    if full["norm"] in ("l2", "none"):
        expected -= 8 * 144
    assert _n_params(model) == expected
    assert model.switches == kwargs
    assert all(f"{k}={v!r}" in model.extra_repr() for k, v in kwargs.items())
    assert bool(list(model.buffers())) == ("batchnorm" in full["norm"])
    for mode in (model.train(), model.eval()):
        with torch.set_grad_enabled(mode.training):
            y = mode(torch.rand(2, 3, 12, 10))
        assert y.shape == (2, 3, 48, 40) and torch.isfinite(y).all()


def test_hand_computed_x4_parameter_table() -> None:
    assert X4_PARAMS["default"] == 239_520 == PARAM_COUNTS[("safmn", 4)]
    for levels in (1, 2, 3, 4):
        assert _n_params(create("safmn", safm_levels=levels)) == X4_PARAMS["safm_levels"]
    assert _n_params(create("safmn", safm_modulation=False, safm_multiscale=False)) == 239_520
    assert _n_params(create("safmn", safm_aggregation=False)) == X4_PARAMS["safm_aggregation=False"] == 228_864
    for norm in ("batchnorm", "frozen_batchnorm"):
        model = create("safmn", norm=norm)
        assert _n_params(model) == X4_PARAMS["norm=batchnorm"]
        assert sum(b.numel() for b in model.buffers()) == 8 * 2 * (36 + 36 + 1)
    for norm in ("l2", "none"):
        assert _n_params(create("safmn", norm=norm)) == X4_PARAMS["norm=l2|none"] == 238_368


def test_defaults_are_the_official_network() -> None:
    """Explicit default switches build the same network as no switches: same keys, same outputs, same repr."""
    a = _perturb(create("safmn", scale=2, n_blocks=2), seed=11).eval()
    b = create("safmn", scale=2, n_blocks=2, **SWITCH_DEFAULTS).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    assert list(a.state_dict()) == list(b.state_dict()) and len(create("safmn").state_dict()) == 148
    x = torch.rand(1, 3, 16, 12)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert a.switches == {} and a.min_size == 8
    assert a.extra_repr() == "dim=36, n_blocks=2, ffn_scale=2.0, scale=2"
    assert all(isinstance(m, LayerNorm2d) for n, m in a.named_modules() if n.endswith(("norm1", "norm2")))


def _reference_safm(safm: SAFM, x: torch.Tensor) -> torch.Tensor:
    """SAFM written out independently (sides divisible by 2^(L-1)): reshape-max pooling, repeat upsampling, explicit
    grouped convs, then the switches."""
    b, d, h, w = x.shape
    c = d // safm.n_levels
    parts = []
    for i, conv in enumerate(safm.mfr):
        xi = x[:, i * c : (i + 1) * c]
        k = 2**i if safm.multiscale else 1
        pooled = xi.reshape(b, c, h // k, k, w // k, k).amax(dim=(3, 5))
        filt = F.conv2d(pooled, conv.weight, conv.bias, padding=1, groups=c)
        parts.append(filt.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3))
    cat = torch.cat(parts, dim=1)
    if safm.aggregation:
        cat = F.conv2d(cat, safm.aggr.weight, safm.aggr.bias)
    attn = F.gelu(cat)
    return attn * x if safm.modulation else attn


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("modulation", [True, False])
@pytest.mark.parametrize("multiscale", [True, False])
@pytest.mark.parametrize("aggregation", [True, False])
def test_safm_switches_equal_an_independent_computation(
    levels: int, modulation: bool, multiscale: bool, aggregation: bool
) -> None:
    safm = _perturb(SAFM(12, levels, modulation, multiscale, aggregation), seed=levels, std=0.3)
    x = torch.randn(2, 12, 16, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = _reference_safm(safm, x)
        y_inf = safm(x)
    y = safm(x)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(y.detach(), y_inf)  # the inference fast path is exact for every switch
    assert hasattr(safm, "aggr") == aggregation and len(safm.mfr) == levels


def test_one_level_and_single_scale_are_full_resolution_depthwise_convs() -> None:
    """levels=1: one 3×3 depthwise conv on all channels; multiscale=false: the same, with the per-level convs'
    weights concatenated (no pooling anywhere, so any size works)."""
    x = torch.randn(1, 8, 5, 7)
    one = _perturb(SAFM(8, n_levels=1), seed=1, std=0.3)
    assert one.mfr[0].weight.shape == (8, 1, 3, 3)
    dw = F.conv2d(x, one.mfr[0].weight, one.mfr[0].bias, padding=1, groups=8)
    torch.testing.assert_close(one(x), F.gelu(F.conv2d(dw, one.aggr.weight, one.aggr.bias)) * x)
    flat = _perturb(SAFM(8, n_levels=4, multiscale=False), seed=2, std=0.3)
    weight = torch.cat([m.weight for m in flat.mfr])
    bias = torch.cat([m.bias for m in flat.mfr])
    dw = F.conv2d(x, weight, bias, padding=1, groups=8)
    torch.testing.assert_close(flat(x), F.gelu(F.conv2d(dw, flat.aggr.weight, flat.aggr.bias)) * x)


@pytest.mark.parametrize("kwargs", SWITCH_VARIANTS, ids=_variant_id)
@pytest.mark.parametrize("size", [(16, 24), (13, 9), (3, 5)])
def test_inference_path_bit_identical_for_every_variant(kwargs: dict, size: tuple[int, int]) -> None:
    model = _perturb(create("safmn", scale=2, dim=12, n_blocks=2, **kwargs), seed=12).eval()
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(13))
    y_grad = model(x).detach()
    with torch.inference_mode():
        y_inf = model(x)
    assert y_grad.shape == (2, 3, 2 * size[0], 2 * size[1])
    assert torch.equal(y_grad, y_inf)


@pytest.mark.parametrize(("kwargs", "min_size"), [({}, 8), ({"safm_levels": 3}, 4), ({"safm_levels": 2}, 2)])
def test_min_size_follows_the_levels(kwargs: dict, min_size: int) -> None:
    """Sides below 2^(levels-1) are replicate-padded to it and cropped; no pyramid (1 level, or multiscale off) → no
    padding at all."""
    model = _perturb(create("safmn", scale=2, dim=12, n_blocks=1, **kwargs), seed=14).eval()
    assert model.min_size == min_size
    x = torch.rand(1, 3, 1, 3)
    with torch.no_grad():
        y = model(x)
        ref = model(F.pad(x, (0, max(0, min_size - 3), 0, min_size - 1), mode="replicate"))[..., :2, :6]
    assert torch.equal(y, ref)
    for flat in ({"safm_levels": 1}, {"safm_multiscale": False}):
        assert create("safmn", dim=12, **flat).min_size == 1


def test_frozen_batchnorm_statistics_never_change() -> None:
    model = _perturb(create("safmn", scale=2, dim=12, n_blocks=2, norm="frozen_batchnorm"), seed=15).train()
    norms = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 4
    x = torch.rand(4, 3, 12, 12) * 2 + 0.5
    y_train = model(x)
    y_train.square().mean().backward()
    for m in norms:
        assert torch.equal(m.running_mean, torch.zeros(12)) and torch.equal(m.running_var, torch.ones(12))
        assert int(m.num_batches_tracked) == 0
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0 and m.bias.grad is not None
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), y_train.detach(), atol=1e-6)  # same statistics in train and eval
    # the formula, with loaded (non-trivial) statistics; its keys load into / from nn.BatchNorm2d
    bn = FrozenBatchNorm2d(5)
    ref = nn.BatchNorm2d(5)
    _perturb(ref, seed=16, std=0.5)
    ref.running_mean.normal_()
    ref.running_var.uniform_(0.5, 2.0)
    bn.load_state_dict(ref.state_dict(), strict=True)
    z = torch.randn(3, 5, 4, 4)
    expected = (z - ref.running_mean[:, None, None]) / torch.sqrt(ref.running_var[:, None, None] + 1e-5)
    torch.testing.assert_close(bn.train()(z), expected * ref.weight[:, None, None] + ref.bias[:, None, None])
    # whereas plain batchnorm normalises with batch statistics and updates its running ones
    plain = create("safmn", scale=2, dim=12, n_blocks=1, norm="batchnorm").train()
    plain(x)
    assert not torch.equal(plain.feats[0].norm1.running_mean, torch.zeros(12))


def test_l2_norm_gives_unit_channel_norm() -> None:
    x = torch.randn(2, 12, 5, 6) * 4
    y = L2Norm2d()(x)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2, 5, 6))
    torch.testing.assert_close(y * x.norm(dim=1, keepdim=True), x)
    assert not list(L2Norm2d().parameters())
    model = create("safmn", scale=2, dim=12, n_blocks=1, norm="l2")
    seen = []
    model.feats[0].norm2.register_forward_hook(lambda _m, _i, out: seen.append(out))
    model(torch.rand(1, 3, 8, 8))
    torch.testing.assert_close(seen[0].norm(dim=1), torch.ones(1, 8, 8))
    assert isinstance(make_norm("none", 12), nn.Identity) and isinstance(make_norm("batchnorm", 12), nn.BatchNorm2d)


def test_every_switch_is_trained() -> None:
    for kwargs in SWITCH_VARIANTS:
        model = _perturb(create("safmn", scale=2, dim=12, n_blocks=1, **kwargs), seed=17).train()
        model(torch.rand(2, 3, 8, 8)).square().mean().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (kwargs, name)


DETERMINED = [
    ("safmn", {"safm_levels": 3}),
    ("safmn", {"safm_levels": 1}),
    ("safmn", {"safm_aggregation": False}),
    ("safmn", {"norm": "batchnorm"}),
    ("safmn", {"norm": "none"}),
    ("safmn_c48n12", {"safm_levels": 2, "safm_aggregation": False, "norm": "none"}),
    ("safmn_l", {"norm": "batchnorm", "safm_levels": 2}),
]


@pytest.mark.parametrize(("name", "kwargs"), DETERMINED, ids=lambda v: _variant_id(v) if isinstance(v, dict) else v)
def test_detector_round_trips_variants_the_keys_determine(name: str, kwargs: dict) -> None:
    src = create(name, scale=3, **kwargs)
    sd = src.state_dict()
    assert detect_arch(sd) == (name, {"scale": 3, **kwargs})
    rebuilt = create(name, scale=3, **kwargs)
    rebuilt.load_state_dict(sd, strict=True)
    # a custom size keeps its explicit arguments next to the switches
    custom = create("safmn", scale=2, dim=24, n_blocks=2, ffn_scale=1.5, **kwargs)
    got_name, got = detect_arch(custom.state_dict())  # type: ignore[misc]
    assert (got_name, got) == ("safmn", {"scale": 2, "dim": 24, "n_blocks": 2, "ffn_scale": 1.5, **kwargs})
    create(got_name, **got).load_state_dict(custom.state_dict(), strict=True)


def test_detector_cannot_tell_parameter_free_switches() -> None:
    """Documented limits: modulation / multiscale change no key, frozen BN has BatchNorm's keys, l2 has none."""
    assert detect_arch(create("safmn", safm_modulation=False, safm_multiscale=False).state_dict()) == (
        "safmn",
        {"scale": 4},
    )
    assert detect_arch(create("safmn", norm="frozen_batchnorm").state_dict()) == (
        "safmn",
        {"scale": 4, "norm": "batchnorm"},
    )
    assert detect_arch(create("safmn", norm="l2").state_dict()) == ("safmn", {"scale": 4, "norm": "none"})


def test_bad_switch_values_give_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"dim must be a positive multiple of 3 .*safm_levels=3.*got 32"):
        SAFMN(dim=32, safm_levels=3)
    with pytest.raises(ValueError, match=r"dim must be a positive multiple of 5.*got 36"):
        create("safmn", safm_levels=5)
    with pytest.raises(ValueError, match=r"safm_levels must be an int >= 1, got 0"):
        create("safmn", safm_levels=0)
    with pytest.raises(ValueError, match=r"'safm_levels' expects int, got bool True"):
        create("safmn", safm_levels=True)
    allowed = r"\['layernorm', 'batchnorm', 'frozen_batchnorm', 'l2', 'none'\]"
    assert list(NORMS) == ["layernorm", "batchnorm", "frozen_batchnorm", "l2", "none"]
    with pytest.raises(ValueError, match=r"unknown norm 'groupnorm'; allowed: " + allowed):
        SAFMN(norm="groupnorm")
    with pytest.raises(ValueError, match=r"unknown norm 'LayerNorm'; allowed: " + allowed):
        make_norm("LayerNorm", 8)
    with pytest.raises(ValueError, match=r"'norm' expects Literal" + allowed[:-2]):
        create("safmn", norm="groupnorm")
    with pytest.raises(ValueError, match=r"SAFMN: safm_modulation must be true or false, got 'yes'"):
        SAFMN(safm_modulation="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'safm_aggregation' expects bool, got int 0"):
        create("safmn", safm_aggregation=0)
    with pytest.raises(ValueError, match=r"dim=12 must be divisible by n_levels=5"):
        SAFM(12, n_levels=5)
