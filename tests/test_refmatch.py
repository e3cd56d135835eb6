"""AMRSR reference matching (:mod:`sresolve.ops.refmatch`): spec archs_eqsr_amrsr.md B2-B5, B11, B13 (C3-C6, C14).

Everything runs on tiny images (LR 8-16 px, references 32-64 px) with the VGG-19 randomly initialised
(``vgg_weights="random"``): the tests pin the matching algebra, not ImageNet features. The patch-match references
below (:func:`reference_match`, :func:`reference_paste`) are written independently of the module: unfolded patches,
a matmul and explicit loops over query positions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from sresolve.analysis.complexity import peak_allocated_bytes
from sresolve.data.degradation import imresize
from sresolve.ops.refmatch import (
    SUBVECTOR_DIVISIONS,
    ReferenceMatcher,
    SwappedFeatures,
    input_attention,
    ref_attention,
    swap_patches,
)

LEVELS: tuple[tuple[str, int, int], ...] = (("relu3_1", 256, 1), ("relu2_1", 128, 2), ("relu1_1", 64, 4))


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The matching here is thousands of tiny ops: one intra-op thread avoids OpenMP spin-waits on a busy machine
    (20× faster with 2 shared cores). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------- helpers
def rand_images(seed: int, *shapes: tuple[int, ...]) -> list[Tensor]:
    """Uniform-noise images of the given shapes from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(*s, generator=g) for s in shapes]


def smooth_image(seed: int, h: int, w: int) -> Tensor:
    """A 3×h×w image with structure at several scales (noise at 1/4 and 1/2 resolution, upsampled, plus fine noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(1, 3, h // 4, w // 4, generator=g), size=(h, w), mode="bicubic")
    mid = F.interpolate(torch.rand(1, 3, h // 2, w // 2, generator=g), size=(h, w), mode="bilinear")
    fine = torch.rand(1, 3, h, w, generator=g)
    return (0.5 * coarse + 0.35 * mid + 0.15 * fine)[0].clamp(0, 1)


def matcher(**kwargs: object) -> ReferenceMatcher:
    """A matcher with the random VGG (the same seed-0 weights for every instance)."""
    return ReferenceMatcher(vgg_weights="random", **kwargs)  # type: ignore[arg-type]


def vgg_inputs(m: ReferenceMatcher, lr: Tensor, ref: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """What the matcher feeds the matching with (B2, C1), recomputed here: query relu3_1 of the bicubic ×4 LR, key
    relu3_1 of the down-up reference and the three value maps of the HR reference (cropped to a multiple of 4)."""
    hr, wr = ref.shape[-2] - ref.shape[-2] % 4, ref.shape[-1] - ref.shape[-1] % 4
    ref = ref[:, :hr, :wr]
    with torch.no_grad():
        x = m.vgg(imresize(lr, 4.0).clamp(0, 1)[None])["relu3_1"][0]
        keys = m.vgg(imresize(imresize(ref, 0.25), 4.0).clamp(0, 1)[None])["relu3_1"][0]
        values = {k: v[0] for k, v in m.vgg(ref[None]).items()}
    return x, keys, values


def reference_match(query: Tensor, keys: Tensor, padding: str) -> tuple[Tensor, Tensor]:
    """Single-group patch match (SRNTT/TTSR, B4): unfold 3×3 query and key patches, L2-normalise both, matmul, argmax
    over keys. Returns (index h'×w' into the key patch grid, max cosine h'×w')."""
    pad = 1 if padding == "same" else 0
    h, w = query.shape[-2:]
    hq, wq = h + 2 * pad - 2, w + 2 * pad - 2
    q = F.unfold(query[None].double(), 3, padding=pad)[0]  # (C·9)×L
    k = F.unfold(keys[None].double(), 3, padding=pad)[0]  # (C·9)×P
    q = q / q.norm(dim=0, keepdim=True).clamp_min(1e-12)
    k = k / k.norm(dim=0, keepdim=True).clamp_min(1e-12)
    score, index = (k.t() @ q).max(dim=0)
    return index.view(hq, wq), score.float().view(hq, wq)


def reference_paste(values: Tensor, index: Tensor, key_hw: tuple[int, int], f: int, padding: str) -> Tensor:
    """Paste the winning 3f×3f value patches (stride f) at every query position with explicit loops and divide each
    output pixel by the number of patches that covered it (B3 step 3c).

    ``same``: query (y, x) is the patch centre, the source patch is centred on key pixel (py, px) (zeros beyond the
    border), the output is f·h'×f·w' and patches sticking out of it are clipped. ``valid``: (y, x) / (py, px) are the
    top-left corners and the output is f(h'+2)×f(w'+2)."""
    c = values.shape[0]
    hq, wq = index.shape
    same = padding == "same"
    grid_w = key_hw[1] if same else key_hw[1] - 2
    src_map = F.pad(values, (f, f, f, f)) if same else values
    out_h, out_w = (f * hq, f * wq) if same else (f * (hq + 2), f * (wq + 2))
    shift = -f if same else 0
    out = torch.zeros(c, out_h, out_w, dtype=torch.float64)
    count = torch.zeros(out_h, out_w, dtype=torch.float64)
    for y in range(hq):
        for x in range(wq):
            py, px = divmod(int(index[y, x]), grid_w)
            patch = src_map[:, f * py : f * py + 3 * f, f * px : f * px + 3 * f].double()
            assert patch.shape[-2:] == (3 * f, 3 * f)
            oy, ox = f * y + shift, f * x + shift  # top-left of the pasted patch in the output
            y0, y1 = max(oy, 0), min(oy + 3 * f, out_h)
            x0, x1 = max(ox, 0), min(ox + 3 * f, out_w)
            out[:, y0:y1, x0:x1] += patch[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            count[y0:y1, x0:x1] += 1
    assert bool((count > 0).all())
    return (out / count).float()


def assert_same(a: SwappedFeatures, b: SwappedFeatures) -> None:
    """Bit-identical o3/o2/o1/weight."""
    for key in ("o3", "o2", "o1", "weight"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key


# --------------------------------------------------------------------------------------------------- 1. shapes
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize(
    ("n_i", "n_r", "n_c", "lr_hw", "ref_shapes"),
    [
        (1, 1, 1, (8, 8), [(32, 32)]),
        (1, 1, 4, (13, 10), [(34, 41), (45, 30)]),  # odd LR, refs cropped to 32×40 and 44×28
        (4, 4, 4, (13, 10), [(50, 37), (26, 27)]),
        (4, 1, 8, (13, 10), [(50, 61), (33, 49)]),
        (1, 16, 2, (12, 16), [(49, 51)]),
    ],
)
def test_output_shapes_and_weight_range(
    n_i: int, n_r: int, n_c: int, lr_hw: tuple[int, int], ref_shapes: list[tuple[int, int]], padding: str
) -> None:
    """B3 steps 6-7: o3 B×256×h×w, o2 B×128×2h×2w, o1 B×64×4h×4w, W B×1×h×w for any N_I/N_R/N_C, odd LR sizes,
    references of different sizes (not multiples of 4: cropped) and both paddings (C14); W is a cosine of
    non-negative features, so in [0, 1] (B3 step 5)."""
    h, w = lr_hw
    lr, *rest = rand_images(1, (2, 3, h, w), *[(3, *s) for s in ref_shapes], *[(3, *s) for s in ref_shapes[::-1]])
    refs = [rest[: len(ref_shapes)], rest[len(ref_shapes) :]]
    out = matcher(n_input_parts=n_i, n_ref_parts=n_r, n_subvectors=n_c, padding=padding)(lr, refs)
    assert out.o3.shape == (2, 256, h, w)
    assert out.o2.shape == (2, 128, 2 * h, 2 * w)
    assert out.o1.shape == (2, 64, 4 * h, 4 * w)
    assert out.weight.shape == (2, 1, h, w)
    for t in (out.o3, out.o2, out.o1, out.weight):
        assert t.dtype == torch.float32
        assert bool(torch.isfinite(t).all())
    assert float(out.weight.min()) >= 0.0
    assert float(out.weight.max()) <= 1.0 + 1e-6
    assert float(out.weight.mean()) > 0.3  # cosines of VGG features are far from 0
    assert min(float(t.min()) for t in out.maps()) >= 0.0  # averages of ReLU outputs
    assert list(out.as_dict()) == ["relu3_1", "relu2_1", "relu1_1"]


# --------------------------------------------------------------------------------------------------- 2. SRNTT case
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize(("q_hw", "k_hw"), [((7, 9), (6, 8)), ((5, 5), (10, 7))])
def test_input_attention_and_swap_equal_patch_match(padding: str, q_hw: tuple[int, int], k_hw: tuple[int, int]) -> None:
    """B4/B5 with N_C = 1: INPUTATT's index and score are the argmax / max cosine of the unfolded, L2-normalised
    patches, and swap_patches pastes 3/6/12 patches at stride 1/2/4 averaged by the overlap count (B3 step 3c)."""
    c = 32
    q, k = (F.relu(t) for t in rand_images(2, (c, *q_hw), (c, *k_hw)))
    m = input_attention(q, k, 1, padding=padding)
    index, score = reference_match(q, k, padding)
    assert m.key_hw == k_hw
    assert m.index.shape == (1, *index.shape)
    assert torch.equal(m.index[0], index)
    torch.testing.assert_close(m.score, score, atol=1e-5, rtol=0)
    for f, ch in ((1, 16), (2, 8), (4, 4)):
        (values,) = rand_images(3 + f, (ch, f * k_hw[0], f * k_hw[1]))
        got = swap_patches(values, m.index, m.key_hw, f, padding)
        want = reference_paste(values, index, k_hw, f, padding)
        assert got.shape == want.shape == (ch, f * q_hw[0], f * q_hw[1])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_matcher_single_everything_is_srntt(padding: str) -> None:
    """B3 step 8: with N_M = N_R = N_C = 1 only INPUTATT runs; O maps equal the direct patch match on the VGG features
    of I_LR↑ (queries) and I_ref↓↑ (keys) pasting I_ref's features (C1), and W equals SRNTT's max cosine
    (valid padding: W border-replicated from (h-2)×(w-2), C6/C14)."""
    m = matcher(n_subvectors=1, padding=padding)
    lr = smooth_image(4, 12, 10)
    ref = smooth_image(5, 43, 38)  # cropped to 40×36
    out = m(lr[None], [[ref]])
    x, keys, values = vgg_inputs(m, lr, ref)
    index, score = reference_match(x, keys, padding)
    for (name, _, f), got in zip(LEVELS, out.maps(), strict=True):
        want = reference_paste(values[name], index, tuple(keys.shape[-2:]), f, padding)
        torch.testing.assert_close(got[0], want, atol=1e-4, rtol=1e-4)
    if padding == "valid":
        assert score.shape == (10, 8)
        score = F.pad(score[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    torch.testing.assert_close(out.weight[0, 0], score, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------- 3. variants
def test_key_chunk_is_exact() -> None:
    """B4 (SRNTT filter batches): a running argmax over chunks of 7 key patches gives bit-identical results."""
    lr, r1, r2 = rand_images(6, (1, 3, 12, 11), (3, 48, 52), (3, 40, 45))
    kw = {"n_ref_parts": 4, "n_subvectors": 4, "subvector_division": "both"}
    base = matcher(**kw)(lr, [[r1, r2]])
    chunked = matcher(key_chunk=7, **kw)(lr, [[r1, r2]])
    assert_same(base, chunked)
    q, k = (F.relu(t) for t in rand_images(7, (16, 6, 7), (16, 9, 8)))
    for level1 in ("joint", "per_group"):
        a = input_attention(q, k, 4, level1=level1)
        b = input_attention(q, k, 4, level1=level1, key_chunk=5)
        assert torch.equal(a.index, b.index)
        assert torch.equal(a.score, b.score)


def test_level1_per_group_vs_joint() -> None:
    """C5: ``per_group`` (each subvector its own patch) differs from the joint argmax with N_C = 4, but is the same
    thing with N_C = 1; σ¹ (the best score over groups) is the same in both."""
    q, k = (F.relu(t) for t in rand_images(8, (32, 6, 7), (32, 9, 8)))
    joint = input_attention(q, k, 4, level1="joint")
    per = input_attention(q, k, 4, level1="per_group")
    assert joint.index.shape == (1, 6, 7)
    assert per.index.shape == (4, 6, 7)
    assert torch.equal(joint.score, per.score)
    # the joint winner is one of the per-group winners, the one of the best group
    assert bool((per.index == joint.index).any(0).all())
    assert not bool((per.index == joint.index).all())

    lr, ref = rand_images(9, (1, 3, 10, 10), (3, 40, 40))
    a = matcher(n_subvectors=4, level1="joint")(lr, [[ref]])
    b = matcher(n_subvectors=4, level1="per_group")(lr, [[ref]])
    assert not torch.equal(a.o3, b.o3)
    assert (a.o1 - b.o1).abs().max() > 1e-3
    torch.testing.assert_close(a.weight, b.weight)
    a = matcher(n_subvectors=1, level1="joint")(lr, [[ref]])
    b = matcher(n_subvectors=1, level1="per_group")(lr, [[ref]])
    assert_same(a, b)


# --------------------------------------------------------------------------------------------------- 4. streaming
@pytest.mark.parametrize(
    ("division", "projection"),
    [("input", "per_group"), ("none", "per_group"), ("refs", "per_group"), ("both", "per_group"), ("both", "single")],
)
@pytest.mark.parametrize("n_m", [1, 3])
@pytest.mark.parametrize("n_r", [1, 4])
def test_stream_equals_batched_argmax(n_r: int, n_m: int, division: str, projection: str) -> None:
    """B3 streaming form: running best over parts (level 2) and references (level 3) equals storing all candidates
    and one batched argmax, bit for bit, for every subvector division (supp. Table 4) and C4 projection per_group /
    single (which only matters where levels 2/3 are split)."""
    shapes = [(3, 44, 40), (3, 36, 52), (3, 48, 48)][:n_m]
    lr, *refs = rand_images(10 + n_r + n_m, (1, 3, 12, 10), *shapes)
    kw = {"n_ref_parts": n_r, "n_subvectors": 4, "projection": projection, "subvector_division": division}
    streamed = matcher(stream=True, **kw)(lr, [refs])
    batched = matcher(stream=False, **kw)(lr, [refs])
    assert_same(streamed, batched)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("projection", ["per_group", "single"])
def test_level3_equals_independent_refatt(projection: str, stream: bool) -> None:
    """B5 REFATT at level 3 (N_R = 1, so O^{2,m} is each reference's level-1 output): per subvector j and position the
    candidate with the highest aligned similarity (``ref_attention`` over the stacked candidates, argmax) supplies
    channels j of o3, and the same choice nearest-upsampled ×2/×4 supplies o2/o1 (C4); ``single`` uses one winner per
    position (mean score over subvectors). W = max_m W_m (C6). Subvector division ``both`` (supp. Table 4: levels 2/3
    split into the N_C subvectors)."""
    groups = 4
    lr, *refs = rand_images(11, (1, 3, 10, 12), (3, 40, 44), (3, 36, 36), (3, 48, 40))
    m = matcher(n_subvectors=groups, projection=projection, stream=stream, subvector_division="both")
    out = m(lr, [refs])
    cands = [m(lr, [[r]]) for r in refs]  # level-1 outputs of each reference alone
    x = vgg_inputs(m, lr[0], refs[0])[0]
    scores = ref_attention(x, [c.o3[0] for c in cands], groups)
    assert scores.shape == (3, groups, 10, 12)
    single = projection == "single"
    win = scores.mean(1).argmax(0)[None].expand(groups, -1, -1) if single else scores.argmax(0)
    assert len(win.unique()) == 3  # every reference wins somewhere: the test is not vacuous
    for level, (_, ch, f) in enumerate(LEVELS):
        want = torch.zeros(ch, f * 10, f * 12)
        cg = ch // groups
        for j in range(groups):
            choice = win[j].repeat_interleave(f, 0).repeat_interleave(f, 1)
            for k, cand in enumerate(cands):
                mask = choice == k
                want[j * cg : (j + 1) * cg][:, mask] = cand.maps()[level][0, j * cg : (j + 1) * cg][:, mask]
        assert torch.equal(out.maps()[level][0], want), level
    assert torch.equal(out.weight, torch.stack([c.weight for c in cands]).amax(0))


# --------------------------------------------------------------------------------------------------- 5. hierarchy
@pytest.mark.parametrize("division", ["input", "both"])
@pytest.mark.parametrize("n_r", [1, 4])
def test_true_reference_wins_over_distractors(n_r: int, division: str) -> None:
    """B3 levels 1-3 with a reference that is the HR itself (LR = its bicubic ↓4) among noise distractors: level 3
    picks it nearly everywhere, so W rises to ≈ 1 and o3 approaches relu3_1(HR); the order of the references does
    not matter (no ties here). With the paper's division (``input``) and with levels 2/3 split too (``both``)."""
    hr = smooth_image(12, 48, 48)
    lr = imresize(hr, 0.25)[None]  # 12×12, not clamped so that I_LR↑ equals I_ref↓↑ of the true reference
    distractors = rand_images(13, (3, 48, 48), (3, 52, 44), (3, 44, 48))
    m = matcher(n_ref_parts=n_r, n_subvectors=4, subvector_division=division)
    with_true = m(lr, [[hr, *distractors]])
    true_last = m(lr, [[*distractors, hr]])
    only_true = m(lr, [[hr]])
    only_distractors = m(lr, [distractors])
    with torch.no_grad():
        target = m.vgg(hr[None])["relu3_1"]

    def err(o3: Tensor) -> float:
        return float((o3 - target).norm() / target.norm())

    assert_same(with_true, true_last)
    if n_r == 1:  # keys of the true reference are the queries themselves: exact self-match, σ¹ = 1
        assert float(only_true.weight.min()) > 0.999
        assert err(only_true.o3) < 1e-4
    # W = max_m W_m (C6); with N_R = 4 the part tiles see VGG zero padding at their borders: no exact self-match
    assert bool((with_true.weight >= only_distractors.weight).all())
    torch.testing.assert_close(with_true.weight, torch.maximum(only_true.weight, only_distractors.weight))
    assert float(with_true.weight.mean()) > float(only_distractors.weight.mean()) + (0.08 if n_r == 1 else 0.04)
    assert err(with_true.o3) < 0.3 * err(only_distractors.o3)
    same_as_true = (with_true.o3 == only_true.o3).float().mean()
    assert float(same_as_true) > 0.9  # level 3 chose the true reference for > 90% of (subvector, position)


# --------------------------------------------------------------------------------------------------- 5b. supp. Table 4
def whole_vector_refatt(query: Tensor, candidates: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """REFATT without subvectors (B5 with N_C = 1), written independently of the module: per position, the 3×3×C
    patch of ``query`` against the 3×3×C patch of every candidate *at the same position* (zero padding), cosine over
    all channels in float64. Returns (winner index h×w, the winner's cosine h×w)."""
    h, w = query.shape[-2:]
    q = F.unfold(query[None].double(), 3, padding=1)[0]  # (C·9)×(h·w)
    q = q / q.norm(dim=0, keepdim=True).clamp_min(1e-12)
    cos = []
    for cand in candidates:
        k = F.unfold(cand[None].double(), 3, padding=1)[0]
        cos.append((q * (k / k.norm(dim=0, keepdim=True).clamp_min(1e-12))).sum(0).view(h, w))
    best, win = torch.stack(cos).max(0)
    return win, best.float()


def assemble(win: Tensor, cands: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """The three maps taken from candidate ``win[y, x]`` at every relu3_1 position (relu2_1 / relu1_1: the same
    choice nearest-upsampled ×2 / ×4), all channels together."""
    out = []
    for level, (_, ch, f) in enumerate(LEVELS):
        choice = win.repeat_interleave(f, 0).repeat_interleave(f, 1)
        want = torch.zeros(ch, *choice.shape)
        for k, cand in enumerate(cands):
            want[:, choice == k] = cand[level][:, choice == k]
        out.append(want)
    return out


def test_division_table_and_groups() -> None:
    """Supp. Table 4: which levels are split into the N_C subvectors for each ``subvector_division``; ``input``
    (AMRSR's "input only") is the default; the value shows in the module's repr."""
    assert SUBVECTOR_DIVISIONS == {
        "input": (True, False),
        "none": (False, False),
        "refs": (False, True),
        "both": (True, True),
    }
    ms = {d: matcher(n_subvectors=8, subvector_division=d) for d in SUBVECTOR_DIVISIONS}
    assert {d: (m.input_groups, m.ref_groups) for d, m in ms.items()} == {
        "input": (8, 1),
        "none": (1, 1),
        "refs": (1, 8),
        "both": (8, 8),
    }
    assert matcher().subvector_division == "input"
    assert "subvector_division=refs" in repr(ms["refs"])


@pytest.mark.parametrize("n_r", [1, 4])
def test_division_none_equals_one_subvector(n_r: int) -> None:
    """``none`` = no split anywhere = ``n_subvectors=1``, bit for bit, whatever N_C, ``level1`` and ``projection``
    say (they have nothing to act on)."""
    lr, *refs = rand_images(20, (1, 3, 10, 12), (3, 48, 44), (3, 40, 48))
    one = matcher(n_ref_parts=n_r, n_subvectors=1, subvector_division="both")(lr, [refs])
    for n_c, level1, projection in ((4, "joint", "per_group"), (8, "per_group", "single")):
        none = matcher(
            n_ref_parts=n_r, n_subvectors=n_c, subvector_division="none", level1=level1, projection=projection
        )
        assert_same(none(lr, [refs]), one)
    for division in ("input", "refs"):  # with N_C = 1 every division is the same computation
        assert_same(matcher(n_ref_parts=n_r, n_subvectors=1, subvector_division=division)(lr, [refs]), one)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_division_refs_level1_is_one_group_inputatt(padding: str) -> None:
    """``refs`` (division of the reference vectors only): level 1 is INPUTATT on the whole vector, i.e. the one-group
    patch match (SRNTT) of :func:`reference_match` pasted by :func:`reference_paste`, and W = its max cosine; the
    level-1 split of ``input``/``both`` gives other maps. With N_M = N_R = 1 (levels 2/3 skipped) ``refs`` = ``none``
    and ``input`` = ``both``."""
    lr, ref = smooth_image(21, 12, 10)[None], smooth_image(22, 40, 44)
    out = {d: matcher(n_subvectors=4, subvector_division=d, padding=padding)(lr, [[ref]]) for d in SUBVECTOR_DIVISIONS}
    m = matcher(padding=padding)
    x, keys, values = vgg_inputs(m, lr[0], ref)
    one = input_attention(x, keys, 1, padding=padding)
    index, score = reference_match(x, keys, padding)
    assert torch.equal(one.index[0], index)
    for (name, _, f), got in zip(LEVELS, out["refs"].maps(), strict=True):
        assert torch.equal(got[0], swap_patches(values[name], one.index, one.key_hw, f, padding))
        want = reference_paste(values[name], index, tuple(keys.shape[-2:]), f, padding)
        torch.testing.assert_close(got[0], want, atol=1e-4, rtol=1e-4)
    if padding == "valid":
        score = F.pad(score[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    torch.testing.assert_close(out["refs"].weight[0, 0], score, atol=1e-5, rtol=0)
    assert_same(out["refs"], out["none"])
    assert_same(out["input"], out["both"])
    assert not torch.equal(out["refs"].o3, out["input"].o3)  # the level-1 split matters here


@pytest.mark.parametrize("stream", [True, False])
def test_division_input_level3_is_whole_vector_refatt(stream: bool) -> None:
    """``input`` (AMRSR): level 3 (N_R = 1, N_M = 3) compares the query with every reference's level-1 output on
    the whole 256-channel vector at the same position and takes all channels of o3/o2/o1 from the one winner
    (:func:`whole_vector_refatt`, independent); W = max_m W_m = max_m σ¹_m. ``both`` (levels 2/3 split) differs."""
    lr, *refs = rand_images(11, (1, 3, 10, 12), (3, 40, 44), (3, 36, 36), (3, 48, 40))
    m = matcher(n_subvectors=4, subvector_division="input", stream=stream)
    out = m(lr, [refs])
    cands = [m(lr, [[r]]) for r in refs]  # level-1 outputs of each reference alone (split into 4 subvectors)
    x = vgg_inputs(m, lr[0], refs[0])[0]
    win, _ = whole_vector_refatt(x, [c.o3[0] for c in cands])
    assert len(win.unique()) == 3  # every reference wins somewhere: the test is not vacuous
    for got, want in zip(out.maps(), assemble(win, [[t[0] for t in c.maps()] for c in cands]), strict=True):
        assert torch.equal(got[0], want)
    assert torch.equal(out.weight, torch.stack([c.weight for c in cands]).amax(0))
    both = matcher(n_subvectors=4, subvector_division="both", stream=stream)(lr, [refs])
    assert not torch.equal(both.o3, out.o3)


def test_division_input_level2_is_whole_vector_refatt() -> None:
    """``input`` at level 2 (N_R = 4, N_M = 1): the part whose level-1 output (the module's, split into 4 subvectors)
    is most similar on the whole vector wins all channels at a position, and W_m is that winner's full-vector cosine
    (= the max over parts of the aligned cosine: ``similarity="cosine"`` ranks by it)."""
    from sresolve.ops.refmatch import grid_bounds

    lr, ref = rand_images(23, (1, 3, 12, 10), (3, 48, 44))
    m = matcher(n_ref_parts=4, n_subvectors=4, subvector_division="input")
    out = m(lr, [[ref]])
    x = vgg_inputs(m, lr[0], ref)[0]
    ref_du = imresize(imresize(ref, 0.25), 4.0).clamp(0, 1)
    cands = []
    with torch.no_grad():
        for a0, a1 in grid_bounds(12, 2):
            for b0, b1 in grid_bounds(11, 2):
                sl = (slice(None), slice(4 * a0, 4 * a1), slice(4 * b0, 4 * b1))
                keys = m.vgg(ref_du[sl][None])["relu3_1"][0]
                values = {k: v[0] for k, v in m.vgg(ref[sl][None]).items()}
                cands.append(m._level_one(x, keys, values)[0])
    win, best = whole_vector_refatt(x, [c[0] for c in cands])
    assert len(win.unique()) >= 2
    for got, want in zip(out.maps(), assemble(win, cands), strict=True):
        assert torch.equal(got[0], want)
    torch.testing.assert_close(out.weight[0, 0], best, atol=1e-5, rtol=0)


def test_divisions_differ_with_every_level() -> None:
    """With N_R = 4 and N_M = 2 (levels 1-3 all run) the four divisions give four different results, W in [0, 1]."""
    lr, *refs = rand_images(24, (1, 3, 12, 12), (3, 48, 48), (3, 48, 52))
    outs = {d: matcher(n_ref_parts=4, subvector_division=d)(lr, [refs]) for d in SUBVECTOR_DIVISIONS}
    o3 = list(outs.values())
    assert all(not torch.equal(a.o3, b.o3) for i, a in enumerate(o3) for b in o3[i + 1 :])
    for out in outs.values():
        assert float(out.weight.min()) >= 0.0 and float(out.weight.max()) <= 1.0 + 1e-6


# --------------------------------------------------------------------------------------------------- 6. memory
def test_memory_flat_in_number_of_references() -> None:
    """B3 streaming / B11: the running best keeps peak memory flat in N_M (one part's volume and ~3 sets of O maps);
    storing every candidate (stream=False) grows with N_M. CPU bytes from the profiler's allocation events."""
    lr, *refs = rand_images(14, (1, 3, 12, 12), *[(3, 48, 48)] * 8)
    cpu = torch.device("cpu")
    streamed, batched = matcher(stream=True), matcher(stream=False)

    def peak(m: ReferenceMatcher, n: int) -> int:
        value = peak_allocated_bytes(lambda: m(lr, [refs[:n]]), cpu)
        if value is None:
            pytest.skip("this torch build exposes no CPU memory events")
        return value

    peak(streamed, 2)  # warm-up: the profiler's first use is slow and allocates once
    s1, s2, s8 = peak(streamed, 1), peak(streamed, 2), peak(streamed, 8)
    b2, b8 = peak(batched, 2), peak(batched, 8)
    assert s8 <= 1.05 * s2
    assert s8 < 1.6 * s1
    assert b8 > 1.5 * b2


# --------------------------------------------------------------------------------------------------- 7. errors
def test_errors_name_the_problem() -> None:
    """Bad inputs and options fail at once with a message naming the sample, reference, size or allowed values."""
    lr, small, ok = rand_images(15, (2, 3, 8, 8), (3, 23, 40), (3, 27, 27))
    m = matcher(n_ref_parts=4)
    assert m.min_ref_size == 24
    with pytest.raises(ValueError, match=r"sample 'b' has no reference images"):
        m(lr, [[ok], []], names=["a", "b"])
    with pytest.raises(ValueError, match=r"sample '#1' has no reference images"):
        m(lr, [[ok], []])
    with pytest.raises(ValueError, match=r"reference 1 of sample '#0' is 23×40 px.*n_ref_parts=4.*>= 24 px"):
        m(lr, [[ok, small], [ok]])
    m(lr, [[ok, ok], [ok]])  # 27 px is cropped to 24: accepted
    with pytest.raises(ValueError, match=r"reference 0 of sample 'x' must be 3×H×W, got \(1, 3, 27, 27\)"):
        m(lr[:1], [[ok[None]]], names=["x"])
    with pytest.raises(ValueError, match=r"lr must be B×3×h×w, got \(3, 8, 8\)"):
        m(lr[0], [[ok]])
    with pytest.raises(ValueError, match=r"lr must be B×3×h×w, got \(2, 1, 8, 8\)"):
        m(lr[:, :1], [[ok], [ok]])
    with pytest.raises(ValueError, match=r"1 reference lists for a batch of 2 LR images"):
        m(lr, [[ok]])
    for n_r in (2, 3, 8):
        with pytest.raises(ValueError, match=rf"n_ref_parts must be a square number.*got {n_r}"):
            matcher(n_ref_parts=n_r)
    with pytest.raises(ValueError, match=r"n_input_parts must be a square number.*got 8"):
        matcher(n_input_parts=8)
    for n_c in (3, 0, 128):
        with pytest.raises(ValueError, match=rf"n_subvectors \(N_C\) must divide 64.*got {n_c}"):
            matcher(n_subvectors=n_c)
    with pytest.raises(ValueError, match=r"key_chunk must be a positive int"):
        matcher(key_chunk=0)
    bad = {
        "similarity": ("dot", ["cosine", "ref_norm"]),
        "level1": ("mean", ["joint", "per_group"]),
        "projection": ("all", ["per_group", "single"]),
        "padding": ("reflect", ["same", "valid"]),
        "subvector_division": ("output", ["input", "none", "refs", "both"]),
    }
    for key, (value, allowed) in bad.items():
        with pytest.raises(ValueError, match=re.escape(f"{key}={value!r}: allowed {allowed}")):
            matcher(**{key: value})


@pytest.mark.parametrize("key", ["n_input_parts", "n_ref_parts"])
@pytest.mark.parametrize("value", [0, True])
def test_zero_or_bool_parts_refused(key: str, value: int) -> None:
    """B11: N_I / N_R = 0 (or a bool) is no g×g grid and must be refused at construction like 2 or 3."""
    with pytest.raises(ValueError, match=rf"{key} must be a square number"):
        matcher(**{key: value})


def test_small_lr_parts_refused_with_the_sample_named() -> None:
    lr, ref = rand_images(18, (1, 3, 13, 10), (3, 32, 32))
    with pytest.raises(ValueError, match=r"LR of sample 'x' is 13×10 px; with n_input_parts=16 .* >= 12 px"):
        matcher(n_input_parts=16)(lr, [[ref]], names=["x"])


@pytest.mark.parametrize(("similarity", "projection"), [("ref_norm", "per_group"), ("cosine", "single")])
def test_weight_is_the_winners_max_cosine(similarity: str, projection: str) -> None:
    """B3 step 5 / C3: W_m = max over subvectors of the winning candidate's cosine, in [0, 1], whatever ranks the
    candidates (the query-unnormalised score of Eq. 1, or the mean over subvectors of ``projection=single``); levels
    2/3 split into subvectors (division ``both``)."""
    from sresolve.ops.refmatch import aligned_similarity

    lr, ref = rand_images(19, (1, 3, 12, 12), (3, 48, 48))
    m = matcher(n_ref_parts=4, n_subvectors=4, similarity=similarity, projection=projection, subvector_division="both")
    out = m(lr, [[ref]])
    assert float(out.weight.min()) >= 0.0 and float(out.weight.max()) <= 1.0 + 1e-6
    if projection == "single":  # one winner per position: every subvector comes from it
        x = m.vgg(imresize(lr[0], 4.0).clamp(0, 1)[None])["relu3_1"][0]
        cos = aligned_similarity(x, out.o3[0], 4, "cosine")
        inner = (slice(None), slice(1, -1), slice(1, -1))  # away from part borders the assembled map = the winner
        assert torch.allclose(out.weight[0][inner], cos.max(0, keepdim=True).values[inner], atol=0.05)


# --------------------------------------------------------------------------------------------------- 8-9. misc
def test_no_gradient_through_matching() -> None:
    """C13: the matching runs under no_grad; a differentiable LR gives outputs without grad."""
    lr, ref = rand_images(16, (1, 3, 8, 8), (3, 32, 32))
    lr.requires_grad_()
    out = matcher(n_ref_parts=1)(lr, [[ref, ref.flip(-1)]])
    assert not any(t.requires_grad for t in (out.o3, out.o2, out.o1, out.weight))
    assert out.o3.grad_fn is None


def test_set_parts_matches_fresh_matcher() -> None:
    """B11: ``set_parts`` changes the N_I/N_R grids (min_ref_size 12·sqrt(N_R)) and the results equal a matcher built
    with those values; invalid values are refused."""
    lr, ref = rand_images(17, (1, 3, 12, 10), (3, 50, 49))
    m = matcher()
    assert m.min_ref_size == 12
    before = m(lr, [[ref]])
    m.set_parts(4, 16)
    assert (m.n_input_parts, m.n_ref_parts, m.input_grid, m.ref_grid, m.min_ref_size) == (4, 16, 2, 4, 48)
    after = m(lr, [[ref]])
    assert_same(after, matcher(n_input_parts=4, n_ref_parts=16)(lr, [[ref]]))
    assert not torch.equal(before.o3, after.o3)
    with pytest.raises(ValueError, match=r"reference 0 of sample '#0' is 47×49 px.*n_ref_parts=16.*>= 48 px"):
        m(lr, [[ref[:, :47]]])
    with pytest.raises(ValueError, match="n_ref_parts must be a square number"):
        m.set_parts(1, 8)


def _shapes(items: Sequence[Tensor]) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in items]


def test_swapped_features_helpers() -> None:
    """SwappedFeatures.cat concatenates along the batch, ``to`` converts every map."""
    lr, ref = rand_images(18, (2, 3, 8, 8), (3, 32, 32))
    m = matcher()
    both = m(lr, [[ref], [ref]])
    one = SwappedFeatures.cat([m(lr[:1], [[ref]]), m(lr[1:], [[ref]])])
    assert_same(both, one)
    half = both.to(torch.float64)
    assert _shapes(half.maps()) == _shapes(both.maps())
    assert half.weight.dtype == torch.float64
