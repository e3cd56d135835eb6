"""``sresolve-analyze complexity``: MAC / activation counting against hand counts, the papers' complexity figures,
memory / latency measurement and the command line.

Paper figures (×4): HAT (Chen et al., CVPR 2023) 20.8M params / 103.7G Multi-Adds at 64×64 (its README lists
102.4G), the SwinIR-like baseline of its CAB/OCAB ablation (α=0, no OCAB, window 16) 12.1M / 63.8G, HAT-S 9.6M /
54.9G; SAFMN (Sun et al., ICCV 2023) 239.52K params / 13.56G "FLOPs" (fvcore MACs) at 320×180 (1280×720 output).
Full-size networks are only counted on the meta device (shapes, no arithmetic).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sresolve.analysis.complexity import (
    CSV_COLUMNS,
    FLOP_FORMULAS,
    SizeSpec,
    count_activations,
    count_macs,
    count_params,
    main,
    measure_latency,
    measure_model,
    measure_peak_memory,
    parse_size,
)
from sresolve.analysis.models import build_model

TINY_HAT = "hat,embed_dim=12,depths=[2],num_heads=[2],window_size=8,beta=3,squeeze_factor=4"
TINY_HMA = "hma,embed_dim=32,depths=[2],num_heads=[2],window_size=8"
TINY_SAFMN = "safmn,dim=8,n_blocks=2"
SWINIR_LIKE = "hat,alpha=0,use_cab=false,use_ocab=false"


# ------------------------------------------------------------------------------------------------ hand counts
def _padded(h: int, w: int, m: int) -> tuple[int, int]:
    return math.ceil(h / m) * m, math.ceil(w / m) * m


def _tail_macs(c: int, num_feat: int, scale: int, n: int) -> tuple[int, int]:
    """``(conv_after_body + conv_before_upsample + upsample + conv_last, upsample alone)`` of the SwinIR-lineage tail
    on ``n`` padded LR pixels."""
    up, cur = 0, n
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            up += 9 * num_feat * 4 * num_feat * cur
            cur *= 4
    else:
        up += 9 * num_feat * 9 * num_feat * cur
        cur *= 9
    return 9 * c * c * n + 9 * c * num_feat * n + up + 9 * num_feat * 3 * cur, up


def hat_macs(
    h: int,
    w: int,
    *,
    c: int = 180,
    depths: Sequence[int] = (6,) * 6,
    m: int = 16,
    gamma: float = 0.5,
    beta: float = 3,
    squeeze: float = 30,
    mlp_ratio: float = 2.0,
    scale: int = 4,
    use_cab: bool = True,
    use_ocab: bool = True,
    num_feat: int = 64,
) -> dict[str, int]:
    """HAT MACs by formula (paper Fig. 3-5), on the input padded to a multiple of the window ``m``.

    HAB: qkv ``N·C·3C`` + window attention ``q·kᵀ`` and ``attn·v`` ``2·N·M²·C`` (each of the N/M² windows: heads ×
    M² × M² × d) + proj ``N·C²`` + MLP ``2·N·C·hid`` + CAB convs ``2·9·C·(C/β)·N`` + channel attention ``2·C·(C/s)``
    (1×1 convs on the pooled 1×1 map). OCAB: as the HAB without CAB, with ``Mo²`` keys per window
    (``Mo = M + int(γM)``). RHAG: + 3×3 conv ``9·C²·N``.
    """
    hp, wp = _padded(h, w, m)
    n = hp * wp
    hid = int(c * mlp_ratio)
    cc, cs = int(c // beta), int(c // squeeze)
    mo = m + int(gamma * m)
    hab = n * c * 3 * c + 2 * n * m * m * c + n * c * c + 2 * n * c * hid
    if use_cab:
        hab += 2 * 9 * c * cc * n + 2 * c * cs
    ocab = n * 3 * c * c + 2 * n * mo * mo * c + n * c * c + 2 * n * c * hid
    layers = sum(d * hab + (ocab if use_ocab else 0) + 9 * c * c * n for d in depths)
    tail, up = _tail_macs(c, num_feat, scale, n)
    return {"total": 9 * 3 * c * n + layers + tail, "layers": layers, "upsample": up}


def hat_activations(
    h: int, w: int, *, c: int, depths: Sequence[int], m: int, beta: float, squeeze: float, scale: int
) -> int:
    """Elements of every conv / linear output of HAT (mlp ratio 2, OCAB and CAB on, 64 reconstruction features)."""
    hp, wp = _padded(h, w, m)
    n, hid, cc, cs = hp * wp, 2 * c, int(c // beta), int(c // squeeze)
    hab = (3 * c + c + hid + c) * n + (cc + c) * n + cs + c
    ocab = (3 * c + c + hid + c) * n
    layers = sum(d * hab + ocab + c * n for d in depths)
    up, cur = 0, n
    for _ in range(int(math.log2(scale))):
        up += 256 * cur
        cur *= 4
    return c * n + layers + c * n + 64 * n + up + 3 * cur


def safmn_macs(h: int, w: int, *, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0, scale: int = 4) -> int:
    """SAFMN MACs (paper Fig. 2): per FMM the four 3×3 depthwise convs of SAFM (level i on ``⌊h/2^i⌋ × ⌊w/2^i⌋``, the
    grouped conv costs ``9·(C/4)`` per pixel), the 1×1 aggregation and the CCM (3×3 expand, 1×1 reduce)."""
    n, c, f = h * w, dim // 4, int(dim * ffn_scale)
    block = sum(9 * c * (h // 2**i) * (w // 2**i) for i in range(4)) + dim * dim * n + 9 * dim * f * n + f * dim * n
    return 9 * 3 * dim * n + n_blocks * block + 9 * dim * 3 * scale**2 * n


def safmn_activations(h: int, w: int, *, dim: int, n_blocks: int, scale: int) -> int:
    n, c, f = h * w, dim // 4, 2 * dim
    block = sum(c * (h // 2**i) * (w // 2**i) for i in range(4)) + dim * n + f * n + dim * n
    return dim * n + n_blocks * block + 3 * scale**2 * n


def hma_macs(
    h: int,
    w: int,
    *,
    c: int = 180,
    depths: Sequence[int] = (6,) * 6,
    heads: int = 6,
    m: int = 16,
    interval: int = 4,
    mlp_ratio: float = 2.0,
    scale: int = 4,
    num_feat: int = 64,
) -> int:
    """HMA MACs by formula (paper Fig. 2, spec §2.3): FusedConv (3×3 C→6C, SE 6C→3C→6C on 1×1, 1×1 6C→C), FAB (a
    Swin block), GAB (qkv; grid_proj C→C/2; grid attention: I² groups of ``(h/I)(w/I)`` tokens, two steps of two
    products on C/2 channels, plus the two position-bias MLPs on the ``(2h/I-1)(2w/I-1)`` offsets; two window
    branches on C/4 channels with their C/4 projections; fc; MLP), + the RHTB 3×3 conv."""
    hp, wp = _padded(h, w, m)
    n, hid, mid = hp * wp, int(c * mlp_ratio), 6 * c
    fused = 9 * c * mid * n + 2 * mid * (mid // 2) + mid * c * n
    fab = n * 3 * c * c + 2 * n * m * m * c + n * c * c + 2 * n * c * hid
    gh, gw = hp // interval, wp // interval
    tokens, cg, cw = gh * gw, c // 2, c // 4
    p, rows = (cg // 4) // 4, (2 * gh - 1) * (2 * gw - 1)
    pos_mlp = rows * (2 * p + 2 * p * p + p * (heads // 2))
    grid = 4 * interval**2 * tokens * tokens * cg + 2 * pos_mlp
    windows = 2 * (2 * n * m * m * cw + n * cw * cw)
    gab = n * 3 * c * c + n * c * cg + grid + windows + n * c * c + 2 * n * c * hid
    layers = sum(sum(fused for k in range(d) if k % 2 == 0) + d * fab + gab + 9 * c * c * n for d in depths)
    return 9 * 3 * c * n + layers + _tail_macs(c, num_feat, scale, n)[0]


# ------------------------------------------------------------------------------------------------ small networks
@pytest.mark.parametrize(("h", "w"), [(16, 16), (13, 10)])
@pytest.mark.parametrize("device", ["meta", None])
def test_small_hat_matches_hand_count(h: int, w: int, device: str | None) -> None:
    """Meta and real CPU passes (fused SDPA kernel) both equal the formula, per module too; 13×10 pads to 16×16."""
    _, net = build_model(TINY_HAT, scale=2)
    inputs = (h, w) if device == "meta" else torch.rand(1, 3, h, w)
    report = count_macs(net, inputs, device=device)
    hand = hat_macs(h, w, c=12, depths=[2], m=8, beta=3, squeeze=4, scale=2)
    assert report.macs == hand["total"]
    assert report.by_module["layers"] == hand["layers"]
    assert report.by_module["upsample"] == hand["upsample"]
    assert sum(report.by_module.values()) == report.macs
    assert report.output_shape == (1, 3, 2 * h, 2 * w)
    assert report.activations == hat_activations(h, w, c=12, depths=[2], m=8, beta=3, squeeze=4, scale=2)
    assert report.by_op["unfold/fold"] == 0  # OCAB's nn.Unfold is listed, with 0 MACs
    if device is None:  # the CPU pass ran attention in the fused kernel, which torch alone would not count
        assert report.by_op["attention"] > 0
        with torch.inference_mode(), FlopCounterMode(display=False) as plain:
            net(torch.rand(1, 3, h, w))
        assert plain.get_total_flops() // 2 < report.macs


@pytest.mark.parametrize(("h", "w"), [(20, 24), (32, 32)])
@pytest.mark.parametrize("device", ["meta", None])
def test_small_safmn_matches_hand_count(h: int, w: int, device: str | None) -> None:
    """Depthwise (grouped) convs of SAFM at every pyramid level, floor pooling sizes (20 // 8 = 2) included."""
    _, net = build_model(TINY_SAFMN, scale=3)
    inputs = (h, w) if device == "meta" else torch.rand(1, 3, h, w)
    report = count_macs(net, inputs, device=device)
    assert report.macs == safmn_macs(h, w, dim=8, n_blocks=2, scale=3)
    assert report.activations == safmn_activations(h, w, dim=8, n_blocks=2, scale=3)
    assert count_activations(net, (h, w)) == report.activations
    assert report.by_op == {"conv": report.macs}


def test_small_hma_matches_hand_count_on_cpu_and_meta() -> None:
    _, net = build_model(TINY_HMA, scale=2)
    hand = hma_macs(16, 16, c=32, depths=[2], heads=2, m=8, scale=2)
    assert count_macs(net, (16, 16)).macs == hand
    assert count_macs(net, torch.rand(1, 3, 16, 16), device=None).macs == hand


def test_grouped_conv_and_linear() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    assert count_macs(conv, (8, 10, 10)).macs == 16 * (8 // 4) * 9 * 100
    lin = nn.Linear(6, 5)
    report = count_macs(lin, torch.rand(2, 7, 6), device="meta")
    assert (report.macs, report.activations) == (2 * 7 * 6 * 5, 2 * 7 * 5)


# ------------------------------------------------------------------------------------------------ attention
def _sdpa_flops(fn, *tensors: torch.Tensor, grad: bool = False) -> tuple[int, set[str]]:
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx, FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        fn(*tensors)
    counts = counter.get_flop_counts()["Global"]
    return sum(counts.values()), {str(k) for k in counts}


@pytest.mark.parametrize("grad", [False, True])
def test_sdpa_counted_exactly_once_on_every_path(grad: bool) -> None:
    """Fused CPU kernel, math fallback (mask of another rank, forced MATH backend, direct call) and meta: each SDPA
    call is counted once, ``2·B·heads·Lq·Lk·(d + d_v)`` FLOPs = MACs × 2 (torch alone counts 0 for the fused one)."""
    b, heads, lq, lk, d, dv = 2, 3, 16, 24, 8, 8  # the fused CPU kernel needs d_v == d
    expected = 2 * b * heads * lq * lk * (d + dv)

    def qkv(device: str) -> list[torch.Tensor]:
        ts = [torch.rand(b, heads, lq, d), torch.rand(b, heads, lk, d), torch.rand(b, heads, lk, dv)]
        return [t.to(device).requires_grad_(grad) for t in ts]

    mask4, mask3 = torch.rand(1, 1, lq, lk), torch.rand(1, lq, lk)
    fused = _sdpa_flops(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask4), *qkv("cpu"), grad=grad
    )
    assert fused == (expected, {"aten._scaled_dot_product_flash_attention_for_cpu"})
    math_path = _sdpa_flops(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask3), *qkv("cpu"))
    assert math_path[0] == expected and "aten._scaled_dot_product_flash_attention_for_cpu" not in math_path[1]
    with sdpa_kernel(SDPBackend.MATH):
        assert _sdpa_flops(F.scaled_dot_product_attention, *qkv("cpu"), grad=grad)[0] == expected
    assert _sdpa_flops(F.scaled_dot_product_attention, *qkv("meta"), grad=grad)[0] == expected
    narrow_v = [*qkv("cpu")[:2], torch.rand(b, heads, lk, 4)]  # d_v != d: unfused on CPU
    assert _sdpa_flops(F.scaled_dot_product_attention, *narrow_v)[0] == 2 * b * heads * lq * lk * (d + 4)
    assert _sdpa_flops(torch.ops.aten._scaled_dot_product_attention_math, *qkv("cpu"))[0] == expected
    assert _sdpa_flops(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, *qkv("cpu"))[0] == expected
    with torch.inference_mode(), FlopCounterMode(display=False) as plain:
        F.scaled_dot_product_attention(*qkv("cpu"), attn_mask=mask4)
    assert plain.get_total_flops() == 0  # the gap FLOP_FORMULAS fills


# ------------------------------------------------------------------------------------------------ paper figures
# (spec, params, paper params, MACs by formula, paper MACs, relative tolerance on the paper MACs)
PAPER = {
    "hat": (20_772_507, 20.8e6, hat_macs(64, 64), 103.7e9, 0.002),
    "swinir_like": (12_059_175, 12.1e6, hat_macs(64, 64, use_cab=False, use_ocab=False), 63.8e9, 0.002),
    "hat_s": (9_621_183, 9.6e6, hat_macs(64, 64, c=144, beta=24, squeeze=24), 54.9e9, 0.006),
}


@pytest.mark.parametrize("name", list(PAPER))
def test_hat_family_paper_figures(name: str) -> None:
    """×4 at 64×64: params equal the papers' to their 0.1M rounding; MACs equal our formula exactly and the papers'
    within 0.2 % (HAT 103.88G vs 103.7G, SwinIR-like 63.75G vs 63.8G) and 0.6 % (HAT-S 54.62G vs 54.9G). The papers do
    not publish their counting script (HAT's own README says 102.4G for HAT); ours counts convs, linears and the two
    attention products, not softmax / norms / element-wise ops (adding the softmax would move HAT-S closer and HAT
    further), and the upsampler and the first / last convs are included."""
    spec = {"swinir_like": SWINIR_LIKE}.get(name, name)
    params, paper_params, hand, paper_macs, tol = PAPER[name]
    _, net = build_model(spec, scale=4)
    assert count_params(net) == params
    assert round(params / 1e6, 1) * 1e6 == pytest.approx(paper_params)
    report = count_macs(net, (64, 64))
    assert report.macs == hand["total"]
    assert report.macs == pytest.approx(paper_macs, rel=tol)


def test_safmn_paper_figures() -> None:
    """SAFMN ×4: 239,520 params exactly (paper: 239.52K); 13.542G MACs at 320×180 (1280×720 output) vs the paper's
    13.56G "FLOPs", i.e. fvcore MACs: -0.13 %. fvcore also counts the nearest upsampling of SAFM's three pooled levels
    (1 per output element, +12.4M → 13.555G); our inference path copies instead of interpolating and element-wise ops
    are not counted."""
    _, net = build_model("safmn", scale=4)
    assert count_params(net) == 239_520
    report = count_macs(net, (180, 320))
    assert report.macs == safmn_macs(180, 320) == 13_542_474_240
    assert report.macs == pytest.approx(13.56e9, rel=0.002)
    assert report.output_shape == (1, 3, 720, 1280)


def test_hma_full_size_matches_hand_count() -> None:
    """HMA ×4 at 64×64 (no paper figure): 217.36G MACs, equal to the formula; the FusedConvs' 6C expansion makes up
    two thirds of it."""
    _, net = build_model("hma", scale=4)
    report = count_macs(net, (64, 64))
    assert report.macs == hma_macs(64, 64)
    assert report.macs == pytest.approx(217.36e9, rel=1e-4)


# ------------------------------------------------------------------------------------------------ memory, latency
def test_memory_latency_and_measure_model() -> None:
    _, net = build_model(TINY_SAFMN, scale=2)
    x = torch.rand(1, 3, 32, 32)
    peak = measure_peak_memory(net, x)
    assert peak is not None and peak >= 3 * 64 * 64 * 4  # the output at least
    assert measure_latency(net, x, runs=2, warmup=1) > 0
    rows = measure_model("tiny", net, [SizeSpec("lr", 32, 16), SizeSpec("hr", 64, 64)], latency_runs=1, warmup=0)
    assert [(r.input_hw, r.output_hw) for r in rows] == [((16, 32), (32, 64)), ((32, 32), (64, 64))]
    assert all(r.peak_memory and r.latency and r.params == count_params(net) for r in rows)
    assert rows[1].macs == safmn_macs(32, 32, dim=8, n_blocks=2, scale=2)


def test_parse_size() -> None:
    assert parse_size("64") == SizeSpec("lr", 64, 64)
    assert parse_size("1280x720", "hr").lr_hw(4) == (180, 320)
    assert parse_size("1280×720", "hr").lr_hw(3) == (240, 427)  # rounded up
    for bad in ("", "64x", "0x5", "axb", "1x2x3"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_size(bad)


# ------------------------------------------------------------------------------------------------ command line
def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_cli_table_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "complexity.csv"
    argv = ["tiny-safmn=" + TINY_SAFMN, TINY_HAT, "--scale", "2", "--size", "16", "24x20", "--output-size", "64x48"]
    assert main([*argv, "--csv", str(out), "--latency-runs", "1", "--warmup", "0", "--breakdown"]) == 0
    stdout = capsys.readouterr().out
    assert "| model | scale | params | input | output | MACs |" in stdout and "upsample" in stdout
    columns, rows = _read_csv(out)
    assert columns == list(CSV_COLUMNS)
    assert [(r["model"], r["input_w"], r["input_h"], r["output_w"], r["output_h"]) for r in rows] == [
        (label, *dims)
        for label in ("tiny-safmn", TINY_HAT)
        for dims in (("16", "16", "32", "32"), ("24", "20", "48", "40"), ("32", "24", "64", "48"))
    ]
    assert int(rows[1]["macs"]) == safmn_macs(20, 24, dim=8, n_blocks=2, scale=2)
    assert int(rows[5]["macs"]) == hat_macs(24, 32, c=12, depths=[2], m=8, beta=3, squeeze=4, scale=2)["total"]
    assert all(float(r["peak_memory_mib"]) > 0 and float(r["latency_ms"]) > 0 for r in rows)
    assert {r["scale"] for r in rows} == {"2"} and {r["device"] for r in rows} == {"cpu"}


def test_cli_weights_file_keeps_its_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, net = build_model(TINY_SAFMN, scale=3)
    weights = tmp_path / "tiny_x3.pth"
    torch.save(net.state_dict(), weights)
    out = tmp_path / "w.csv"
    assert main([str(weights), "--scale", "4", "--no-latency", "--no-memory", "--csv", str(out)]) == 0
    _, rows = _read_csv(out)
    assert len(rows) == 1  # default size: 64x64
    row = rows[0]
    assert (row["model"], row["scale"], row["output_w"], row["peak_memory_mib"], row["latency_ms"]) == (
        "tiny_x3",
        "3",
        "192",
        "",
        "",
    )
    assert int(row["macs"]) == safmn_macs(64, 64, dim=8, n_blocks=2, scale=3)
    assert "| tiny_x3 | ×3 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch"], "no model config 'nosuch'"),
        (["hat,foo=1"], "has no key 'foo'"),
        (["missing.pth"], "does not exist"),
        (["safmn", "--size", "0x5"], "WIDTHxHEIGHT"),
        (["hat,embed_dim=10"], "embed_dim"),
    ],
)
def test_cli_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--no-latency", "--no-memory"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sresolve-analyze complexity: ") and message in lines[0]
    assert captured.out == ""


def test_dispatcher_runs_complexity(capsys: pytest.CaptureFixture[str]) -> None:
    from sresolve.cli.analyze import main as analyze

    assert analyze(["complexity", TINY_SAFMN, "--size", "16", "--no-latency", "--no-memory"]) == 0
    assert "| safmn,dim=8,n_blocks=2 | ×4 | 6.70K | 16×16 | 64×64 | 1.64M |" in capsys.readouterr().out
