"""Linear CKA (Kornblith et al., ICML 2019; unbiased HSIC of Song et al., JMLR 2012, as in Nguyen et al., ICLR 2021):
the estimator's properties, the feature hooks on real (tiny) networks and ``sresolve-analyze cka``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from sresolve import archs
from sresolve.analysis.cka import (
    CKAResult,
    cka,
    cka_matrix,
    example_indices,
    hsic,
    load_lr_images,
    main,
    random_copy,
    select_layers,
)

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
