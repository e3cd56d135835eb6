"""HAT architecture (Chen et al., CVPR 2023).

Reference: spandrel's independent HAT implementation (spandrel 0.4.2, used only here as an oracle) and the facts of
``/work/shared/specs/archs_hat_hma_safmn.md`` §1 (variant table, parameter counts, key table, index formulas) and §4.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from spandrel.architectures.HAT import HAT as RefHAT
from torch import Tensor, nn

from sresolve.archs import arch_defaults, create, detect_arch, list_archs
from sresolve.archs.hat import (
    HAT,
    OCAB,
    WindowAttention,
    calculate_rpi_oca,
    calculate_rpi_sa,
    calculate_shift_mask,
    window_attention,
)
from sresolve.checkpoints import load_model
from sresolve.config import split_model_cfg

warnings.filterwarnings("ignore", message=".*meshgrid.*")
warnings.filterwarnings("ignore", message=".*zero-element.*")

# Spec §1.1 hyper-parameters of the named variants (spandrel argument names).
VARIANTS: dict[str, dict[str, Any]] = {
    "hat_s": {"embed_dim": 144, "depths": [6] * 6, "num_heads": [6] * 6, "compress_ratio": 24, "squeeze_factor": 24},
    "hat": {"embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "compress_ratio": 3, "squeeze_factor": 30},
    "hat_l": {"embed_dim": 180, "depths": [6] * 12, "num_heads": [6] * 12, "compress_ratio": 3, "squeeze_factor": 30},
}
COMMON = {"window_size": 16, "overlap_ratio": 0.5, "conv_scale": 0.01, "mlp_ratio": 2.0}

# Exact counts measured on our implementation; the spec table (official class, rounded to 1e-3 M) must agree.
PARAM_COUNTS = {
    ("hat_s", 2): 9_473_471,
    ("hat_s", 3): 9_658_111,
    ("hat_s", 4): 9_621_183,
    ("hat", 2): 20_624_795,
    ("hat", 3): 20_809_435,
    ("hat", 4): 20_772_507,
    ("hat_l", 2): 40_698_863,
    ("hat_l", 3): 40_883_503,
    ("hat_l", 4): 40_846_575,
}
SPEC_MPARAMS = {"hat_s": (9.473, 9.658, 9.621), "hat": (20.625, 20.809, 20.773), "hat_l": (40.699, 40.884, 40.847)}
SPEC_NUM_KEYS_X4 = {"hat_s": 864, "hat": 864, "hat_l": 1710}

# Small configuration for numerical tests (window 8, γ 0.5 → Mo 12).
SMALL: dict[str, Any] = {
    "embed_dim": 24,
    "depths": [2, 2],
    "num_heads": [2, 3],
    "window_size": 8,
    "compress_ratio": 3,
    "squeeze_factor": 4,
    "mlp_ratio": 2.0,
}


def _perturb(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Randomise every parameter (LayerNorms and bias tables included) so that parity tests see non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def _ref(scale: int, **kw: Any) -> RefHAT:
    return RefHAT(upscale=scale, **kw)


def _small_pair(scale: int, seed: int = 0) -> tuple[HAT, RefHAT]:
    ref = _perturb(_ref(scale, **SMALL), seed).eval()
    ours = HAT(scale=scale, **SMALL).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


# ------------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("name", list(VARIANTS))
def test_param_counts_keys_and_buffers_match_spec_and_spandrel(name: str) -> None:
    for scale in (2, 3, 4):
        model = create(name, scale=scale)
        n = sum(p.numel() for p in model.parameters())
        assert n == PARAM_COUNTS[(name, scale)]
        assert round(n / 1e6, 3) == SPEC_MPARAMS[name][(2, 3, 4).index(scale)]
        if scale == 3:
            continue
        sd = model.state_dict()
        ref_sd = _ref(scale, **VARIANTS[name], **COMMON).state_dict()
        assert [(k, tuple(v.shape)) for k, v in sd.items()] == [(k, tuple(v.shape)) for k, v in ref_sd.items()]
        assert len(sd) == SPEC_NUM_KEYS_X4[name] - (2 if scale == 2 else 0)
        for key in ("relative_position_index_SA", "relative_position_index_OCA"):
            assert sd[key].dtype == torch.int64
            assert torch.equal(sd[key], ref_sd[key])
        assert tuple(sd["relative_position_index_OCA"].shape) == (256, 576)
        assert "mean" not in sd
        assert model.scale == scale and model.in_channels == 3 and model.tile_align == 16
        # the detector recognises the named variant from the bare weights
        assert detect_arch(sd) == (name, {"scale": scale})


def test_registry_lists_variants() -> None:
    assert {"hat", "hat_s", "hat_l"} <= set(list_archs("hat*"))


def test_index_formulas() -> None:
    sa = calculate_rpi_sa(16)
    assert sa.shape == (256, 256) and int(sa.min()) == 0 and int(sa.max()) == 960
    assert torch.equal(torch.unique(sa), torch.arange(961))
    oca = calculate_rpi_oca(16, 24)
    assert oca.shape == (256, 576)
    assert (int(oca.min()), int(oca.max())) == (-880, 640)
    assert int((oca < 0).sum()) == 92_800
    # wrapping modulo 1521 is a bijection onto the table rows
    assert torch.equal(torch.unique(oca % 1521), torch.arange(1521))


def test_shift_mask_cached_and_in_input_dtype() -> None:
    model = HAT(scale=2, **SMALL)
    m1 = model.shift_mask(16, 24, torch.bfloat16, torch.device("cpu"))
    assert m1.dtype == torch.bfloat16 and m1.shape == (6, 64, 64)
    assert model.shift_mask(16, 24, torch.bfloat16, torch.device("cpu")) is m1
    m32 = calculate_shift_mask(16, 24, 8, 4, torch.float32, "cpu")
    assert set(torch.unique(m32).tolist()) == {0.0, -100.0}
    # the top-left window is never split by the shift; the bottom-right one is split in 4 regions
    assert int((m32[0] != 0).sum()) == 0
    assert int((m32[-1] == 0).sum()) == 4 * 16 * 16


# ------------------------------------------------------------------------------------------------ parity with spandrel
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_parity_with_spandrel(scale: int) -> None:
    ours, ref = _small_pair(scale, seed=scale)
    g = torch.Generator().manual_seed(10 + scale)
    with torch.no_grad():
        # 16x24: multiple of the window (no padding); 13x20: both pad with reflect bottom/right and crop
        for hw in ((16, 24), (13, 20)):
            x = torch.rand(2, 3, *hw, generator=g)
            y = ours(x)
            assert y.shape == (2, 3, hw[0] * scale, hw[1] * scale)
            torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)  # fp32 summation order only
        # reverse direction: our weights into spandrel
        ours2 = _perturb(HAT(scale=scale, **SMALL), seed=100 + scale).eval()
        ref2 = _ref(scale, **SMALL).eval()
        ref2.load_state_dict(ours2.state_dict(), strict=True)
        x = torch.rand(1, 3, 11, 17, generator=g)
        torch.testing.assert_close(ours2(x), ref2(x), atol=1e-5, rtol=1e-5)  # fp32 summation order only


def test_tiny_inputs_fall_back_to_replicate_padding() -> None:
    ours, _ = _small_pair(2)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for hw in ((1, 1), (3, 5), (8, 2)):
            x = torch.rand(1, 3, *hw, generator=g)
            y = ours(x)
            assert y.shape == (1, 3, 2 * hw[0], 2 * hw[1])
            # an axis whose padding is >= its side is replicate-padded (reflect impossible), the other reflected
            xp = x
            for axis, side in ((2, hw[0]), (3, hw[1])):
                pad = (-side) % 8
                if pad:
                    idx = torch.arange(side + pad)
                    idx = idx.clamp(max=side - 1) if pad >= side else torch.where(idx < side, idx, 2 * (side - 1) - idx)
                    xp = xp.index_select(axis, idx)
            assert torch.equal(y, ours(xp)[..., : 2 * hw[0], : 2 * hw[1]])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ours(torch.rand(1, 1, 8, 8))


def test_load_model_infers_kwargs_and_output() -> None:
    ours, _ = _small_pair(3, seed=7)
    sd = ours.state_dict()
    name, kwargs = detect_arch(sd)  # type: ignore[misc]
    assert name == "hat"
    assert kwargs == {
        "scale": 3,
        "embed_dim": 24,
        "depths": [2, 2],
        "num_heads": [2, 3],
        "window_size": 8,
        "use_cab": True,
        "use_ocab": True,
        "mlp_ratio": 2.0,
        "gamma": 0.5,
        "beta": 3,
        "squeeze_factor": 4,
    }
    loaded = load_model({"params_ema": sd, "params": {k: v * 0 for k, v in sd.items()}})
    assert isinstance(loaded, HAT) and not loaded.training
    x = torch.rand(1, 3, 10, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), ours(x))


def test_detector_on_ablation_variants() -> None:
    for flags in ({"use_cab": False}, {"use_ocab": False}, {"use_cab": False, "use_ocab": False}):
        model = HAT(scale=2, **SMALL, **flags)
        name, kwargs = detect_arch(model.state_dict())  # type: ignore[misc]
        assert name == "hat"
        for k, v in flags.items():
            assert kwargs[k] is v
        rebuilt = create(name, **kwargs)
        rebuilt.load_state_dict(model.state_dict(), strict=True)


# ------------------------------------------------------------------------------------------------ precision
def test_bf16_and_fp16_forward() -> None:
    ours, _ = _small_pair(2, seed=5)
    x = torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y32 = ours(x)
        for dtype, tol in ((torch.bfloat16, 2e-2), (torch.float16, 5e-3)):
            low = HAT(scale=2, **SMALL).eval()
            low.load_state_dict(ours.state_dict())
            low = low.to(dtype)
            y = low(x.to(dtype))
            assert y.dtype == dtype and y.shape == y32.shape
            assert torch.isfinite(y).all()
            diff = (y.float() - y32).abs().mean().item()
            assert diff < tol, (dtype, diff)  # measured: bf16 7.1e-3 (max 3.2e-2), fp16 9.3e-4


# -------------------------------------------------------------------------------------------- ablations and validation
def test_use_cab_and_use_ocab_remove_keys() -> None:
    full = set(HAT(scale=2, **SMALL).state_dict())
    no_cab = set(HAT(scale=2, **SMALL, use_cab=False).state_dict())
    no_ocab = set(HAT(scale=2, **SMALL, use_ocab=False).state_dict())
    assert full - no_cab == {k for k in full if ".conv_block." in k}
    assert len(full - no_cab) == 4 * 8  # 4 HABs x (cab.0, cab.2, attention.1, attention.3) x (weight, bias)
    assert no_cab <= full
    assert full - no_ocab == {k for k in full if ".overlap_attn." in k} | {"relative_position_index_OCA"}
    assert len(full - no_ocab) == 2 * 13 + 1  # per OCAB: table + 6 weight/bias pairs
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        for flags in ({"use_cab": False}, {"use_ocab": False}):
            assert HAT(scale=2, **SMALL, **flags).eval()(x).shape == (1, 3, 18, 18)
    # without OCAB an odd overlap is irrelevant and accepted
    HAT(scale=2, **{**SMALL, "window_size": 6}, use_ocab=False)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"window_size": 6}, r"window_size=6.*overlap_ratio=0\.5"),
        ({"window_size": 10}, r"window_size=10.*overlap_ratio=0\.5"),
        ({"overlap_ratio": 0.375}, r"window_size=8.*overlap_ratio=0\.375"),
        ({"num_heads": [5, 3]}, r"embed_dim=24.*num_heads\[0\]=5"),
        ({"depths": [2]}, r"depths.*num_heads"),
        ({"squeeze_factor": 30}, r"squeeze_factor"),
        ({"compress_ratio": 48}, r"compress_ratio"),
        ({"window_size": 1}, r"window_size"),
    ],
)
def test_invalid_config_raises(override: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        HAT(scale=2, **{**SMALL, **override})


def test_invalid_scale_raises() -> None:
    with pytest.raises(ValueError, match="scale"):
        HAT(scale=5, **SMALL)


# ------------------------------------------------------------------------------------------- paper-named config keys
# The registered entry functions (= config keys) use the paper's α, β, γ; the HAT class keeps the official names.
SMALL_ENTRY: dict[str, Any] = {
    "embed_dim": 24,
    "depths": [2, 2],
    "num_heads": [2, 3],
    "window_size": 8,
    "beta": 3,
    "squeeze_factor": 4,
    "drop_path_rate": 0.0,
}


def test_entry_functions_use_alpha_beta_gamma() -> None:
    for name in VARIANTS:
        d = arch_defaults(name)
        assert (d["alpha"], d["beta"], d["gamma"]) == (0.01, VARIANTS[name]["compress_ratio"], 0.5)
        assert not {"conv_scale", "compress_ratio", "overlap_ratio"} & set(d)
    with pytest.raises(ValueError, match=r"unknown argument.*compress_ratio"):
        create("hat", compress_ratio=3)
    # the mapping onto the official names: alpha -> conv_scale, beta -> compress_ratio, gamma -> overlap_ratio
    net = create(
        "hat", scale=2, alpha=0.25, beta=6, gamma=0.25, **{k: v for k, v in SMALL_ENTRY.items() if k != "beta"}
    )
    assert (net.conv_scale, net.compress_ratio, net.overlap_ratio) == (0.25, 6, 0.25)
    blk = net.layers[0].residual_group.blocks[0]
    assert blk.conv_scale == 0.25 and blk.conv_block.cab[0].out_channels == 24 // 6
    assert net.layers[0].residual_group.overlap_attn.overlap_win_size == 8 + 2
    assert tuple(net.relative_position_index_OCA.shape) == (64, 100)


def test_swinir_like_baseline_alpha0_no_ocab() -> None:
    full = create("hat", scale=2)
    base = create("hat", scale=2, alpha=0.0, use_ocab=False)
    sd_full, sd_base = full.state_dict(), base.state_dict()
    assert not any(".overlap_attn." in k for k in sd_base) and "relative_position_index_OCA" not in sd_base
    assert set(sd_full) - set(sd_base) == {k for k in sd_full if ".overlap_attn." in k} | {
        "relative_position_index_OCA"
    }
    habs = [b for layer in base.layers for b in layer.residual_group.blocks]
    assert len(habs) == 36 and all(b.conv_scale == 0.0 for b in habs) and base.conv_scale == 0.0
    assert all(layer.residual_group.overlap_attn is None for layer in base.layers)
    # alpha = 0 switches the CAB branch off numerically: same output as the network without CAB on shared weights
    small = _perturb(create("hat", scale=2, alpha=0.0, use_ocab=False, **SMALL_ENTRY), seed=3).eval()
    no_cab = create("hat", scale=2, alpha=0.0, use_ocab=False, use_cab=False, **SMALL_ENTRY).eval()
    missing, unexpected = no_cab.load_state_dict(small.state_dict(), strict=False)
    assert not missing and unexpected and all(".conv_block." in k for k in unexpected)
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = small(x)
        assert torch.equal(y, no_cab(x))
        small.layers[0].residual_group.blocks[0].conv_scale = 0.5  # and the CAB does matter when alpha != 0
        assert (small(x) - y).abs().max() > 1e-4


@pytest.mark.parametrize(("window_size", "gamma"), [(12, 0.25), (6, 0.5), (10, 0.5)])
def test_bad_window_gamma_error_names_config_keys(window_size: int, gamma: float) -> None:
    with pytest.raises(ValueError, match=rf"window_size={window_size} and gamma={gamma}\b.*even"):
        create("hat", window_size=window_size, gamma=gamma)
    # without OCAB gamma is unused and any window is accepted
    assert create("hat_s", window_size=window_size, gamma=gamma, use_ocab=False, depths=[1], num_heads=[6]).scale == 4
    with pytest.raises(ValueError, match=r"gamma.*>= 0"):
        create("hat", gamma=-0.5)
    with pytest.raises(ValueError, match=r"beta.*embed_dim=144"):
        create("hat_s", beta=200)
    with pytest.raises(ValueError, match=r"alpha"):
        create("hat", alpha=float("nan"))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_model_yaml_keys_match_entry_function(name: str, make_cfg: Callable[..., Any], tmp_path: Path) -> None:
    cfg = make_cfg("train", [f"model={name}", "scale=2"], tmp_path)
    arch, net_kwargs, _ = split_model_cfg(cfg.model)
    assert arch == name
    defaults = arch_defaults(name)
    assert {"alpha", "beta", "gamma", "window_size", "use_cab", "use_ocab"} <= set(net_kwargs)
    for key, value in net_kwargs.items():
        expected = 2 if key == "scale" else defaults[key]
        assert value == (list(expected) if isinstance(expected, tuple) else expected), key
    # the ablation sweep of the paper is expressed with config overrides
    cfg = make_cfg(
        "train",
        [f"model={name}", "model.alpha=0", "model.use_ocab=false", "model.depths=[1]", "model.num_heads=[6]"],
        tmp_path,
    )
    _, net_kwargs, _ = split_model_cfg(cfg.model)
    net = create(name, **net_kwargs)
    assert net.conv_scale == 0.0 and not net.use_ocab and net.use_cab


# ------------------------------------------------------------------------------------------------ attention maths
def _explicit(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Official formula: softmax((q·d^-½)·kᵀ + bias)·v."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
    return attn.softmax(-1) @ v


def test_sdpa_equals_explicit_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 3, 64, 8, generator=g) for _ in range(3))
    bias = torch.randn(3, 64, 64, generator=g)
    assert (window_attention(q, k, v, bias) - _explicit(q, k, v, bias)).abs().max() <= 1e-6

    # WindowAttention with the shift mask, against an explicit re-computation from its weights
    attn = _perturb(WindowAttention(24, 8, 3), seed=1).eval()
    x = torch.randn(2 * 6, 64, 24, generator=g)
    rpi = calculate_rpi_sa(8)
    mask = calculate_shift_mask(16, 24, 8, 4, torch.float32, "cpu")
    with torch.no_grad():
        qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).view(12, 64, 3, 3, 8).permute(2, 0, 3, 1, 4)
        b = attn.relative_position_bias_table[rpi.view(-1)].view(64, 64, 3).permute(2, 0, 1)
        full = (b[None] + mask[:, None]).repeat(2, 1, 1, 1)  # windows ordered batch-major
        ref = _explicit(qkv[0], qkv[1], qkv[2], full).transpose(1, 2).reshape(12, 64, 24)
        ref = F.linear(ref, attn.proj.weight, attn.proj.bias)
        assert (attn(x, rpi, mask) - ref).abs().max() <= 1e-6

    # OCAB attention core: negative OCA indices gathered with Python-style wrapping
    ocab = _perturb(OCAB(24, 8, 0.5, 3, 2.0), seed=2).eval()
    table = ocab.relative_position_bias_table
    rpi_oca = calculate_rpi_oca(8, 12)
    wrapped = table[rpi_oca.view(-1)].view(64, 144, 3).permute(2, 0, 1)
    qo, ko, vo = torch.randn(5, 3, 64, 8, generator=g), *(torch.randn(5, 3, 144, 8, generator=g) for _ in range(2))
    assert (window_attention(qo, ko, vo, wrapped) - _explicit(qo, ko, vo, wrapped)).abs().max() <= 1e-6


# ------------------------------------------------------------------------------------------------ training
def test_grad_checkpointing_same_gradients() -> None:
    kw = {**SMALL, "depths": [1, 1], "drop_path_rate": 0.0}
    base = _perturb(HAT(scale=2, **kw), seed=4).train()
    ckpt = HAT(scale=2, **kw, grad_checkpointing=True).train()
    ckpt.load_state_dict(base.state_dict())
    x = torch.rand(2, 3, 8, 16, generator=torch.Generator().manual_seed(0))
    target = torch.rand(2, 3, 16, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    for model in (base, ckpt):
        model.zero_grad()
        F.l1_loss(model(x), target).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(base.parameters()))
    for n in grads[0]:
        assert (grads[0][n] - grads[1][n]).abs().max() <= 1e-6, n


def test_init_follows_spec() -> None:
    model = HAT(scale=2, **SMALL)
    blk = model.layers[0].residual_group.blocks[0]
    assert torch.all(blk.attn.qkv.bias == 0) and torch.all(blk.norm1.weight == 1)
    assert abs(blk.attn.qkv.weight.std().item() - 0.02) < 0.003  # trunc_normal(std 0.02)
    assert abs(blk.attn.relative_position_bias_table.std().item() - 0.02) < 0.005
    # stochastic depth grows linearly from 0 to drop_path_rate over the 4 HABs
    rates = [getattr(b.drop_path, "p", 0.0) for layer in model.layers for b in layer.residual_group.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 4).tolist())


@pytest.mark.parametrize("bias_shape", [(6, 64, 80), (1, 6, 64, 80), (4, 6, 64, 80)])
def test_window_attention_gradients_equal_the_explicit_formula(bias_shape: tuple[int, ...]) -> None:
    """Training on the CPU with a learnable bias runs the fused forward and our backward: same values and gradients
    (q, k, v and the broadcast-reduced bias) as autograd through the explicit formula, in float64."""
    torch.manual_seed(0)
    q = torch.randn(4, 6, 64, 30, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 6, 80, 30, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 6, 80, 30, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(bias_shape, dtype=torch.float64, requires_grad=True)
    out = window_attention(q, k, v, bias)
    assert out.grad_fn is not None and "BiasedAttention" in type(out.grad_fn).__name__
    d_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v, bias), d_out)
    ref = _explicit(q, k, v, bias)
    want = torch.autograd.grad(ref, (q, k, v, bias), d_out)
    assert (out - ref).abs().max().item() < 1e-12
    for name, g, w in zip("qkvb", got, want, strict=True):
        assert g.shape == w.shape, name
        assert (g - w).abs().max().item() < 1e-12, name
