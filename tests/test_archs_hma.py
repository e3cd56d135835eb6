"""HMANet architecture (Chu et al., CVPRW 2024).

Oracle: ``tests/hma_reference.py``, a literal matmul + softmax implementation of the official module layout written
from ``/work/shared/specs/archs_hat_hma_safmn.md`` §2 (the release is not on PyPI); the spec's measured parameter
counts and key counts; a hand-derived permutation for the release's shifted-strip quirk.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from hma_reference import RefHMA
from sresolve.archs import arch_defaults, create, detect_arch
from sresolve.archs.hma import (
    GAB,
    HMA,
    FusedConv,
    GridAttention,
    grid_shuffle,
    grid_unshuffle,
    relative_index_rows,
)
from sresolve.archs.layers import calculate_rpi_sa, relative_position_index
from sresolve.checkpoints import load_model
from sresolve.config import split_model_cfg

warnings.filterwarnings("ignore", message=".*zero-element.*")

# Exact counts of our implementation; the spec's measurements of the release (1e-3 M) must agree.
PARAM_COUNTS = {2: 69_722_675, 3: 69_907_315, 4: 69_870_387}
SPEC_MPARAMS = {2: 69.723, 3: 69.907, 4: 69.870}
SPEC_NUM_KEYS = {2: 1005, 3: 1005, 4: 1007}
FUSED_CONV_PARAMS_C180 = 3_115_800  # spec: "each FusedConv 3.116 M"

# Small configuration for the numerical tests: window 8, interval 4, 2 groups of 2 FABs (plain + shifted).
SMALL: dict[str, Any] = {"embed_dim": 64, "depths": [2, 2], "num_heads": [4, 4], "window_size": 8}


def _ref_model(scale: int, seed: int = 0, **overrides: Any) -> RefHMA:
    torch.manual_seed(seed)
    ref = RefHMA(scale, **{**SMALL, **overrides}).eval()
    with torch.no_grad():  # move every weight away from its init so each term matters
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return ref


def _official_pad(x: Tensor, m: int) -> tuple[Tensor, int, int]:
    """HMAModel.pre_process: flip-concatenate to a multiple of the window (spec §2.6)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    x = torch.cat([x, torch.flip(x, [2])], 2)[:, :, : h + ph, :]
    x = torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, : w + pw]
    return x, h, w


# ------------------------------------------------------------ sizes and keys
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_param_and_key_counts_match_the_release(scale: int) -> None:
    net = create("hma", scale=scale)
    n = sum(p.numel() for p in net.parameters())
    assert n == PARAM_COUNTS[scale]
    assert round(n / 1e6, 3) == SPEC_MPARAMS[scale]
    sd = net.state_dict()
    assert len(sd) == SPEC_NUM_KEYS[scale]
    assert sd["relative_position_index_SA"].dtype == torch.int64
    assert tuple(sd["relative_position_index_SA"].shape) == (256, 256)
    assert "mean" not in sd
    assert detect_arch(sd) == ("hma", {"scale": scale})


def test_state_dict_layout_equals_official_layout() -> None:
    ours = create("hma", scale=4).state_dict()
    ref = RefHMA(4, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=16).state_dict()
    assert list(ours) == list(ref)  # same names, same order
    for k, v in ref.items():
        assert ours[k].shape == v.shape, k
    assert torch.equal(ours["relative_position_index_SA"], ref["relative_position_index_SA"])
    # spec §2.2 spot checks
    g = "layers.0.residual_group."
    assert ours[g + "blocks.0.fused_conv.weight"].shape == (1080, 180, 3, 3)
    assert ours[g + "blocks.0.norm1.weight"].shape == (1080,)
    assert ours[g + "blocks.1.qkv.weight"].shape == (540, 180)
    assert ours[g + "blocks.2.attn.relative_position_bias_table"].shape == (961, 6)
    assert ours[g + "gab.grid_attn.attn_transform1.pos.pos_proj.weight"].shape == (5, 2)
    assert ours[g + "gab.grid_attn.attn_transform2.pos.pos3.2.weight"].shape == (3, 5)
    assert ours[g + "gab.window_attn_s.proj.weight"].shape == (45, 45)
    assert ours[g + "scale"].shape == (180,)


def test_fused_conv_is_the_parameter_cost_of_the_fab_ablation() -> None:
    assert sum(p.numel() for p in FusedConv(180).parameters()) == FUSED_CONV_PARAMS_C180
    full = sum(p.numel() for p in create("hma", scale=4).parameters())
    no_fab = create("hma", scale=4, use_fab=False)
    assert full - sum(p.numel() for p in no_fab.parameters()) == 18 * FUSED_CONV_PARAMS_C180
    assert not any(".fused_conv." in k for k in no_fab.state_dict())
    no_gab = create("hma", scale=4, use_gab=False).state_dict()
    assert not any(".gab." in k or k.endswith("residual_group.scale") for k in no_gab)


# ------------------------------------------------------------ parity with the oracle
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_layout_loads_strictly_and_reproduces_the_output(scale: int, tmp_path: Path) -> None:
    ref = _ref_model(scale, seed=scale)
    path = tmp_path / f"HMA_SRx{scale}.pth"
    torch.save({"params_ema": ref.state_dict()}, path)
    net = load_model(path)  # strict
    assert isinstance(net, HMA) and net.scale == scale and net.window_size == 8 and net.interval_size == 4
    assert net.depths == [2, 2] and net.num_heads == [4, 4] and net.use_fab and net.use_gab
    torch.manual_seed(10 + scale)
    x = torch.rand(2, 3, 16, 24)  # non-square: 4x6 grid groups, 2x3 windows
    with torch.no_grad():
        want, got = ref(x), net(x)
    assert got.shape == (2, 3, 16 * scale, 24 * scale)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # fp32 summation order (SDPA vs matmul) only
    assert (want - F.interpolate(x, scale_factor=scale, mode="bicubic")).abs().mean() > 1e-2  # not trivial


def test_any_input_size_uses_the_official_symmetric_padding() -> None:
    ref = _ref_model(2, seed=3)
    net = create("hma", scale=2, **SMALL).eval()
    net.load_state_dict(ref.state_dict(), strict=True)
    torch.manual_seed(4)
    x = torch.rand(1, 3, 13, 21)
    padded, h, w = _official_pad(x, 8)
    with torch.no_grad():
        want = ref(padded)[..., : 2 * h, : 2 * w]
        got = net(x)
        assert got.shape == (1, 3, 26, 42)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # tiny inputs (padding larger than the side) fall back to the periodic symmetric extension
        assert net(torch.rand(1, 3, 3, 5)).shape == (1, 3, 6, 10)


# ------------------------------------------------------------ the shifted-strip quirk
def test_shifted_strip_branch_is_the_release_permutation() -> None:
    """With attention forced to the identity, the release's "shifted window" branch is a pure permutation.

    Hand derivation for h=2, w=4, M=2, s=1: roll(-1,-1) gives R[r,c] = X[(r+1)%2, (c+1)%4]; the raster strips are
    the two image rows; reshaped as 2x2 windows and window-reversed the tokens read [R00 R01 R10 R11 R02 R03 R12 R13];
    rolling the token axis by +1 gives [R13 R00 R01 R10 R11 R02 R03 R12] = X at flat positions [0 5 6 1 2 7 4 3],
    and the channel axis is rolled by +1 as well.
    """
    gab = GAB(dim=32, num_heads=2, window_size=2, interval=1, mlp_ratio=2.0)  # window_attn_s: 8 channels, 1 head
    attn = gab.window_attn_s
    with torch.no_grad():
        attn.relative_position_bias_table.zero_()
        attn.relative_position_bias_table[4] = 1000.0  # offset (0, 0): attend to yourself only
        attn.proj.weight.copy_(torch.eye(8))
        attn.proj.bias.zero_()
    c = 8
    x = torch.arange(2 * 4 * c, dtype=torch.float32).view(1, 2, 4, c)
    qkv = torch.cat([torch.zeros(1, 2, 4, 2 * c), x], dim=-1)  # q = k = 0, v = x
    mask = gab.window_attn_s.relative_position_bias_table.new_zeros(2, 4, 4)
    out = gab.shifted_strip_attention(qkv, calculate_rpi_sa(2), mask)
    flat = x.view(8, c)
    want = torch.roll(flat[[0, 5, 6, 1, 2, 7, 4, 3]], shifts=1, dims=1)
    assert torch.equal(out[0], want)


# ------------------------------------------------------------ grid attention
def test_grid_shuffle_round_trip_and_phase_groups() -> None:
    x = torch.arange(2 * 8 * 12 * 3, dtype=torch.float32).view(2, 8, 12, 3)
    g = grid_shuffle(x, 4)
    assert g.shape == (2 * 16, 2 * 3, 3)
    # group (batch 1, row phase 2, col phase 3), token (1, 2) on the sub-grid = pixel (1*4+2, 2*4+3)
    assert torch.equal(g[16 + 2 * 4 + 3, 1 * 3 + 2], x[1, 6, 11])
    assert torch.equal(grid_unshuffle(g, 2, 8, 12, 4), x.view(2, 96, 3))


def test_chunked_grid_attention_equals_all_groups_at_once() -> None:
    torch.manual_seed(0)
    attn = GridAttention(dim=32, num_heads=2).eval()
    gh, gw = 6, 5
    n = gh * gw
    qkv, grid = torch.randn(12, n, 96), torch.randn(12, n, 32)
    row_bytes = 2 * n * 4  # heads x n scores x fp32, one query row
    with torch.no_grad():
        attn.chunk_mb = 0
        assert attn.plan(12, n, torch.float32) == (12, n)
        direct = attn(qkv, grid, gh, gw)
        for budget_rows, plan in ((3 * n, (3, n)), (n, (1, n)), (7, (1, 7)), (1, (1, 1))):
            attn.chunk_mb = budget_rows * row_bytes / 2**20
            assert attn.plan(12, n, torch.float32) == plan
            chunked = attn(qkv, grid, gh, gw)
            assert (direct - chunked).abs().max().item() < 1e-6, plan
    # budget arithmetic: a 256x256 LR tile has 64x64 = 4096 tokens per group; 3 heads x 4096^2 x 4 B = 192 MiB
    attn3 = GridAttention(dim=90, num_heads=3)
    assert attn3.plan(16, 4096, torch.float32) == (2, 4096)
    assert attn3.plan(16, 4096, torch.bfloat16) == (5, 4096)
    # a 512x512 LR image: 16384 tokens per group, 3 GiB of scores per group -> blocks of 2730 query rows
    assert attn3.plan(16, 16384, torch.float32) == (1, 2730)


def test_relative_index_rows_equal_the_full_index() -> None:
    full = relative_position_index(5, 7)
    assert torch.equal(relative_index_rows(5, 7, 0, 35, torch.device("cpu")), full)
    assert torch.equal(relative_index_rows(5, 7, 11, 20, torch.device("cpu")), full[11:20])


def test_grid_chunk_budget_does_not_change_the_network_output() -> None:
    torch.manual_seed(1)
    net = create("hma", scale=2, **SMALL).eval()
    x = torch.rand(2, 3, 24, 16)
    with torch.no_grad():
        net.set_grid_chunk_mb(0)
        a = net(x)
        net.set_grid_chunk_mb(1e-6)
        b = net(x)
    assert (a - b).abs().max().item() < 1e-6


# ------------------------------------------------------------ dtypes, training
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_run(dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    net = create("hma", scale=2, **SMALL).eval()
    x = torch.rand(1, 3, 20, 12)
    with torch.no_grad():
        want = net(x)
        got = net.to(dtype)(x.to(dtype))
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert (got.float() - want).abs().mean().item() < 3e-2


def test_grad_checkpointing_same_gradients() -> None:
    torch.manual_seed(3)
    a = create("hma", scale=2, drop_path_rate=0.0, **SMALL)
    b = create("hma", scale=2, drop_path_rate=0.0, grad_checkpointing=True, **SMALL)
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 16, 16)
    for net in (a, b):
        net.train()
        net(x).square().mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert pa.grad is not None and pb.grad is not None, name
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6, rtol=1e-4), name


# ------------------------------------------------------------ config, detection, errors
def test_ablation_variants_are_detected(tmp_path: Path) -> None:
    for flags in ({"use_fab": False}, {"use_gab": False}, {"use_fab": False, "use_gab": False}):
        net = create("hma", scale=3, **SMALL, **flags)
        name, kwargs = detect_arch(net.state_dict())
        assert name == "hma" and kwargs["scale"] == 3
        assert kwargs["use_fab"] == flags.get("use_fab", True) and kwargs["use_gab"] == flags.get("use_gab", True)
        assert kwargs["depths"] == [2, 2] and kwargs["num_heads"] == [4, 4] and kwargs["window_size"] == 8
        loaded = load_model(net.state_dict())
        assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in net.parameters())
    hat_sd = create("hat", scale=2, embed_dim=60, depths=[1], num_heads=[2], window_size=8).state_dict()
    assert detect_arch(hat_sd)[0] == "hat"


def test_model_yaml_keys_match_entry_function(make_cfg: Callable[..., Any], tmp_path: Path) -> None:
    cfg = make_cfg("train", ["model=hma", "scale=3"], tmp_path)
    arch, net_kwargs, recipe = split_model_cfg(cfg.model)
    assert arch == "hma"
    defaults = arch_defaults("hma")
    for key, value in net_kwargs.items():
        expected = 3 if key == "scale" else defaults[key]
        assert value == (list(expected) if isinstance(expected, tuple) else expected), key
    assert {"use_fab", "use_gab", "interval_size", "window_size"} <= set(net_kwargs)
    assert recipe["optim"]["lr"] == 2e-4 and recipe["finetune_lr"] == 5e-6 and recipe["total_iter"] == 800_000
    assert recipe["sched"]["milestones"] == [300_000, 500_000, 650_000, 700_000, 750_000]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"interval_size": 3}, "interval_size=3 must divide window_size=8"),
        ({"num_heads": [12, 12], "embed_dim": 36}, "num_heads[0]=12 must be even with embed_dim // 4 = 9 divisible"),
        ({"embed_dim": 28, "num_heads": [2, 2]}, "embed_dim=28 must be divisible by 4"),
        ({"grid_chunk_mb": -1}, "grid_chunk_mb must be >= 0"),
        ({"scale": 5}, "scale must be 1, 3 or a power of 2"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError) as err:
        create("hma", **{**SMALL, **kwargs})
    assert needle in str(err.value)


def test_whole_images_run_through_the_tiler() -> None:
    """The official test path tiles HMA (256 px tiles, 32 px overlap); tiles are aligned to the window."""
    from sresolve.ops.tiling import upscale

    torch.manual_seed(5)
    net = create("hma", scale=2, **SMALL).eval()
    assert net.tile_align == 8
    lr = torch.rand(1, 3, 50, 70)
    with torch.no_grad():
        whole = upscale(net, lr)
        tiled = upscale(net, lr, tile=32, overlap=8)
    assert tiled.shape == whole.shape == (1, 3, 100, 140)
    # global grid attention sees less context per tile: close, not equal (spec §2.7.4)
    assert 0 < (tiled - whole).abs().mean().item() < 0.05
