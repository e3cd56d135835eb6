"""LAM (Gu & Dong, CVPR 2021): path, detector, attribution on models with known answers, DI, CLI and notebook."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from sresolve.analysis import lam as L


class Nearest(nn.Module):
    """Linear SR model with known gradients: nearest-neighbour upscaling (HR pixel (y, x) copies LR (y//s, x//s))."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)


class TwoConv(nn.Module):
    """Receptive field 5 x 5 on the LR: conv3x3 - tanh - conv3x3 - pixel shuffle (HR (y, x) <- LR (y//s, x//s))."""

    def __init__(self, scale: int, width: int = 6) -> None:
        super().__init__()
        self.scale = scale
        gen = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(3, width, 3, padding=1)
        self.c2 = nn.Conv2d(width, 3 * scale * scale, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.c2(torch.tanh(self.c1(x))))


def _tiny_safmn(scale: int = 4) -> nn.Module:
    from sresolve import archs

    torch.manual_seed(0)
    return archs.create("safmn", scale=scale, dim=8, n_blocks=1).eval()


def _photo(h: int, w: int) -> Tensor:
    from sresolve.data.samples import load_sample

    img = torch.from_numpy(load_sample("astronaut")).permute(2, 0, 1).float() / 255
    return img[:, 100 : 100 + h, 200 : 200 + w].contiguous()


# --------------------------------------------------------------------------------------------------- path, detector
def test_kernel_blur_and_path_endpoints() -> None:
    from scipy import ndimage

    k = L.gaussian_kernel(9, 1.2)
    assert k.shape == (9, 9) and float(k.sum()) == pytest.approx(1.0, abs=1e-15)
    assert torch.equal(k, k.flip(0)) and torch.equal(k, k.T) and int(k.argmax()) == 40
    assert torch.equal(L.gaussian_kernel(5, 0.0), torch.eye(5, dtype=torch.float64)[2].outer(torch.eye(5)[2].double()))
    with pytest.raises(ValueError, match="odd"):
        L.gaussian_kernel(8, 1.2)
    x = torch.rand(1, 3, 13, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # cv2.filter2D (the release) filters every channel with BORDER_REFLECT_101 = scipy's 'mirror'
    ref = np.stack([ndimage.correlate(x[0, c].numpy(), k.numpy(), mode="mirror") for c in range(3)])
    assert np.abs(L.blur(x, k)[0].numpy() - ref).max() < 1e-12
    path = L.blur_path(x, steps=5, sigma=1.2)
    assert path.shape == (6, 3, 13, 17)
    assert torch.equal(path[0], L.blur(x, k)[0]) and torch.equal(path[-1], x[0])
    assert torch.allclose(path[2], L.blur(x, L.gaussian_kernel(9, 1.2 * 0.6))[0])
    with pytest.raises(ValueError, match="larger than the kernel radius"):
        L.blur(torch.rand(1, 3, 4, 8), k)


def test_gradient_detector_is_the_release_attr_grad() -> None:
    sr = torch.rand(2, 3, 20, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    h_grad = (sr[:, :, :-1, :] - sr[:, :, 1:, :]) ** 2
    w_grad = (sr[:, :, :, :-1] - sr[:, :, :, 1:]) ** 2
    grad = torch.sqrt(h_grad[:, :, :, :-1] + w_grad[:, :, :-1, :])
    for box in [(3, 5, 8, 8), (12, 16, 8, 8), (0, 0, 20, 24)]:  # the last two touch the bottom/right border
        top, left, h, w = box
        expected = grad[:, :, top : top + h, left : left + w].sum(dim=(1, 2, 3))
        assert torch.allclose(L.gradient_detector(sr, box), expected, rtol=1e-12)
    flat = torch.zeros(1, 3, 8, 8, requires_grad=True)  # sqrt at 0: gradient 0, never NaN
    (g,) = torch.autograd.grad(L.gradient_detector(flat, (0, 0, 8, 8)).sum(), flat)
    assert torch.equal(g, torch.zeros_like(g))


# ------------------------------------------------------------------------------------------ attribution, known answers
def test_linear_model_attribution_equals_analytic_value() -> None:
    """Nearest x2 upscaling of an image that varies along columns only, increasing: the detector in the box is the sum
    of the (positive) jumps at the block edges, a *linear* function of the LR pixels along the whole path, with
    gradient g = +1 (right of a jump) / -1 (left of it) per box pixel. So LAM = g * (I - I') exactly, and its sum
    is D(F(I)) - D(F(I')) exactly (no Riemann error)."""
    s, h, w = 2, 12, 24
    col = torch.arange(w, dtype=torch.float64)
    ramp = 0.05 + 0.0015 * col**2  # convex: the blur lifts it by a constant inside, so I - I' != 0
    lr = (torch.tensor([1.0, 0.8, 0.6], dtype=torch.float64)[:, None, None] * ramp).expand(3, h, w).contiguous()
    box = (6, 18, 8, 12)  # HR rows 6..13, columns 18..29 -> LR columns 9..15, far (> 4 px) from the borders
    res = L.lam(Nearest(s), lr.float(), box, steps=7, batch=3, progress=False)

    g = np.zeros((h, w))
    top, left, bh, bw = box
    for y in range(top, top + bh):
        for x in range(left, left + bw):
            if (x + 1) // s != x // s:  # a jump u[y, x+1] - u[y, x] = lr[:, y//s, (x+1)//s] - lr[:, y//s, x//s] > 0
                g[y // s, (x + 1) // s] += 1.0
                g[y // s, x // s] -= 1.0
    baseline = L.blur(lr.float().double()[None], L.gaussian_kernel(9, 1.2))[0]
    expected = torch.from_numpy(g)[None] * (lr.float().double() - baseline)
    assert torch.allclose(res.attribution, expected, rtol=1e-5, atol=1e-9)
    # signs: the jumps inside the box cancel (LR columns 10..14 get +1 and -1); column 9 has g = -1, column 15
    # g = +1, and I - I' < 0 (the blur lifts a convex ramp): LAM > 0 at column 9, < 0 at column 15, 0 elsewhere
    a = res.attribution
    assert a[:, 3:7, 9].min() > 0 and a[:, 3:7, 15].max() < 0
    assert a[:, 3:7, 10:15].abs().max() < 1e-6 * a.abs().max()  # float32 rounding of d|u|/du = +-1 only
    outside = torch.ones(12, 24, dtype=torch.bool)
    outside[3:7, 9:16] = False
    assert torch.count_nonzero(a[:, outside]) == 0
    assert res.completeness_gap == pytest.approx(0.0, abs=1e-5)
    assert res.detector == pytest.approx(float((torch.from_numpy(g)[None] * lr.float().double()).sum()), rel=1e-5)


def test_linear_detector_gives_counts_times_difference() -> None:
    """D = sum of the SR pixels in the box (linear), F = nearest x4: LAM_i = (number of box pixels copying LR pixel i)
    * (I - I')_i, positive at a bright spot, negative around it, summing to D(F(I)) - D(F(I'))."""
    lr = torch.full((3, 10, 10), 0.2)
    lr[:, 5, 5] = 0.9

    def box_sum(sr: Tensor, box: L.Box) -> Tensor:
        t, l, h, w = box
        return sr[:, :, t : t + h, l : l + w].sum(dim=(1, 2, 3))

    box = (18, 18, 6, 6)  # HR rows/cols 18..23 -> LR 4 (2 px), 5 (4 px)
    res = L.lam(Nearest(4), lr, box, steps=3, detector=box_sum, progress=False)
    counts = torch.zeros(10, 10, dtype=torch.float64)
    counts[4:6, 4:6] = torch.tensor([[2 * 2, 2 * 4], [4 * 2, 4 * 4]], dtype=torch.float64)
    diff = lr.double() - L.blur(lr.double()[None], L.gaussian_kernel(9, 1.2))[0]
    assert torch.allclose(res.attribution, counts * diff, rtol=1e-5, atol=1e-9)
    assert res.attribution[:, 5, 5].min() > 0 and res.attribution[:, 4, 4].max() < 0
    assert res.completeness_gap == pytest.approx(0.0, abs=1e-4)


def test_receptive_field_limited_cnn_has_zero_attribution_outside() -> None:
    s = 3
    net = TwoConv(s)
    lr = torch.rand(3, 20, 22, generator=torch.Generator().manual_seed(3))
    box = (21, 27, 7, 5)  # HR rows 21..27 (+1 for the forward differences), columns 27..31 (+1)
    res = L.lam(net, lr, box, steps=6, batch=4, progress=False)
    rows = range(21 // s - 2, (21 + 7) // s + 2 + 1)  # LR rows under the box, +-2 (two 3x3 convs)
    cols = range(27 // s - 2, (27 + 5) // s + 2 + 1)
    inside = torch.zeros(20, 22, dtype=torch.bool)
    inside[rows.start : rows.stop, cols.start : cols.stop] = True
    assert torch.count_nonzero(res.attribution[:, ~inside]) == 0  # exactly zero outside the receptive field
    assert torch.count_nonzero(res.attribution[:, inside]) > 0.9 * 3 * int(inside.sum())
    assert float(res.saliency[~inside].max()) == 0.0 and float(res.saliency.max()) == 1.0
    assert res.lr_box == (7, 9, 3, 2)


def test_completeness_error_shrinks_with_steps() -> None:
    net = _tiny_safmn()
    lr = _photo(16, 16)
    box = (8, 24, 16, 16)
    gaps = [abs(L.lam(net, lr, box, steps=m, batch=16, progress=False).completeness_gap) for m in (4, 16)]
    res = L.lam(net, lr, box, steps=64, batch=32, progress=False)
    delta = res.detector - res.detector_baseline
    assert gaps[0] > gaps[1] > abs(res.completeness_gap)  # O(1/m) (not monotone step by step: |.| has kinks)
    assert abs(res.completeness_gap) < 0.02 * abs(delta) < gaps[0]
    assert float(res.path_detector[-1]) == pytest.approx(res.detector, rel=1e-5)
    assert res.sr.shape == (3, 64, 64) and res.scale == 4 and 0 <= res.di <= 100


def test_deterministic_batch_independent_and_mode_restored() -> None:
    net = _tiny_safmn().train()
    lr = _photo(16, 16)
    a = L.lam(net, lr, (8, 24, 16, 16), steps=6, batch=4, progress=False)
    b = L.lam(net, lr, (8, 24, 16, 16), steps=6, batch=4, progress=False)
    c = L.lam(net, lr, (8, 24, 16, 16), steps=6, batch=1, progress=False)
    assert net.training and all(q.requires_grad for q in net.parameters())  # eval / frozen inside, restored after
    assert torch.equal(a.attribution, b.attribution) and a.di == b.di
    assert torch.allclose(a.attribution, c.attribution, rtol=1e-4, atol=1e-6 * float(a.attribution.abs().max()))


def test_box_errors() -> None:
    net = Nearest(4)
    lr = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match=r"outside the 32x32 HR image"):
        L.lam(net, lr, (20, 20, 16, 16), steps=2, progress=False)
    with pytest.raises(ValueError, match="four integers"):
        L.check_box((1, 2, 3), (32, 32))
    with pytest.raises(ValueError, match=">= 1"):
        L.check_box((0, 0, 0, 4), (32, 32))
    assert L.parse_box("3,4") == (3, 4, 16, 16) and L.parse_box("3, 4, 5, 6") == (3, 4, 5, 6)
    with pytest.raises(ValueError, match="integers"):
        L.parse_box("a,b")


# ------------------------------------------------------------------------------------------------------ Gini and DI
def test_gini_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        g = rng.random(n) ** 3
        pairwise = np.abs(g[:, None] - g[None, :]).sum() / (2 * n * n * g.mean())
        assert L.gini(g, eps=0.0) == pytest.approx(pairwise, rel=1e-12, abs=1e-15)
    assert L.gini(np.array([-1.0, 0.0, 1.0]), eps=0.0) == pytest.approx(L.gini(np.array([0.0, 1.0, 2.0]), eps=0.0))
    with pytest.raises(ValueError):
        L.gini(np.array([np.nan, 1.0]))


def test_diffusion_index_bounds_and_monotonicity() -> None:
    n = 32
    point = np.zeros((n, n))
    point[10, 12] = 1.0
    assert L.diffusion_index(point, eps=0.0) == pytest.approx(100.0 / n**2)  # one pixel carries everything
    assert L.diffusion_index(point) == pytest.approx(100.0 / n**2 + 100.0 * n**2 * L.GINI_EPS, rel=1e-3)  # release eps
    assert L.diffusion_index(np.full((n, n), 0.3)) == pytest.approx(100.0)  # every pixel the same
    rng = np.random.default_rng(1)
    for _ in range(5):
        di = L.diffusion_index(rng.standard_normal((3, n, n)))
        assert 100.0 / n**2 - 1e-6 <= di <= 100.0
    yy, xx = np.mgrid[0:n, 0:n]
    spreads = [L.diffusion_index(np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / (2 * s**2))) for s in (0.5, 1, 2, 4, 8)]
    assert all(a < b for a, b in itertools.pairwise(spreads)), spreads  # wider map, higher DI
    signed = rng.standard_normal((3, n, n))
    assert L.diffusion_index(signed) == pytest.approx(L.diffusion_index(np.abs(signed.sum(0))))  # |sum over c|
    assert L.diffusion_index(-7.0 * signed) == pytest.approx(L.diffusion_index(signed))  # sign/scale free
    assert np.isnan(L.diffusion_index(np.zeros((4, 4))))


def test_contribution_area_is_the_weighted_gaussian_kde() -> None:
    from scipy import stats

    rng = np.random.default_rng(2)
    sal = rng.random((9, 11)) ** 4
    yy, xx = np.mgrid[0:9, 0:11]
    pts = np.vstack([xx.ravel(), yy.ravel()]).astype(np.float64)
    kde = stats.gaussian_kde(pts, weights=(sal / sal.max()).ravel() + 1e-8)(pts).reshape(9, 11)
    assert np.abs(L.contribution_area(torch.from_numpy(sal)) - kde / kde.max()).max() < 1e-5


# ------------------------------------------------------------------------------------------------ CLI and notebook
TINY_SPECS = [
    "SwinIR-like=hat,embed_dim=30,depths=[1],num_heads=[2],window_size=8,alpha=0,use_cab=false,use_ocab=false",
    "HAT=hat,embed_dim=30,depths=[1],num_heads=[2],window_size=8",
    "SAFMN=safmn,dim=8,n_blocks=1",
]


def test_cli_writes_maps_figure_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sresolve.cli.analyze import main as analyze
    from sresolve.data.io import write_image

    image = write_image(tmp_path / "hr.png", _photo(66, 70))  # modcropped to 64 x 68 for x4
    out = tmp_path / "lam"
    common = ["--image", str(image), "--steps", "3", "--batch", "3", "--out", str(out), "--no-progress"]
    assert analyze(["lam", *common, "--box", "20,24,16,16", *TINY_SPECS]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((out / "lam.csv").open()))
    assert [r["label"] for r in rows] == ["SwinIR-like", "HAT", "SAFMN"]
    for r in rows:
        assert 0.0 <= float(r["di"]) <= 100.0 and float(r["detector"]) > 0
        assert (r["top"], r["left"], r["height"], r["width"], r["steps"]) == ("20", "24", "16", "16", "3")
        assert re.search(rf"^{re.escape(r['label'])}\s+{float(r['di']):.2f}\s", printed, re.M)
    for name in ("lam_SwinIR-like.png", "lam_HAT.png", "lam_SAFMN.png"):
        with Image.open(out / name) as im:
            assert im.width >= 3 * 68 and im.height > 64
    with Image.open(out / "lam_compare.png") as im:
        assert im.width >= 4 * 68 and im.height > 64 + 18

    # the default box (most detailed 16 x 16) with an LR input; a box outside the image is a clear error
    from sresolve.data.degradation import imresize

    lr_path = write_image(tmp_path / "lr.png", imresize(_photo(64, 64), 0.25).clamp(0, 1))
    lr_args = ["--lr-image", str(lr_path), "--steps", "2", "--out", str(tmp_path / "b"), "--no-progress"]
    assert analyze(["lam", *lr_args, TINY_SPECS[2]]) == 0
    capsys.readouterr()
    assert analyze(["lam", *common, "--box", "60,0,16,16", TINY_SPECS[2]]) == 2
    assert "outside the 64x68 HR image" in capsys.readouterr().err
    assert analyze(["lam", *common, "A=safmn,dim=8,n_blocks=1", "A=safmn,dim=8,n_blocks=1"]) == 2
    assert "distinct" in capsys.readouterr().err


def test_lam_notebook_executes(demo_outputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("SRESOLVE_OUTPUTS", str(demo_outputs))
    path = Path(__file__).resolve().parents[1] / "notebooks" / "lam.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # stored without outputs
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    dis = {label: float(v) for label, v in re.findall(r"^(\S+): DI = ([0-9.]+),", text, re.M)}
    assert set(dis) == {"bicubic", "demo_safmn_x4"}, text
    assert all(0.0 < v <= 100.0 for v in dis.values())
    assert (demo_outputs / "analysis" / "lam" / "demo_safmn_x4" / "lam_compare.png").is_file()
