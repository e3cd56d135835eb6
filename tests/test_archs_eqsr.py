"""EQSR / EQNet: parameter counts, the AFE and involution operators against direct references, output sizes at
integer / non-integer / out-of-distribution scales, mixed-scale batches, exact tiled decoding, state-dict loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sresolve import archs
from sresolve.archs.eqsr import (
    DECODER_HALO,
    EQSR,
    AdaptiveFeatureExtractor,
    AFEBlock,
    involution,
    sine_cosine_encoding,
)
from sresolve.archs.hat import HAB, OCAB
from sresolve.checkpoints import load_model
from sresolve.ops.coords import make_coord
from sresolve.ops.tiling import upscale


def tiny(**kw: object) -> EQSR:
    args = dict(embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=8, decoder_dim=32, drop_path_rate=0.0)
    args.update(kw)
    torch.manual_seed(0)
    return archs.create("eqsr", **args).eval()  # type: ignore[return-value]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------------ sizes
@pytest.mark.parametrize(
    ("groups", "depth", "expected"),
    [(4, 4, 8_515_106), (4, 5, 9_582_890), (5, 5, 11_601_200), (6, 5, 13_619_510), (6, 6, 15_221_186)],
)
def test_parameter_counts_match_supplement_table_1(groups: int, depth: int, expected: int) -> None:
    net = archs.create("eqsr", depths=(depth,) * groups, num_heads=(6,) * groups)
    assert n_params(net) == expected  # 8.5 / 9.6 / 11.6 / 13.6 / 15.2 M in the supplement
    assert round(expected / 1e6, 1) == {4: {4: 8.5, 5: 9.6}, 5: {5: 11.6}, 6: {5: 13.6, 6: 15.2}}[groups][depth]


def test_block_parameter_counts() -> None:
    assert n_params(HAB(180, 6, 16, 0, 1, 1, 0.0, 2.0, use_cab=False)) == 266_946
    assert n_params(OCAB(180, 16, 0.5, 6, 2.0)) == 270_306
    afe_block = AFEBlock(180, 81)
    assert n_params(afe_block) == 388_440
    assert n_params(afe_block.net2) == 306_360  # the AFE conv basis and its scale-to-channel Linear
    assert n_params(archs.create("eqsr").upsample) == 1_212_110


def test_configs_of_table_1_variants_build_with_their_counts() -> None:
    from omegaconf import OmegaConf

    from sresolve.config import conf_dir, split_model_cfg

    expected = {"eqsr": 13_619_510, "eqsr_4x4": 8_515_106, "eqsr_4x5": 9_582_890, "eqsr_5x5": 11_601_200}
    expected["eqsr_6x6"] = 15_221_186
    for name, count in expected.items():
        cfg = OmegaConf.load(conf_dir() / "model" / f"{name}.yaml")
        cfg.scale = 4
        arch, kwargs, recipe = split_model_cfg(cfg)
        assert n_params(archs.create(arch, **kwargs)) == count, name
        assert recipe["optim"]["lr"] == pytest.approx(2e-4) and recipe["ema_decay"] == pytest.approx(0.999)


# ------------------------------------------------------------------------------------------------ operators
def test_scale_encoding_has_81_values_in_official_order() -> None:
    x = torch.tensor([[2.5], [0.0416667]])
    e = sine_cosine_encoding(x, 40)
    assert e.shape == (2, 81)
    ref = [x]
    for i in range(40):  # the official loop: (2**i * pi) * x / 10, sin then cos
        ref += [torch.sin((2**i * math.pi) * x / 10), torch.cos((2**i * math.pi) * x / 10)]
    assert torch.equal(e, torch.cat(ref, 1))
    assert e[0, 0] == 2.5 and e[0, 1] == pytest.approx(math.sin(math.pi * 2.5 / 10), abs=1e-6)
    assert e.dtype == torch.float32 and sine_cosine_encoding(x.double(), 40).dtype == torch.float32


def test_afe_grouped_conv_equals_per_sample_loop() -> None:
    torch.manual_seed(1)
    afe = AdaptiveFeatureExtractor(12, 81)
    torch.nn.init.normal_(afe.to_style.weight, std=0.3)
    x = torch.randn(3, 12, 9, 7)
    code = sine_cosine_encoding(torch.tensor([[1.3], [2.7], [3.9]]), 40)
    out = afe(x, code)
    for b in range(3):
        style = afe.to_style(code[b])  # modulation along input channels, +1 offset, then demodulation (spec A3)
        w = afe.weight * (1 + style)[None, :, None, None]
        w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        ref = F.conv2d(x[b : b + 1], w, padding=1)
        torch.testing.assert_close(out[b : b + 1], ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[0], out[1])  # different scales modulate differently


def test_involution_equals_direct_reference() -> None:
    torch.manual_seed(2)
    b, c, g, h, w = 2, 16, 2, 5, 6
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    kernel = torch.randn(b, g, 3, 3, h, w, dtype=torch.float64)
    ref = torch.zeros_like(x)
    for n in range(b):  # out[c, p] = sum over the 3x3 taps of K[group(c), tap, p] * x[c, p + tap], zero outside
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    acc = 0.0
                    for di in range(3):
                        for dj in range(3):
                            y, xx = i + di - 1, j + dj - 1
                            if 0 <= y < h and 0 <= xx < w:
                                acc += float(kernel[n, ch // (c // g), di, dj, i, j] * x[n, ch, y, xx])
                    ref[n, ch, i, j] = acc
    torch.testing.assert_close(involution(x, kernel), ref, atol=1e-12, rtol=0)
    # and the unfold formulation of the official CUDA kernel
    xu = F.unfold(x, 3, padding=1).view(b, g, c // g, 9, h, w)
    torch.testing.assert_close(involution(x, kernel), (xu * kernel.view(b, g, 1, 9, h, w)).sum(3).view(b, c, h, w))


# ------------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("scale", [2, 3, 4, 2.25, 3.75, 5.25, 6, 8, 1.5])
def test_output_size_at_integer_noninteger_and_ood_scales(scale: float) -> None:
    net = tiny()
    lr = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        out = net(lr, scale=scale)
    assert out.shape == (1, 3, round(13 * scale), round(21 * scale))
    assert torch.isfinite(out).all()


def test_explicit_out_size_and_coord_grid() -> None:
    net = tiny()
    lr = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        a = net(lr, out_size=(37, 29))
        b = net(lr, scale=37 / 16, coord=make_coord((37, 29)).expand(2, 37, 29, 2))
    assert a.shape == (2, 3, 37, 29)
    torch.testing.assert_close(a, b)


def test_mixed_scale_batch_equals_per_sample_runs() -> None:
    net = tiny()
    torch.manual_seed(3)
    lr = torch.rand(3, 3, 16, 16)
    scales = torch.tensor([1.4, 2.6, 3.9])
    coords = []
    for s in scales.tolist():  # a 12x12 query window of each sample's HR grid (training layout)
        side = round(16 * s)
        coords.append(make_coord((side, side))[side - 12 :, 2:14])
    coord = torch.stack(coords)
    with torch.no_grad():
        together = net(lr, scale=scales, coord=coord)
        alone = torch.cat([net(lr[i : i + 1], scale=float(scales[i]), coord=coord[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert together.shape == (3, 3, 12, 12)


def test_tiled_decoding_equals_untiled() -> None:
    net = tiny()
    lr = torch.rand(2, 3, 11, 14)
    with torch.no_grad():
        full = net(lr, scale=2.7)
        for tile in (5, 9, 16):
            tiled = net(lr, scale=2.7, query_tile=tile)
            torch.testing.assert_close(tiled, full, atol=1e-5, rtol=1e-5)
    assert DECODER_HALO == 4


def test_scale_code_choice() -> None:
    lr = torch.rand(1, 3, 16, 16)
    r_net, cell_net = tiny(), tiny(scale_code="cell")
    cell_net.load_state_dict(r_net.state_dict())
    with torch.no_grad():
        a, b = r_net(lr, scale=2.0), cell_net(lr, scale=2.0)
        coord = make_coord((32, 32))[None]
        c = cell_net(lr, coord=coord, cell=2 / 32)
    assert not torch.allclose(a, b)  # r = 2 vs cell = 2 / 32 encode differently
    torch.testing.assert_close(b, c)
    with pytest.raises(ValueError, match="pass cell"):
        cell_net(lr, coord=coord)


def test_bad_inputs_are_named() -> None:
    net = tiny()
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        net(torch.rand(1, 3, 8, 8), scale=-2.0)
    with pytest.raises(ValueError, match="coord must be"):
        net(torch.rand(1, 3, 8, 8), coord=torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="pass the scale of each sample"):
        net(torch.rand(1, 3, 8, 8), coord=make_coord((8, 8))[None])
    with pytest.raises(ValueError, match="different scales need explicit coord"):
        net(torch.rand(2, 3, 8, 8), scale=torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="scale_code"):
        archs.create("eqsr", scale_code="scale")
    with pytest.raises(ValueError, match="overlap"):
        archs.create("eqsr", window_size=8, gamma=0.375)


def test_trains_with_gradients_everywhere() -> None:
    net = tiny().train()
    lr = torch.rand(2, 3, 16, 16)
    coord = make_coord((40, 40))[4:20, 8:24].expand(2, 16, 16, 2)
    out = net(lr, scale=torch.tensor([2.5, 2.5]), coord=coord)
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


# ------------------------------------------------------------------------------------------------ weights
def test_official_layout_loads_strictly_through_load_model() -> None:
    net = tiny()
    sd = net.state_dict()
    for key in (
        "layers.0.residual_group.mbconv.net2.weight",
        "layers.0.residual_group.mbconv.net2.to_style.weight",
        "layers.0.residual_group.mbconv.net3.0.gate.1.weight",
        "layers.1.residual_group.blocks.0.attn.relative_position_bias_table",
        "layers.1.residual_group.overlap_attn.relative_position_bias_table",
        "upsample.head.0.weight",
        "upsample.inv2.attn.seblock.2.weight",
        "upsample.inv1.ffn.CA.conv.weight",
        "upsample.inv1.norm1.body.weight",
        "upsample.to_rgb.1.weight",
        "upsample.rbf1.lengthscale",
        "relative_position_index_OCA",
    ):
        assert key in sd, key
    assert not any("conv_block" in k for k in sd)  # the HABs have no CAB branch
    loaded = load_model(sd)
    assert isinstance(loaded, EQSR) and loaded.depths == [2, 2] and loaded.window_size == 8
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr, scale=3.3), net(lr, scale=3.3))
    assert load_model(sd, scale_code="cell").scale_code == "cell"  # what the weights cannot tell
    for name in ("eqsr", "eqsr_4x4", "eqsr_6x6"):  # the registered variant of supplement Table 1 is recognised
        assert archs.detect_arch(archs.create(name).state_dict()) == (name, {})


def test_upscale_path_tiles_backbone_and_decoder() -> None:
    net = tiny()
    lr = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        full = upscale(net, lr, scale=2.5)
        dec_tiled = upscale(net, lr, scale=2.5, query_tile=17)
        both = upscale(net, lr, scale=2.5, tile=16, overlap=8, query_tile=17)
    assert full.shape == (1, 3, 60, 100)
    torch.testing.assert_close(dec_tiled, full, atol=1e-5, rtol=1e-5)
    assert both.shape == full.shape and (both - full).abs().mean() < 0.05
    with pytest.raises(ValueError, match="fixed x4 network"):
        upscale(archs.create("safmn", dim=8, n_blocks=1), lr, scale=2.5)
