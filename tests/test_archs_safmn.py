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

from sresolve.archs import arch_defaults, arch_family, create, get_arch, list_archs, register_arch
from sresolve.archs import registry as registry_mod
from sresolve.archs.layers import LayerNorm2d, pad_bottom_right, pad_to_min_size, pad_to_multiple
from sresolve.archs.safmn import SAFMN

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


def _perturb(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Randomise every parameter (LayerNorm weights/biases included) so that parity tests see non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def _expected_keys(dim: int, n_blocks: int, ffn_scale: float, scale: int) -> list[tuple[str, tuple[int, ...]]]:
    """Ordered state-dict (key, shape) list of spec table §3.2."""
    f, c = int(dim * ffn_scale), dim // 4
    keys = [("to_feat.weight", (dim, 3, 3, 3)), ("to_feat.bias", (dim,))]
    for j in range(n_blocks):
        p = f"feats.{j}."
        keys += [(p + "norm1.weight", (dim,)), (p + "norm1.bias", (dim,))]
        keys += [(p + "norm2.weight", (dim,)), (p + "norm2.bias", (dim,))]
        for lv in range(4):
            keys += [(p + f"safm.mfr.{lv}.weight", (c, 1, 3, 3)), (p + f"safm.mfr.{lv}.bias", (c,))]
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
    assert arch_defaults("safmn_l") == {"scale": 4, "dim": 128, "n_blocks": 16, "ffn_scale": 2.0}
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
    assert (y - y_ref).abs().max().item() <= 1e-5
    assert y.std() > 1e-3  # not a degenerate output

    # spandrel weights -> ours
    ref2 = _perturb(RefSAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=2.0, upscaling_factor=scale), seed=3).eval()
    ours2 = create(name, scale=scale).eval()
    ours2.load_state_dict(ref2.state_dict(), strict=True)
    with torch.no_grad():
        assert (ours2(x) - ref2(x)).abs().max().item() <= 1e-5


def test_parity_unpadded_non_multiple_of_8_size() -> None:
    """Sizes >= 8 run unpadded, like the official test path: identical to spandrel on 23x17 and 9x30."""
    ours = _perturb(create("safmn", scale=3), seed=4).eval()
    ref = RefSAFMN(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=3).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    for h, w in [(23, 17), (9, 30)]:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            assert (ours(x) - ref(x)).abs().max().item() <= 1e-5


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
        ValueError, match=r"\['upscale'\].*accepted arguments: \['scale', 'dim', 'n_blocks', 'ffn_scale'\]"
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
