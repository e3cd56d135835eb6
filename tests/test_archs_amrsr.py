"""AMRSR generator and discriminator (spec archs_eqsr_amrsr.md B6, B7) and the SRNTT/AMRSR losses (B8, C9)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sresolve.archs.amrsr import AMRSRGenerator, SRNTTDiscriminator, zero_references
from sresolve.archs.vgg import VGG19Features
from sresolve.models.losses import (
    GramTextureLoss,
    PerceptualLoss,
    bce_d_loss,
    bce_g_loss,
    gradient_penalty,
    srntt_texture_gate,
    srntt_texture_gates,
    wgan_g_loss,
    wgan_gp_d_loss,
)

SMALL = {"n_feats": 16, "n_blocks": (2, 1, 1), "n_feat_blocks": 2}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(c_in: int, c_out: int, k: int = 3, bias: bool = True) -> int:
    """Parameters of a k×k convolution."""
    return c_in * c_out * k * k + (c_out if bias else 0)


def refs(b: int, h: int, w: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(b, 3, h, w, generator=g)
    o3 = torch.rand(b, 256, h, w, generator=g)
    o2 = torch.rand(b, 128, 2 * h, 2 * w, generator=g)
    o1 = torch.rand(b, 64, 4 * h, 4 * w, generator=g)
    weight = torch.rand(b, 1, h, w, generator=g)
    return lr, o3, o2, o1, weight


# ------------------------------------------------------------------------------------------------ generator (B6)
@pytest.mark.parametrize(("h", "w"), [(10, 14), (12, 12)])
@pytest.mark.parametrize("global_residual", [False, True])
def test_generator_shapes_small(h: int, w: int, global_residual: bool) -> None:
    torch.manual_seed(0)
    g = AMRSRGenerator(**SMALL, global_residual=global_residual).eval()
    with torch.no_grad():
        out = g(*refs(2, h, w))
    assert out.shape == (2, 3, 4 * h, 4 * w)
    assert torch.isfinite(out).all()


def test_generator_default_shape_and_param_count() -> None:
    torch.manual_seed(0)
    g = AMRSRGenerator().eval()
    with torch.no_grad():
        out = g(*refs(1, 8, 8))
    assert out.shape == (1, 3, 32, 32)

    # Layer table of spec B6 with n_feats = 64, n_feat_blocks = 16, n_blocks = (16, 8, 4):
    res_block = 2 * conv(64, 64)  # Conv, ReLU, Conv = 2 · (64·64·9 + 64) = 73,856
    content = conv(3, 64) + 16 * res_block  # id 0: 1,792 + 1,181,696
    level3 = conv(64 + 256, 64) + 16 * res_block  # ids 2-18: 184,384 + 1,181,696
    level2 = conv(64, 256) + conv(64 + 128, 64) + 8 * res_block  # ids 20-30: 147,712 + 110,656 + 590,848
    level1 = conv(64, 256) + conv(64 + 64, 64) + 4 * res_block  # ids 32-38: 147,712 + 73,792 + 295,424
    tail = conv(64, 32) + conv(32, 3)  # C7: 18,464 + 867
    gates = 3 + 3  # a_v, b_v for v = 3, 2, 1
    expected = content + level3 + level2 + level1 + tail + gates
    assert expected == 3_935_049
    assert n_params(g) == expected
    assert n_params(AMRSRGenerator(use_weight_map=False)) == expected - gates


def test_generator_submodule_names() -> None:
    g = AMRSRGenerator(**SMALL)
    names = {n for n, _ in g.named_children()}
    assert {"content", "fuse3", "body3", "up2", "fuse2", "body2", "up1", "fuse1", "body1", "tail"} <= names
    assert dict(g.named_parameters()).keys() >= {"gate_a", "gate_b"}
    assert torch.equal(g.gate_a.data, torch.ones(3)) and torch.equal(g.gate_b.data, torch.zeros(3))
    assert len(g.body3) == 2 and len(g.body2) == 1 and len(g.body1) == 1 and len(g.content.body) == 2


def test_generator_gating() -> None:
    torch.manual_seed(0)
    g = AMRSRGenerator(**SMALL).eval()
    lr, o3, o2, o1, _ = refs(1, 6, 5)
    ones, zeros = torch.ones(1, 1, 6, 5), torch.zeros(1, 1, 6, 5)
    with torch.no_grad():
        out_ones = g(lr, o3, o2, o1, ones)
        out_zeros = g(lr, o3, o2, o1, zeros)
        out_none = g(lr, o3, o2, o1, None)
        # a=1, b=0: constant W upsampled by bicubic stays constant, so the gate is sigmoid(1) / sigmoid(0)
        assert torch.allclose(g.gate(ones, 2, (24, 20)), torch.full((1, 1, 24, 20), torch.sigmoid(torch.tensor(1.0))))
        assert torch.allclose(g.gate(zeros, 1, (12, 10)), torch.full((1, 1, 12, 10), 0.5))
    assert (out_ones - out_zeros).abs().max() > 1e-4

    with torch.no_grad():
        g.gate_a.zero_()
        g.gate_b.fill_(30.0)  # sigmoid(30) = 1 - 9e-14
        out_open = g(lr, o3, o2, o1, torch.rand(1, 1, 6, 5))
    assert torch.allclose(out_open, out_none, atol=1e-6)

    # gradients reach the gate scalars
    g.train()
    g(lr, o3, o2, o1, torch.rand(1, 1, 6, 5)).mean().backward()
    assert g.gate_a.grad is not None and g.gate_b.grad is not None


def test_generator_without_weight_map_ignores_weight() -> None:
    torch.manual_seed(0)
    g = AMRSRGenerator(**SMALL, use_weight_map=False).eval()
    lr, o3, o2, o1, w = refs(1, 4, 4)
    assert not hasattr(g, "gate_a")
    with torch.no_grad():
        assert torch.equal(g(lr, o3, o2, o1, w), g(lr, o3, o2, o1, None))


def test_generator_empty_references() -> None:
    torch.manual_seed(0)
    g = AMRSRGenerator(**SMALL).eval()
    lr = torch.rand(2, 3, 7, 9)
    o3, o2, o1, w = zero_references(lr)
    assert (o3.shape, o2.shape, o1.shape, w.shape) == ((2, 256, 7, 9), (2, 128, 14, 18), (2, 64, 28, 36), (2, 1, 7, 9))
    assert not any(t.any() for t in (o3, o2, o1, w))
    with torch.no_grad():
        out = g(lr, o3, o2, o1, w)
        assert out.shape == (2, 3, 28, 36)
        # zero maps make the gate irrelevant
        assert torch.equal(out, g(lr, o3, o2, o1, None))


def test_generator_global_residual_adds_bicubic() -> None:
    g = AMRSRGenerator(**SMALL, global_residual=True).eval()
    nn.init.zeros_(g.tail[2].weight)
    nn.init.zeros_(g.tail[2].bias)
    lr, o3, o2, o1, w = refs(1, 5, 6)
    with torch.no_grad():
        out = g(lr, o3, o2, o1, w)
    assert torch.allclose(out, F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("o3", r"o3 must be B×256×h×w = \(1, 256, 16, 16\)"),
        ("o2", r"o2 must be B×128×2h×2w = \(1, 128, 32, 32\)"),
        ("o1", r"o1 must be B×64×4h×4w = \(1, 64, 64, 64\)"),
        ("weight", r"weight must be B×1×h×w = \(1, 1, 16, 16\)"),
    ],
)
def test_generator_shape_errors_name_the_tensor(name: str, pattern: str) -> None:
    g = AMRSRGenerator(**SMALL)
    args = dict(zip(("lr", "o3", "o2", "o1", "weight"), refs(1, 16, 16), strict=True))
    args[name] = args[name][..., :-2, :-2]
    with pytest.raises(ValueError, match=pattern) as exc:
        g(**args)
    assert str(exc.value).endswith(f"got {tuple(args[name].shape)}")


def test_generator_lr_and_config_errors() -> None:
    g = AMRSRGenerator(**SMALL)
    _, o3, o2, o1, w = refs(1, 4, 4)
    with pytest.raises(ValueError, match="lr must be B×3×h×w"):
        g(torch.rand(1, 1, 4, 4), o3, o2, o1, w)
    with pytest.raises(ValueError, match="n_blocks"):
        AMRSRGenerator(n_blocks=(1, 1))


def test_network_subvector_division_option() -> None:
    """Supp. Table 4: ``amrsr(subvector_division=...)`` (config key ``model.subvector_division``) reaches the matcher,
    the paper's "input only" by default (as in conf/model/amrsr.yaml); a wrong value names the allowed ones."""
    import re

    from omegaconf import OmegaConf

    from sresolve.archs.amrsr import amrsr
    from sresolve.config import conf_dir

    tiny = {**SMALL, "vgg_weights": "random"}
    assert amrsr(**tiny).matcher.subvector_division == "input"
    assert OmegaConf.load(conf_dir() / "model" / "amrsr.yaml").subvector_division == "input"
    net = amrsr(**tiny, subvector_division="refs", n_subvectors=8)
    assert (net.matcher.input_groups, net.matcher.ref_groups) == (1, 8)
    allowed = "['input', 'none', 'refs', 'both']"
    with pytest.raises(ValueError, match=re.escape(f"subvector_division='all': allowed {allowed}")):
        amrsr(**tiny, subvector_division="all")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ discriminator (B7)
CHANNELS = (32, 64, 128, 256, 512)


def test_discriminator_shape_and_param_count() -> None:
    torch.manual_seed(0)
    d = SRNTTDiscriminator()
    assert d(torch.rand(2, 3, 160, 160)).shape == (2, 1)

    convs, c_in = 0, 3
    for c in CHANNELS:  # Conv3×3 s1 (c_in → c), Conv3×3 s2 (c → c)
        convs += conv(c_in, c) + conv(c, c)
        c_in = c
    assert convs == 4_712_224
    fc = (5 * 5 * 512) * 1024 + 1024 + 1024 * 1 + 1  # 160 / 32 = 5
    assert n_params(d) == convs + fc == 17_821_473

    # BN variant: convs lose their bias, each gains a BN (gamma, beta)
    d_bn = SRNTTDiscriminator(norm="batch")
    bn = sum(2 * (2 * c) for c in CHANNELS)
    no_bias = sum(2 * c for c in CHANNELS)
    assert n_params(d_bn) == convs - no_bias + bn + fc == 17_823_457


def test_discriminator_norm_option_and_init() -> None:
    torch.manual_seed(0)
    d = SRNTTDiscriminator(patch_size=64, channels=(8, 16, 16, 32, 32))
    d_bn = SRNTTDiscriminator(patch_size=64, channels=(8, 16, 16, 32, 32), norm="batch")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    bns = [m for m in d_bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 10
    assert all(m.bias is None for m in d_bn.modules() if isinstance(m, nn.Conv2d))
    assert d_bn(torch.rand(2, 3, 64, 64)).shape == (2, 1)
    gammas = torch.cat([m.weight.detach() for m in bns])
    assert abs(gammas.mean().item() - 1.0) < 0.01 and 0.01 < gammas.std().item() < 0.03
    big = SRNTTDiscriminator().classifier[1].weight  # 1024 × 12,800 ~ N(0, 0.02)
    assert abs(big.std().item() - 0.02) < 2e-4 and abs(big.mean().item()) < 2e-4


def test_discriminator_size_errors() -> None:
    d = SRNTTDiscriminator(patch_size=64, channels=(4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"B×3×64×64 \(patch_size=64\), got \(1, 3, 96, 96\)"):
        d(torch.rand(1, 3, 96, 96))
    with pytest.raises(ValueError, match=r"patch_size=150 must be a positive multiple of 32"):
        SRNTTDiscriminator(patch_size=150)
    with pytest.raises(ValueError, match="norm"):
        SRNTTDiscriminator(norm="instance")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ texture loss (B8)
def _tiny_feats(seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "relu3_1": torch.rand(2, 5, 3, 4, generator=g),
        "relu2_1": torch.rand(2, 3, 6, 8, generator=g),
        "relu1_1": torch.rand(2, 2, 12, 16, generator=g),
    }


def _gram_loss_loop(sr: dict[str, Tensor], o: dict[str, Tensor], gate: dict[str, Tensor] | None) -> Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for v in ("relu3_1", "relu2_1", "relu1_1"):
        f, t = sr[v].double(), o[v].double()
        if gate is not None:
            f, t = f * gate[v].double(), t * gate[v].double()
        b, c, h, w = f.shape
        acc = torch.zeros((), dtype=torch.float64)
        for n in range(b):
            for i in range(c):
                for j in range(c):
                    gi = (f[n, i] * f[n, j]).sum() - (t[n, i] * t[n, j]).sum()
                    acc += gi**2
        total += acc / (b * c * c) / (4 * (h * w * c) ** 2)
    return total / 3


def test_gram_texture_loss() -> None:
    loss = GramTextureLoss()
    sr, o = _tiny_feats(0), _tiny_feats(1)
    assert loss(sr, sr, None).item() == 0.0
    assert abs(loss(sr, o, None).item() - _gram_loss_loop(sr, o, None).item()) < 1e-6 * _gram_loss_loop(sr, o, None)
    # einsum form of one level
    f, t = sr["relu2_1"], o["relu2_1"]
    gf = torch.einsum("bchw,bdhw->bcd", f, f)
    gt = torch.einsum("bchw,bdhw->bcd", t, t)
    direct = ((gf - gt) ** 2).mean() / (4 * (6 * 8 * 3) ** 2)
    assert torch.allclose(loss.level_losses(sr, o)["relu2_1"], direct, rtol=1e-6)

    w = torch.rand(2, 1, 3, 4, generator=torch.Generator().manual_seed(2))
    gate = srntt_texture_gates(w)
    ref = _gram_loss_loop(sr, o, gate)
    assert abs(loss(sr, o, gate).item() - ref.item()) < 1e-6 * ref.item()
    assert loss(sr, sr, gate).item() == 0.0


def test_srntt_texture_gate() -> None:
    w = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    s = srntt_texture_gate(w, 1)
    assert torch.allclose(s[0, 0, 0], torch.sigmoid(torch.tensor([0.65, -19.35])))
    ones = torch.ones(1, 1, 3, 2)
    assert srntt_texture_gate(ones, 4).shape == (1, 1, 12, 8)
    assert torch.allclose(srntt_texture_gate(ones, 2), torch.full((1, 1, 6, 4), torch.sigmoid(torch.tensor(-19.35))))
    assert {k: v.shape[-1] for k, v in srntt_texture_gates(ones).items()} == {"relu3_1": 2, "relu2_1": 4, "relu1_1": 8}


# ------------------------------------------------------------------------------------------------ adversarial (B8, C9)
def test_wgan_gp_linear_critic() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    d = nn.Sequential(nn.Flatten(), nn.Linear(18, 1))
    # ∇_x D = w everywhere, so GP = (‖w‖ − 1)²
    w = d[1].weight
    gp = gradient_penalty(d, real, fake)
    assert torch.allclose(gp, (w.norm() - 1) ** 2, atol=1e-6)
    with torch.no_grad():
        w /= w.norm()
    assert gradient_penalty(d, real, fake).item() < 1e-10

    # create_graph: D's gradient contains the penalty's: ∂/∂w [λ(‖w‖−1)²] = 2λ(‖w‖−1)·w/‖w‖
    with torch.no_grad():
        w.mul_(3.0)
    loss, parts = wgan_gp_d_loss(d, real, fake, gp_weight=10.0)
    loss.backward()
    wd = w.detach()
    expected = (fake - real).flatten(1).mean(0) + 2 * 10.0 * (wd.norm() - 1) * wd / wd.norm()
    assert torch.allclose(w.grad, expected.view(1, -1), atol=1e-5)
    assert torch.allclose(parts["gp"], (wd.norm() - 1) ** 2)
    assert torch.allclose(parts["wasserstein"], parts["d_real"] - parts["d_fake"])
    assert torch.allclose(loss.detach(), parts["d_fake"] - parts["d_real"] + 10.0 * parts["gp"])


def test_wgan_gp_matches_manual_autograd() -> None:
    torch.manual_seed(0)
    d = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(3, 3, 2, 2), torch.randn(3, 3, 2, 2)
    torch.manual_seed(123)
    alpha = torch.rand(3)
    x_hat = (alpha.view(-1, 1, 1, 1) * real + (1 - alpha.view(-1, 1, 1, 1)) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x_hat).sum(), x_hat)
    manual = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    assert torch.allclose(gradient_penalty(d, real, fake, alpha=alpha), manual, atol=1e-7)
    torch.manual_seed(123)  # the default draw is torch.rand(B) on real's device
    assert torch.allclose(gradient_penalty(d, real, fake), manual, atol=1e-7)
    gen = torch.Generator().manual_seed(123)
    assert torch.allclose(gradient_penalty(d, real, fake, generator=gen), manual, atol=1e-7)


def test_wgan_gp_with_discriminator_backward() -> None:
    torch.manual_seed(0)
    d = SRNTTDiscriminator(patch_size=32, channels=(4, 4, 8, 8, 8))
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32, requires_grad=True)
    loss, parts = wgan_gp_d_loss(d, real, fake)
    loss.backward()
    assert fake.grad is None  # the D step never reaches G
    assert all(p.grad is not None for p in d.parameters())
    assert set(parts) == {"d_real", "d_fake", "wasserstein", "gp"}


def test_generator_and_bce_losses() -> None:
    d_fake = torch.tensor([[1.0], [-3.0]])
    assert wgan_g_loss(d_fake).item() == pytest.approx(1.0)
    zero = torch.zeros(4, 1)
    loss, parts = bce_d_loss(zero, zero)
    log2 = torch.log(torch.tensor(2.0)).item()
    assert loss.item() == pytest.approx(2 * log2) and parts["real"].item() == pytest.approx(log2)
    logits = torch.tensor([[2.0], [-1.0]])
    assert bce_g_loss(logits).item() == pytest.approx(-F.logsigmoid(logits).mean().item())
    loss, parts = bce_d_loss(logits, -logits)
    assert parts["fake"].item() == pytest.approx(-F.logsigmoid(logits).mean().item())


# ------------------------------------------------------------------------------------------------ perceptual (B8)
def test_perceptual_loss_random_vgg() -> None:
    vgg = VGG19Features(layers=("relu1_1", "relu5_1"), weights="random")  # no weights download exists here
    loss = PerceptualLoss(vgg)
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    assert loss(hr, hr).item() == 0.0
    sr = (hr + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).requires_grad_(True)
    value = loss(sr, hr)
    assert value.item() > 0
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    # precomputed SR features give the same value
    with torch.no_grad():
        assert torch.equal(loss(sr, hr, sr_feats=vgg(sr)), loss(sr, hr))
    with pytest.raises(ValueError, match="relu4_1"):
        PerceptualLoss(vgg, layer="relu4_1")
