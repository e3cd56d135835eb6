"""Linear CKA (Kornblith et al., ICML 2019; unbiased HSIC of Song et al., JMLR 2012, as in Nguyen et al., ICLR 2021):
the estimator's properties, the feature hooks on real (tiny) networks, minibatch CKA with images as examples (the
EQSR protocol, spec A10 / E8) and ``sresolve-analyze cka``."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sresolve import archs
from sresolve.analysis.cka import (
    CKAResult,
    MinibatchCKA,
    centred_gram,
    cka,
    cka_matrix,
    example_indices,
    grid_crops,
    hsic,
    hsic_gram,
    load_hr_crops,
    load_lr_images,
    main,
    minibatch_cka_matrix,
    random_copy,
    select_layers,
)
from sresolve.data.degradation import imresize

TINY_HAT = "hat,embed_dim=24,depths=[2],num_heads=[2],window_size=8,squeeze_factor=6"
TINY_SAFMN = "safmn,dim=16,n_blocks=3"


def _features(n: int = 400, d: int = 24, seed: int = 0) -> torch.Tensor:
    """Correlated (non-isotropic) features, so that the invariances below are not trivial."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)


def _gram_hsic(x: torch.Tensor, y: torch.Tensor, estimator: str) -> float:
    """Textbook n × n Gram-matrix forms: Gretton et al. (2005) tr(KHLH)/(n-1)², Song et al. (2012) Eq. (5)."""
    k, l_ = x @ x.T, y @ y.T
    n = k.shape[0]
    if estimator == "biased":
        h = torch.eye(n, dtype=k.dtype) - 1.0 / n
        return float(torch.trace(k @ h @ l_ @ h)) / (n - 1) ** 2
    k, l_ = k - torch.diag(torch.diag(k)), l_ - torch.diag(torch.diag(l_))
    one = torch.ones(n, dtype=k.dtype)
    value = (
        torch.trace(k @ l_)
        + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ l_ @ one)
    )
    return float(value) / (n * (n - 3))


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_feature_space_hsic_equals_gram_matrix_formula(estimator: str) -> None:
    x, y = _features(60, 7, seed=1) + 2.0, _features(60, 5, seed=2)  # not centred: the estimators centre themselves
    assert float(hsic(x, y, estimator)) == pytest.approx(_gram_hsic(x, y, estimator), rel=1e-9)


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_cka_of_a_representation_with_itself_is_one(estimator: str) -> None:
    x = _features()
    assert cka(x, x, estimator) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(estimator: str) -> None:
    x, y = _features(seed=0), _features(seed=3)
    y = y + 0.5 * x  # related, so the value is far from 0 and 1
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    ref = cka(x, y, estimator)
    assert 0.1 < ref < 0.99
    assert cka(x @ q, y, estimator) == pytest.approx(ref, abs=1e-10)
    assert cka(x, 7.5 * y @ q.T, estimator) == pytest.approx(ref, abs=1e-10)
    # ... but not to an anisotropic scaling (Kornblith et al. 2019, §3: CKA is not invertible-linear invariant)
    stretch = torch.ones(24, dtype=torch.float64)
    stretch[:3] = 20.0
    assert abs(cka(x * stretch, y, estimator) - ref) > 1e-3


def test_cka_symmetric() -> None:
    x, y = _features(seed=5), _features(300 + 100, 10, seed=6)
    for estimator in ("unbiased", "biased"):
        assert cka(x, y, estimator) == pytest.approx(cka(y, x, estimator), abs=1e-12)


def test_debiased_cka_of_independent_features_is_near_zero() -> None:
    """Independent Gaussian features, n not ≫ d: the unbiased estimator stays at 0 (± noise), the biased one does
    not (its bias is about sqrt(d1 d2) / n here), which is why the unbiased one is the default."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(500, 64, generator=g, dtype=torch.float64)
    y = torch.randn(500, 64, generator=g, dtype=torch.float64)
    assert abs(cka(x, y, "unbiased")) < 0.02
    assert cka(x, y, "biased") > 0.08


def test_estimator_input_checks() -> None:
    with pytest.raises(ValueError, match="same examples"):
        hsic(torch.zeros(5, 2), torch.zeros(6, 2))
    with pytest.raises(ValueError, match="at least 4"):
        hsic(torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="estimator"):
        hsic(torch.zeros(5, 2), torch.zeros(5, 2), "kernel")  # type: ignore[arg-type]


def test_layer_patterns_and_example_subset() -> None:
    hat = archs.create("hat", scale=4, embed_dim=24, depths=[2, 1], num_heads=[2, 2], window_size=8, squeeze_factor=6)
    safmn = archs.create("safmn", scale=4, dim=16, n_blocks=3)
    assert select_layers(hat) == ["layers.0", "layers.1"]  # default: the residual groups
    assert select_layers(safmn) == ["feats.0", "feats.1", "feats.2"]
    assert select_layers(hat, ["layers.0.residual_group.blocks.*"]) == [
        "layers.0.residual_group.blocks.0",
        "layers.0.residual_group.blocks.1",
    ]
    assert "feats.0.safm" in select_layers(safmn, ["feats.**"])
    assert select_layers(hat, ["layers.1.residual_group.*"]) == ["layers.1.residual_group.overlap_attn"]  # no lists
    with pytest.raises(ValueError, match="top-level modules"):
        select_layers(safmn, ["layers.*"])
    idx = example_indices([(10, 10), (4, 5)], 30, seed=0)
    assert [len(i) for i in idx] == [15, 15] and idx[0].tolist() == sorted(set(idx[0].tolist()))
    assert [i.tolist() for i in example_indices([(10, 10), (4, 5)], 30, seed=0)] == [i.tolist() for i in idx]
    assert len(example_indices([(2, 3)], 100)[0]) == 6  # fewer pixels than asked: all of them


def test_cka_matrix_on_real_networks() -> None:
    """Token features (HAT residual groups, reshaped with their x_size) and map features (SAFMN blocks) on the same
    pixels; a network against itself has a unit diagonal, against a re-initialised copy it does not."""
    torch.manual_seed(0)
    hat = archs.create("hat", scale=4, embed_dim=24, depths=[1, 1], num_heads=[2, 2], window_size=8, squeeze_factor=6)
    safmn = archs.create("safmn", scale=2, dim=16, n_blocks=2)
    images = load_lr_images("samples", downscale=4, crop=20, align=8, max_images=2)
    assert [tuple(i.shape) for i in images] == [(3, 16, 16), (3, 16, 16)]
    same = cka_matrix(hat, hat, images, max_examples=300)
    assert same.matrix.shape == (2, 2) and same.n_examples == 300
    assert same.diagonal() == pytest.approx([1.0, 1.0], abs=1e-9)
    assert torch.allclose(same.matrix, same.matrix.T, atol=1e-9)
    cross = cka_matrix(hat, safmn, images, max_examples=300, label_a="hat", label_b="safmn")
    assert cross.matrix.shape == (2, 2) and bool(((cross.matrix > -0.2) & (cross.matrix <= 1.0 + 1e-9)).all())
    rand = cka_matrix(safmn, random_copy(safmn, seed=1), images, max_examples=300)
    assert all(v < 0.999 for v in rand.diagonal())


def test_cli_writes_matrix_of_the_right_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cka"
    args = ["--crop", "16", "--max-images", "2", "--max-examples", "256", "--out", str(out)]
    assert main([f"hat={TINY_HAT}", f"safmn={TINY_SAFMN}", *args, "--layers-b", "feats.*", "--layers", "layers.*"]) == 0
    assert "linear CKA (unbiased HSIC)" in capsys.readouterr().out
    result = CKAResult.read_csv(out / "cka.csv")
    assert result.matrix.shape == (1, 3) and result.layers_b == ["feats.0", "feats.1", "feats.2"]
    assert (result.label_a, result.label_b) == ("hat", "safmn")
    assert (out / "cka.png").stat().st_size > 1000
    # the same spec at two scales (×4 vs ×2 networks on the same LR inputs), every HAB of the first group
    args += ["--stem", "scales", "--estimator", "biased", "--layers", "layers.*.residual_group.blocks.*"]
    assert main([TINY_SAFMN.replace("n_blocks=3", "n_blocks=2"), TINY_HAT, "--scale-b", "2", *args]) == 2  # no match
    assert main([TINY_HAT, TINY_HAT, "--scale-b", "2", *args]) == 0
    with (out / "scales.csv").open() as f:
        rows = [r for r in csv.reader(line for line in f if not line.startswith("#"))]
    assert rows[0][1:] == ["layers.0.residual_group.blocks.0", "layers.0.residual_group.blocks.1"]
    assert len(rows) == 3 and all(0.0 < float(v) <= 1.0 + 1e-9 for r in rows[1:] for v in r[1:])
    assert main(["nosuchmodel", TINY_HAT, *args]) == 2


# ------------------------------------------------------------------------------------------------------ minibatch CKA
def _batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [x[i : i + size] for i in range(0, len(x) - size + 1, size)]


def _minibatch_cka(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
    acc = MinibatchCKA(["x"], ["y"])
    for x, y in zip(xs, ys, strict=True):
        acc.update({"x": x}, {"y": y})
    return float(acc.compute().matrix[0, 0])


def test_gram_form_hsic_equals_textbook_formula() -> None:
    """Few examples, many features: ``hsic`` switches to the n × n Gram matrices; ``hsic_gram`` takes them directly
    (uncentred ones too, as its double-centring changes neither estimator)."""
    x, y = _features(6, 300, seed=8) + 1.5, _features(6, 200, seed=9)
    for estimator in ("unbiased", "biased"):
        ref = _gram_hsic(x - x.mean(0), y - y.mean(0), estimator)
        assert float(hsic(x, y, estimator)) == pytest.approx(ref, rel=1e-9)
        assert float(hsic_gram(x @ x.T, y @ y.T, estimator)) == pytest.approx(ref, rel=1e-9)
        assert float(hsic_gram(centred_gram(x), centred_gram(y), estimator)) == pytest.approx(ref, rel=1e-9)
    assert centred_gram(torch.ones(4, 2, 3, 5)).shape == (4, 4)  # maps flattened per example


def test_minibatch_cka_of_features_with_themselves_is_one() -> None:
    xs = [_features(4, 500, seed=s) for s in range(3)]  # n = 4 (the EQSR minibatch), p ≫ n
    assert _minibatch_cka(xs, xs) == pytest.approx(1.0, abs=1e-12)
    acc = MinibatchCKA(["a", "b"])  # layers of one model against themselves: feats_b defaults to feats_a
    for s in range(3):
        acc.update({"a": _features(4, 50, seed=10 + s), "b": _features(4, 70, seed=20 + s).reshape(4, 7, 10)})
    result = acc.compute()
    assert result.matrix.shape == (2, 2) and result.diagonal() == pytest.approx([1.0, 1.0], abs=1e-12)
    assert (result.n_batches, result.n_examples) == (3, 12)
    assert result.describe().startswith("minibatch linear CKA (unbiased HSIC averaged over 3 minibatches)")


def test_minibatch_cka_invariant_to_orthogonal_transforms_and_isotropic_scaling() -> None:
    """The Gram matrix of each minibatch is unchanged by an orthogonal transform of its features (a different one
    per minibatch is fine) and scaled by c² under an isotropic scaling by c (the same c for every minibatch)."""
    xs = _batches(_features(40, 12, seed=11), 4)
    ys = [y + 0.7 * x for x, y in zip(xs, _batches(_features(40, 12, seed=12), 4), strict=True)]
    ref = _minibatch_cka(xs, ys)
    assert 0.1 < ref < 0.99
    g = torch.Generator().manual_seed(13)
    qs = [torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))[0] for _ in xs]
    assert _minibatch_cka([x @ q for x, q in zip(xs, qs, strict=True)], ys) == pytest.approx(ref, abs=1e-10)
    assert _minibatch_cka(xs, [-3.5 * y @ qs[0] for y in ys]) == pytest.approx(ref, abs=1e-10)
    # a different scale per minibatch re-weights the minibatches' HSIC terms: not an invariance
    assert abs(_minibatch_cka([(1 + i) * x for i, x in enumerate(xs)], ys) - ref) > 1e-3


def test_single_minibatch_equals_full_data_unbiased_cka() -> None:
    for n, d1, d2 in ((40, 7, 5), (6, 300, 200)):  # feature-space and Gram-matrix forms of the full-data estimator
        x, y = _features(n, d1, seed=14), _features(n, d2, seed=15)
        y = torch.cat([y[:, : d2 // 2], x[:, : d2 - d2 // 2]], 1)  # partly shared, so far from 0 and 1
        ref = cka(x, y, "unbiased")
        assert 0.05 < abs(ref) < 0.99
        assert _minibatch_cka([x], [y]) == pytest.approx(ref, abs=1e-12)


def test_minibatch_cka_agrees_with_full_data_biased_cka_when_examples_outnumber_features() -> None:
    """X ~ N(0, I_4), Y = X + E with E ~ N(0, I_4): population linear CKA = ‖Σ_xy‖² / (‖Σ_xx‖ ‖Σ_yy‖) =
    4 / (2 · 4) = 0.5. With 8192 examples the full-data biased estimate is within its bias d/n ≈ 5e-4 plus sampling
    noise (≈ 0.007 s.d.) of it; the minibatch estimate over 512 minibatches of 16 converges to the same value (its
    difference from the full-data one has s.d. ≈ 0.004 over seeds, max 0.010 in 200 seeds), so both agree within
    0.02 while an unrelated Z (population CKA 0) scores ≥ 0.1 away."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8192, 4, generator=g, dtype=torch.float64)
    y = x + torch.randn(8192, 4, generator=g, dtype=torch.float64)
    z = torch.randn(8192, 4, generator=g, dtype=torch.float64)
    full_xy, full_xz = cka(x, y, "biased"), cka(x, z, "biased")
    mb_xy, mb_xz = _minibatch_cka(_batches(x, 16), _batches(y, 16)), _minibatch_cka(_batches(x, 16), _batches(z, 16))
    assert mb_xy == pytest.approx(full_xy, abs=0.02) and mb_xy == pytest.approx(0.5, abs=0.03)
    assert mb_xz == pytest.approx(full_xz, abs=0.02) and abs(mb_xz) < 0.03
    assert mb_xy - mb_xz > 0.1 and full_xy - full_xz > 0.1


def test_minibatch_cka_input_checks() -> None:
    acc = MinibatchCKA(["x"], ["y"])
    with pytest.raises(ValueError, match="no minibatch"):
        acc.compute()
    with pytest.raises(ValueError, match="at least 4 examples"):
        acc.update({"x": torch.randn(3, 10)}, {"y": torch.randn(3, 8)})
    with pytest.raises(ValueError, match="same n examples"):
        acc.update({"x": torch.randn(4, 10)}, {"y": torch.randn(5, 8)})
    with pytest.raises(ValueError, match="no features for layer 'y'"):
        acc.update({"x": torch.randn(4, 10)}, {"z": torch.randn(4, 8)})
    assert acc.n_batches == 0  # failed updates add nothing
    with pytest.raises(ValueError, match="without repeats"):
        MinibatchCKA(["x", "x"])


def test_grid_crops_and_hr_crops_of_the_samples() -> None:
    img = torch.arange(2 * 7 * 11, dtype=torch.float32).reshape(2, 7, 11)
    crops = grid_crops(img, 3)  # a 2 × 3 grid, centred: rows 0..5, columns 1..9
    assert len(crops) == 6 and torch.equal(crops[0], img[:, 0:3, 1:4]) and torch.equal(crops[5], img[:, 3:6, 7:10])
    assert grid_crops(img, 8) == []
    hr = load_hr_crops("samples", size=192)  # astronaut 512² → 2 × 2, chelsea 300×451 → 1 × 2, coffee 400×600 → 2 × 3
    assert len(hr) == 12 and {tuple(c.shape) for c in hr} == {(3, 192, 192)}
    assert float(min(c.min() for c in hr)) >= 0.0 and float(max(c.max() for c in hr)) <= 1.0


class _TokenConv(nn.Module):
    """A residual group with HAT's interface: ``(B, hw, C)`` tokens and the ``x_size`` of their map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        fmap = x.transpose(1, 2).reshape(b, c, *x_size)
        return x + F.gelu(self.conv(fmap)).flatten(2).transpose(1, 2)


class _ArbitraryScaleNet(nn.Module):
    """A tiny stand-in for EQSR: ``net(lr, scale=s)`` → ``(B, 3, round(h·s), round(w·s))``, groups at ``layers.N``;
    the body is modulated by the scale, as EQSR's is."""

    arbitrary_scale = True

    def __init__(self, dim: int = 8, n_layers: int = 3) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(3, dim, 3, 1, 1)
        self.scale_embed = nn.Linear(1, dim)
        self.layers = nn.ModuleList(_TokenConv(dim) for _ in range(n_layers))
        self.conv_last = nn.Conv2d(dim, 3, 3, 1, 1)
        self.scales: list[float] = []

    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        self.scales.append(scale)
        b, _, h, w = x.shape
        f = self.conv_first(x) * (1 + self.scale_embed(torch.tensor([[float(scale)]])).view(1, -1, 1, 1))
        t = f.flatten(2).transpose(1, 2)
        for layer in self.layers:
            t = layer(t, (h, w))
        f = t.transpose(1, 2).reshape(b, -1, h, w)
        return F.interpolate(self.conv_last(f), size=(round(h * scale), round(w * scale)), mode="bilinear")

    def layer_maps(self, x: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
        """The residual groups' outputs as ``(B, C, h, w)`` maps, computed without hooks (test reference)."""
        b, _, h, w = x.shape
        f = self.conv_first(x) * (1 + self.scale_embed(torch.tensor([[float(scale)]])).view(1, -1, 1, 1))
        t, out = f.flatten(2).transpose(1, 2), {}
        for i, layer in enumerate(self.layers):
            t = layer(t, (h, w))
            out[f"layers.{i}"] = t.transpose(1, 2).reshape(b, -1, h, w)
        return out


@pytest.fixture(scope="module")
def hr48() -> list[torch.Tensor]:
    return load_hr_crops("samples", size=48)[:12]  # astronaut: 10 × 10 grid, the first 12 crops


@torch.no_grad()
def test_minibatch_cka_matrix_on_an_arbitrary_scale_network(hr48: list[torch.Tensor]) -> None:
    """The EQSR protocol on the stand-in: the same HR 48 px crops, downscaled to LR 24 (×2) and 12 (×4) px, in
    three minibatches of 4; hooks on the token groups equal the maps computed by hand."""
    torch.manual_seed(0)
    net = _ArbitraryScaleNet()
    same = minibatch_cka_matrix(net, net, hr48, scale_a=2)  # scale_b defaults to scale_a
    assert same.matrix.shape == (3, 3) and same.layers_a == ["layers.0", "layers.1", "layers.2"]
    assert same.diagonal() == pytest.approx([1.0] * 3, abs=1e-9) and (same.n_batches, same.n_examples) == (3, 12)
    assert net.scales == [2.0] * 3  # one forward pass per minibatch when A and B coincide
    net.scales.clear()
    cross = minibatch_cka_matrix(net, net, hr48, scale_a=2, scale_b=4, seed=None)
    assert net.scales == [2.0, 4.0] * 3
    assert all(0.0 < v < 0.999 for v in cross.diagonal())
    assert cross.meta["crops"] == "HR 48×48 → LR 24×24 / 12×12 px"
    ref = MinibatchCKA(cross.layers_a, cross.layers_b)
    for k in range(3):
        hr = torch.stack(hr48[4 * k : 4 * k + 4])
        lr2, lr4 = imresize(hr, 1 / 2).clamp(0, 1), imresize(hr, 1 / 4).clamp(0, 1)
        ref.update(net.layer_maps(lr2, 2), net.layer_maps(lr4, 4))
    assert torch.allclose(cross.matrix, ref.compute().matrix, atol=1e-10)
    twin = minibatch_cka_matrix(net, copy.deepcopy(net), hr48, scale_a=2, scale_b=2)  # two objects, same weights
    assert twin.diagonal() == pytest.approx([1.0] * 3, abs=1e-9)
    odd = minibatch_cka_matrix(net, net, hr48, ["layers.2"], ["layers.0", "layers.2"], scale_a=2.5, scale_b=3)
    assert odd.matrix.shape == (1, 2) and odd.meta["crops"] == "HR 48×48 → LR 20×20 / 16×16 px"
    with pytest.raises(ValueError, match="give scale_a"):
        minibatch_cka_matrix(net, net, hr48)
    with pytest.raises(ValueError, match="at least 4 examples per minibatch"):
        minibatch_cka_matrix(net, net, hr48, scale_a=2, batch_size=3)
    with pytest.raises(ValueError, match="do not fill one minibatch"):
        minibatch_cka_matrix(net, net, hr48, scale_a=2, max_examples=3)


def test_minibatch_cka_matrix_between_fixed_scale_networks(hr48: list[torch.Tensor]) -> None:
    """×2 vs ×4 HAT (the HMA supplement's Fig. 1): each on the HR content downscaled by its own scale, token
    features of different lengths (LR 24 px padded to the window, 12 px) as rows of different widths."""
    torch.manual_seed(0)
    kw = {"embed_dim": 24, "depths": [1, 1], "num_heads": [2, 2], "window_size": 8, "squeeze_factor": 6}
    x2, x4 = archs.create("hat", scale=2, **kw), archs.create("hat", scale=4, **kw)
    result = minibatch_cka_matrix(x2, x4, hr48[:8], label_a="x2", label_b="x4")
    assert result.matrix.shape == (2, 2) and result.meta["scales"] == "x2 / x4"
    assert bool(((result.matrix > -0.5) & (result.matrix < 1.0)).all())
    assert "2 minibatches" in result.describe() and "x2 (2 layers) vs x4 (2 layers)" in result.describe()


def _standin_builder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the model spec ``standin`` build a fresh :class:`_ArbitraryScaleNet`; returns the build counter."""
    import sresolve.analysis.models as models

    real, built = models.build_model, []

    def build_model(spec: str, scale: int = 4) -> tuple[str, nn.Module]:
        if spec != "standin":
            return real(spec, scale=scale)
        built.append(scale)
        torch.manual_seed(len(built))
        return "standin", _ArbitraryScaleNet()

    monkeypatch.setattr(models, "build_model", build_model)
    return built


def test_cli_images_mode_writes_png_csv_and_npz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cka"
    common = ["--examples", "images", "--hr-crop", "48", "--max-examples", "8", "--out", str(out)]
    # one fixed-scale config spec at ×2 and (rebuilt) at ×4
    assert main([f"safmn={TINY_SAFMN}", "--scale", "2", "--scale-b", "4", *common]) == 0
    text = capsys.readouterr().out
    assert "minibatch linear CKA (unbiased HSIC averaged over 2 minibatches)" in text and "LR 24×24 / 12×12" in text
    saved = CKAResult.load_npz(out / "cka.npz")
    with np.load(out / "cka.npz", allow_pickle=False) as z:
        assert z["matrix"].shape == (3, 3) and z["matrix"].dtype == np.float64
        assert list(z["layers_b"]) == ["feats.0", "feats.1", "feats.2"]
    assert (saved.label_a, saved.label_b) == ("safmn x2", "safmn x4")
    assert torch.allclose(CKAResult.read_csv(out / "cka.csv").matrix, saved.matrix, atol=1e-6)
    assert (out / "cka.png").stat().st_size > 1000
    # one arbitrary-scale network with itself at two scales: the same spec twice builds it once
    built = _standin_builder(monkeypatch)
    args = [*common, "--stem", "eq"]
    assert main(["standin", "standin", "--scale-a", "2", "--scale-b", "4", *args]) == 0
    assert built == [2]
    diag = CKAResult.load_npz(out / "eq.npz").diagonal()
    assert len(diag) == 3 and all(0.9 < v < 1 - 1e-4 for v in diag)  # same content at ×2 and ×4: close, not 1
    assert main(["standin", "--scale-a", "3", *args, "--layers", "layers.1"]) == 0  # B = A at the same scale
    assert CKAResult.load_npz(out / "eq.npz").matrix.flatten().tolist() == pytest.approx([1.0], abs=1e-9)
    capsys.readouterr()
    assert main(["standin", "--scale-a", "3", "--out", str(out)]) == 2  # pixel mode cannot query a scale
    assert "arbitrary-scale" in capsys.readouterr().err
    assert main([TINY_SAFMN, "--scale-a", "2.5", *args]) == 2  # a fixed ×4 network cannot run at 2.5
    assert "fixed x4 network" in capsys.readouterr().err
