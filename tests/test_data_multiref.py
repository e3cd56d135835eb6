"""Tests for the multi-reference SR data pipeline (AMRSR ×4): the CUFED training items with distractors, the
CUFED5 / Sun80 / folder evaluation layouts, the embedded stereo sample set, the collate and the data module
(spec archs_eqsr_amrsr.md B9, B10, C10, C12)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader

from sresolve.data.degradation import imresize, pil_bicubic_resize
from sresolve.data.io import image_size, read_image_uint8
from sresolve.data.multiref import (
    MultiRefEvalDataset,
    MultiRefSRDataModule,
    MultiRefTrainDataset,
    collate_multiref,
    materialize_multiref_samples,
)
from sresolve.data.samples import load_sample
from sresolve.data.transforms import apply_augment

P = 8  # LR patch side of the fake CUFED set (HR 32)
REF_SIZES = [(40, 40), (36, 44), (44, 52), (32, 40), (48, 36)]  # one reference per pair, all different
VAL_SIZE = (48, 64)  # small validation crops of the stereo sample set


# ---------------------------------------------------------------------------------------------------- helpers
def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Gradient + noise, so that crops, flips and resizes are all distinguishable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([yy * 255.0 / h, xx * 255.0 / w, (yy + xx) * 127.0 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def _float(path: Path) -> torch.Tensor:
    return _chw(read_image_uint8(path)).to(torch.float32) / 255.0


def _fake_trainer(world: int, rank: int = 0, step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        world_size=world,
        global_rank=rank,
        global_step=step,
        accumulate_grad_batches=1,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=False),
    )


@pytest.fixture
def cufed_root(tmp_path: Path) -> Path:
    root = tmp_path / "CUFED" / "train"
    for i, size in enumerate(REF_SIZES):
        _save(root / "input" / f"p{i:03d}.png", _image(48, 48, seed=i))
        _save(root / "ref" / f"p{i:03d}.png", _image(*size, seed=100 + i))
    return root


def _cufed5(root: Path, samples: tuple[str, ...] = ("000", "001"), levels: int = 5) -> Path:
    for k, sample in enumerate(samples):
        _save(root / f"{sample}_0.png", _image(34, 42, seed=k))  # modcrop 4 -> 32x40, LR 8x10
        for level in range(1, levels + 1):
            _save(root / f"{sample}_{level}.png", _image(20 + 2 * level, 24 + level, seed=10 * k + level))
    return root


@pytest.fixture(scope="module")
def samples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The multi-reference sample set with small validation crops, written once for this module."""
    root = tmp_path_factory.mktemp("multiref_data") / "samples"
    materialize_multiref_samples(root, val_size=VAL_SIZE)
    return root


# ---------------------------------------------------------------------------------------------------- training
def test_train_batch_shapes_and_collate(cufed_root: Path) -> None:
    ds = MultiRefTrainDataset(cufed_root, n_refs=3, lr_patch_size=P, ref_augment="none")
    assert len(ds) == 5 and ds.hr_patch_size == 32
    order = [(0, 5), (3, 7), (1, 9), (4, 1)]
    loader = DataLoader(ds, batch_size=2, sampler=order, num_workers=0, collate_fn=collate_multiref)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert batch["lr"].shape == (2, 3, P, P) and batch["hr"].shape == (2, 3, 4 * P, 4 * P)
    assert batch["lr"].dtype == torch.float32 and batch["lr"].min() >= 0.0 and batch["hr"].max() <= 1.0
    assert batch["name"] == ["p000", "p003"]
    assert isinstance(batch["refs"], list) and len(batch["refs"]) == 2
    for refs, ref_names in zip(batch["refs"], batch["ref_names"], strict=True):
        assert len(refs) == len(ref_names) == 3
        for ref, ref_name in zip(refs, ref_names, strict=True):  # whole references, not augmented: the file sizes
            assert ref.dtype == torch.float32 and ref.shape == (3, *REF_SIZES[int(ref_name[1:])])
    sizes = {tuple(r.shape) for refs in batch["refs"] for r in refs}
    assert len(sizes) > 1  # references of different sizes in one batch


def test_distractors_come_from_other_pairs(cufed_root: Path) -> None:
    ds = MultiRefTrainDataset(cufed_root, n_refs=4, lr_patch_size=P, ref_augment="none")
    drawn: set[str] = set()
    for seed in range(30):
        index = seed % 5
        item = ds[(index, seed)]
        own, *others = item["ref_names"]
        assert own == item["name"] == f"p{index:03d}"
        assert len(others) == 3 and len(set(others)) == 3 and item["name"] not in others
        drawn.update(others)
        for ref, ref_name in zip(item["refs"], item["ref_names"], strict=True):
            assert torch.equal(ref, _float(cufed_root / "ref" / f"{ref_name}.png"))
    assert drawn == {f"p{i:03d}" for i in range(5)}  # every pair's reference serves as a distractor


def test_distractor_dir_and_none(cufed_root: Path, tmp_path: Path) -> None:
    extra = tmp_path / "distractors"
    for i in range(3):
        _save(extra / f"d{i}.png", _image(30, 20 + i, seed=50 + i))
    ds = MultiRefTrainDataset(cufed_root, n_refs=3, lr_patch_size=P, distractor_dir=extra)
    for seed in range(10):
        names = ds[(seed % 5, seed)]["ref_names"]
        assert names[0] == f"p{seed % 5:03d}" and set(names[1:]) <= {"d0", "d1", "d2"} and len(set(names)) == 3
    single = MultiRefTrainDataset(cufed_root, n_refs=1, lr_patch_size=P, distractors="none")
    assert single[(2, 3)]["ref_names"] == ["p002"]
    with pytest.raises(ValueError, match=r"n_refs=2 needs distractors='random'"):
        MultiRefTrainDataset(cufed_root, n_refs=2, lr_patch_size=P, distractors="none")
    with pytest.raises(ValueError, match=r"n_refs=5 needs 4 distractor.*only 3"):
        MultiRefTrainDataset(cufed_root, n_refs=5, lr_patch_size=P, distractor_dir=extra)
    with pytest.raises(ValueError, match=r"n_refs=6 needs 5 distractor.*other pairs.*only 4"):
        MultiRefTrainDataset(cufed_root, n_refs=6, lr_patch_size=P)


@pytest.mark.parametrize("degradation", ["pil", "matlab"])
def test_lr_hr_share_the_augmentation(cufed_root: Path, degradation: str) -> None:
    ds = MultiRefTrainDataset(cufed_root, n_refs=2, lr_patch_size=P, degradation=degradation, ref_augment="same")
    seen = set()
    for seed in range(16):
        index = seed % 5
        prm = ds.sample_params(index, seed)
        item = ds.sample(index, seed)
        top, left, flips = prm["crop_top"], prm["crop_left"], prm["flips"]
        crop = _chw(read_image_uint8(ds.records[index].hr_path)[top : top + 32, left : left + 32])
        lr = pil_bicubic_resize(crop, (P, P)) if degradation == "pil" else imresize(crop, size=(P, P)).float() / 255
        assert torch.equal(item["hr"], apply_augment(crop.float() / 255.0, *flips))
        assert torch.equal(item["lr"], apply_augment(lr, *flips))  # LR = degraded HR crop, same flips
        assert prm["ref_flips"] == [flips, flips]  # ref_augment="same"
        own = _float(cufed_root / "ref" / f"{item['name']}.png")
        assert torch.equal(item["refs"][0], apply_augment(own, *flips))
        seen.add(flips)
    assert len(seen) >= 4  # the flips really vary


def test_reference_augmentation_modes(cufed_root: Path) -> None:
    independent = MultiRefTrainDataset(cufed_root, n_refs=3, lr_patch_size=P)
    params = [independent.sample_params(s % 5, s) for s in range(20)]
    assert any(p["ref_flips"][0] != p["flips"] for p in params)
    assert any(p["ref_flips"][1] != p["ref_flips"][2] for p in params)  # a draw per reference
    frozen = MultiRefTrainDataset(cufed_root, n_refs=3, lr_patch_size=P, ref_augment="none")
    assert all(f == (False, False, False) for s in range(20) for f in frozen.sample_params(s % 5, s)["ref_flips"])


def test_ref_patch_size_crops_every_reference(cufed_root: Path) -> None:
    ds = MultiRefTrainDataset(cufed_root, n_refs=3, lr_patch_size=P, ref_patch_size=16, ref_augment="none")
    for seed in range(6):
        prm = ds.sample_params(seed % 5, seed)
        item = ds.sample(seed % 5, seed)
        assert [tuple(r.shape) for r in item["refs"]] == [(3, 16, 16)] * 3
        top, left, h, w = prm["ref_crops"][0]
        own = _float(cufed_root / "ref" / f"{item['name']}.png")
        assert (h, w) == (16, 16) and torch.equal(item["refs"][0], own[:, top : top + 16, left : left + 16])
    with pytest.raises(ValueError, match="ref_patch_size=8 is smaller than min_ref_size=12"):
        MultiRefTrainDataset(cufed_root, lr_patch_size=P, ref_patch_size=8)


def test_items_are_a_function_of_the_sample_seed(cufed_root: Path) -> None:
    ds = MultiRefTrainDataset(cufed_root, n_refs=3, lr_patch_size=P, repeat=2)
    assert len(ds) == 10
    a, b, c = ds[(7, 123)], ds[(7, 123)], ds[(2, 124)]
    assert a["name"] == "p002" and a["ref_names"] == b["ref_names"]
    assert torch.equal(a["lr"], b["lr"]) and all(torch.equal(x, y) for x, y in zip(a["refs"], b["refs"], strict=True))
    assert not torch.equal(a["hr"], c["hr"]) or a["ref_names"] != c["ref_names"]
    assert ds[3]["lr"].shape == (3, P, P)  # plain integer index: fallback stream
    with pytest.raises(IndexError):
        ds[10]


def test_train_errors(cufed_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"CUFED root folder not found: .*nowhere"):
        MultiRefTrainDataset(tmp_path / "nowhere", lr_patch_size=P)
    with pytest.raises(ValueError, match=r"CUFED input .*p000\.png is 48x48.*HR patch 64x64"):
        MultiRefTrainDataset(cufed_root, lr_patch_size=16)
    with pytest.raises(ValueError, match="unknown layout 'cufed5'; allowed layouts: cufed, samples"):
        MultiRefTrainDataset(cufed_root, layout="cufed5")
    with pytest.raises(ValueError, match="scale must be 4"):
        MultiRefTrainDataset(cufed_root, scale=2)
    _save(cufed_root / "ref" / "p001.png", _image(40, 10, seed=3))
    with pytest.raises(ValueError, match=r"sample 'p001': reference .*p001\.png is 40x10.*min_ref_size=12"):
        MultiRefTrainDataset(cufed_root, lr_patch_size=P)
    (cufed_root / "ref" / "p003.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"CUFED input 'p003\.png' has no matching reference: .*ref/p003\.png"):
        MultiRefTrainDataset(cufed_root, lr_patch_size=P)


def test_collate_errors_on_mixed_sizes() -> None:
    item = {"lr": torch.zeros(3, 4, 4), "hr": torch.zeros(3, 16, 16), "refs": [], "name": "a", "ref_names": []}
    other = {**item, "lr": torch.zeros(3, 4, 5)}
    with pytest.raises(ValueError, match=r"'lr' tensors differ in size.*batch_size 1"):
        collate_multiref([item, other])
    with pytest.raises(ValueError, match="at least one item"):
        collate_multiref([])


# ---------------------------------------------------------------------------------------------------- evaluation
def test_cufed5_n_refs_and_ref_levels(tmp_path: Path) -> None:
    root = _cufed5(tmp_path / "CUFED5")
    ds = MultiRefEvalDataset("cufed5", root, n_refs=2)
    assert len(ds) == 2 and ds.name == "CUFED5"
    item = ds[1]
    assert item["name"] == "001" and item["ref_names"] == ["001_1", "001_2"]
    assert item["hr"].shape == (3, 32, 40) and item["lr"].shape == (3, 8, 10)  # HR modcropped to 4
    hr_u8 = _chw(read_image_uint8(root / "001_0.png")[:32, :40])
    assert torch.equal(item["hr"], hr_u8.float() / 255.0)
    assert torch.equal(item["lr"], pil_bicubic_resize(hr_u8, (8, 10)))  # PIL bicubic of the modcropped HR
    assert torch.equal(item["refs"][1], _float(root / "001_2.png")) and item["refs"][1].shape == (3, 24, 26)
    ds.set_n_refs(5)
    assert ds[0]["ref_names"] == ["000_1", "000_2", "000_3", "000_4", "000_5"]
    single = MultiRefEvalDataset("cufed5", root, n_refs=4, ref_levels=[3])
    assert single.n_refs == 1 and single[0]["ref_names"] == ["000_3"]
    assert torch.equal(single[0]["refs"][0], _float(root / "000_3.png"))
    single.set_n_refs(2)  # the levels are fixed
    assert single[0]["ref_names"] == ["000_3"]
    assert MultiRefEvalDataset("cufed5", root, ref_levels=[4, 2])[1]["ref_names"] == ["001_4", "001_2"]
    matlab = MultiRefEvalDataset("cufed5", root, n_refs=1, degradation="matlab")
    assert torch.equal(matlab[1]["lr"], imresize(hr_u8, size=(8, 10)).float() / 255.0)


def test_cufed5_errors(tmp_path: Path) -> None:
    root = _cufed5(tmp_path / "CUFED5", levels=3)
    with pytest.raises(ValueError, match=r"sample '000' has 3 reference\(s\) \(000_1\.png, 000_2\.png, 000_3\.png\) "):
        MultiRefEvalDataset("cufed5", root, n_refs=4)
    with pytest.raises(FileNotFoundError, match=r"sample '000': reference level\(s\) \[5\].*000_5\.png"):
        MultiRefEvalDataset("cufed5", root, ref_levels=[1, 5])
    with pytest.raises(ValueError, match=r"ref_levels must be .* in 1\.\.5"):
        MultiRefEvalDataset("cufed5", root, ref_levels=[0])
    _save(root / "002_0.png", _image(20, 20))
    with pytest.raises(ValueError, match=r"sample '002' has no reference images: expected 002_1\.png"):
        MultiRefEvalDataset("cufed5", root, n_refs=1)
    _save(root / "002_1.png", _image(11, 30))
    with pytest.raises(ValueError, match=r"sample '002': reference .*002_1\.png is 11x30.*min_ref_size=12"):
        MultiRefEvalDataset("cufed5", root, n_refs=1)
    assert len(MultiRefEvalDataset("cufed5", root, n_refs=1, min_ref_size=8)) == 3
    with pytest.raises(
        FileNotFoundError, match=r"CUFED5 root folder not found: .*missing \(expected <root>/NNN_0\.png"
    ):
        MultiRefEvalDataset("cufed5", tmp_path / "missing")


def test_sun80_layout_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "Sun80"
    for k, name in enumerate(["Sun_aaa", "Sun_bbb"]):
        _save(root / "Sun_Hays_SR_groundtruth" / f"{name}.jpg", _image(40, 44, seed=k))
        for ref in ("z", "a", "m"):
            _save(root / "Sun_Hays_SR_scenematches" / name / f"{ref}.jpg", _image(24, 28, seed=ord(ref)))
    ds = MultiRefEvalDataset("sun80", root, n_refs=2)
    item = ds[0]
    assert item["name"] == "Sun_aaa" and item["ref_names"] == ["a", "m"]  # sorted by file name, first n_refs
    assert item["hr"].shape == (3, 40, 44) and item["lr"].shape == (3, 10, 11) and item["refs"][0].shape == (3, 24, 28)
    with pytest.raises(
        ValueError,
        match=r"sun80 set 'Sun80': sample 'Sun_aaa' has 3 reference\(s\) \(a\.jpg, m\.jpg, z\.jpg\) but n_refs=4",
    ):
        ds.set_n_refs(4)
    _save(root / "Sun_Hays_SR_groundtruth" / "Sun_ccc.jpg", _image(40, 44))
    with pytest.raises(FileNotFoundError, match=r"Sun80 image 'Sun_ccc' .*no scene-match folder: .*Sun_ccc"):
        MultiRefEvalDataset("sun80", root, n_refs=1)
    (root / "Sun_Hays_SR_scenematches" / "Sun_ccc").mkdir()
    with pytest.raises(ValueError, match=r"Sun80 image 'Sun_ccc' has no reference images"):
        MultiRefEvalDataset("sun80", root, n_refs=1)


def test_folder_layout_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    _save(root / "scene" / "hr.png", _image(36, 40))
    _save(root / "scene" / "refs" / "01_far.png", _image(20, 30, seed=1))
    _save(root / "scene" / "refs" / "00_near.png", _image(30, 20, seed=2))
    ds = MultiRefEvalDataset("folder", root, n_refs=2)
    item = collate_multiref([ds[0]])
    assert item["name"] == ["scene"] and item["ref_names"] == [["00_near", "01_far"]]
    assert item["lr"].shape == (1, 3, 9, 10) and [tuple(r.shape) for r in item["refs"][0]] == [(3, 30, 20), (3, 20, 30)]
    with pytest.raises(ValueError, match=r"unknown layout 'cufed'; allowed layouts: cufed5, sun80, folder, samples"):
        MultiRefEvalDataset("cufed", root)
    with pytest.raises(ValueError, match="ref_levels is a CUFED5 option"):
        MultiRefEvalDataset("folder", root, n_refs=1, ref_levels=[1])
    (root / "empty" / "refs").mkdir(parents=True)
    _save(root / "empty" / "hr.png", _image(36, 40))
    with pytest.raises(ValueError, match=r"sample 'empty' has no reference images: .*empty/refs"):
        MultiRefEvalDataset("folder", root, n_refs=1)
    (root / "empty" / "hr.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"sample 'empty' has no HR image: expected .*empty/hr\.png"):
        MultiRefEvalDataset("folder", root, n_refs=1)


# ---------------------------------------------------------------------------------------------------- samples
def test_samples_materialisation(samples_root: Path) -> None:
    base = samples_root / "multiref"
    inputs = sorted(p.name for p in (base / "train" / "input").iterdir())
    assert len(inputs) == 54 and inputs == sorted(p.name for p in (base / "train" / "ref").iterdir())
    assert {image_size(base / "train" / "input" / n) for n in inputs} == {(160, 160)}
    ref_sizes = {n: image_size(base / "train" / "ref" / n) for n in ("l2r_y070_x210.png", "l2r_y000_x000.png")}
    assert ref_sizes == {"l2r_y070_x210.png": (160, 240), "l2r_y000_x000.png": (160, 160)}  # clipped at the border
    assert image_size(base / "train" / "ref" / "r2l_y140_x560.png") == (160, 181)
    distractors = sorted((base / "distractors").iterdir())
    assert len(distractors) == 7 and {image_size(p) for p in distractors} == {(160, 200)}  # n_refs up to 8
    immuno = load_sample("immunohistochemistry")
    assert np.array_equal(read_image_uint8(base / "distractors" / "immunohistochemistry_tl.png"), immuno[:160, :200])

    left, right = load_sample("motorcycle_left"), load_sample("motorcycle_right")
    val = base / "val"
    assert sorted(p.name for p in val.iterdir()) == ["motorcycle_l2r", "motorcycle_r2l"]
    refs = sorted(p.name for p in (val / "motorcycle_l2r" / "refs").iterdir())
    assert refs[:4] == ["00_right.png", "01_astronaut.png", "02_chelsea.png", "03_coffee.png"]  # the true ref first
    assert refs[4:] == ["04_astronaut_tl.png", "05_chelsea_tl.png", "06_coffee_tl.png", "07_astronaut_br.png"]
    astronaut = load_sample("astronaut")
    assert np.array_equal(
        read_image_uint8(val / "motorcycle_l2r" / "refs" / "01_astronaut.png"), astronaut[232:280, 234:277]
    )
    assert np.array_equal(
        read_image_uint8(val / "motorcycle_r2l" / "refs" / "04_astronaut_tl.png"), astronaut[:48, :43]
    )
    assert np.array_equal(
        read_image_uint8(val / "motorcycle_r2l" / "refs" / "07_astronaut_br.png"), astronaut[-48:, -43:]
    )
    hr = read_image_uint8(val / "motorcycle_l2r" / "hr.png")
    assert np.array_equal(hr, left[300:348, 200:264])
    assert np.array_equal(read_image_uint8(val / "motorcycle_l2r" / "refs" / "00_right.png"), right[300:348, 120:264])
    assert np.array_equal(read_image_uint8(val / "motorcycle_r2l" / "hr.png"), right[300:348, 120:184])
    assert np.array_equal(read_image_uint8(val / "motorcycle_r2l" / "refs" / "00_left.png"), left[300:348, 120:264])
    assert image_size(val / "motorcycle_r2l" / "refs" / "02_chelsea.png") == (48, 43)

    # The stereo view holds the HR content (a shift within the disparity margin), the distractors do not.
    patch = hr[:, 16:48].astype(np.float32)

    def best_error(ref: np.ndarray) -> float:
        ref = ref.astype(np.float32)
        return min(float(np.abs(ref[:, x : x + 32] - patch).mean()) for x in range(ref.shape[1] - 31))

    true_error = best_error(read_image_uint8(val / "motorcycle_l2r" / "refs" / "00_right.png"))
    other_error = min(best_error(read_image_uint8(val / "motorcycle_l2r" / "refs" / n)) for n in refs[1:])
    assert true_error < 0.5 * other_error

    before = {p: p.stat().st_mtime_ns for p in base.rglob("*.png")}
    start = time.perf_counter()
    dirs = materialize_multiref_samples(samples_root, val_size=VAL_SIZE)
    assert time.perf_counter() - start < 0.5 and dirs["val"] == val and dirs["train"] == base / "train"
    assert materialize_multiref_samples(samples_root)["val"] == val  # None accepts the existing set
    assert {p: p.stat().st_mtime_ns for p in base.rglob("*.png")} == before  # nothing rewritten
    with pytest.raises(ValueError, match=r"val_size=\[250, 64\] does not fit"):
        materialize_multiref_samples(samples_root, val_size=(250, 64))


def test_samples_rewritten_when_incomplete(tmp_path: Path) -> None:
    root = tmp_path / "samples"
    materialize_multiref_samples(root, val_size=(32, 48))
    hr = root / "multiref" / "val" / "motorcycle_r2l" / "hr.png"
    assert image_size(hr) == (32, 48)
    hr.unlink()
    materialize_multiref_samples(root, val_size=(32, 48))
    assert image_size(hr) == (32, 48)
    materialize_multiref_samples(root, val_size=(36, 48))  # another size: rewritten
    assert image_size(hr) == (36, 48)


def test_samples_of_an_older_version_are_rewritten(tmp_path: Path) -> None:
    """A set materialised by version 1 (6 training / 3 validation distractors, manifest version 1) is not taken as
    complete: the next materialisation (which every ``samples`` dataset runs first) writes version 2 (7 + 7
    distractors, n_refs up to 8) and keeps the first 4 references as they were."""
    import json

    root = tmp_path / "samples"
    dirs = materialize_multiref_samples(root, val_size=(32, 48))
    refs = dirs["val"] / "motorcycle_l2r" / "refs"
    first4 = {p.name: read_image_uint8(p) for p in sorted(refs.iterdir())[:4]}
    manifest = dirs["root"] / "sresolve_multiref.json"
    old = json.loads(manifest.read_text())
    assert old["version"] == 2
    # what version 1 left: no 7th training distractor, no 04-07 validation distractors, a version-1 manifest
    removed = [*sorted(refs.iterdir())[4:], dirs["distractors"] / "immunohistochemistry_tl.png"]
    for path in [*removed, dirs["val"] / "motorcycle_r2l" / "refs" / "05_chelsea_tl.png"]:
        path.unlink()
    old["version"] = 1
    old["files"] = {k: v for k, v in old["files"].items() if not k.endswith(("_tl.png", "_br.png"))}
    manifest.write_text(json.dumps(old))
    ds = MultiRefEvalDataset("samples", root, n_refs=8)  # the datasets materialise first: the set is rewritten
    assert json.loads(manifest.read_text())["version"] == 2 and all(p.is_file() for p in removed)
    assert len(ds[0]["refs"]) == 8 and ds[0]["ref_names"][4:] == [
        "04_astronaut_tl",
        "05_chelsea_tl",
        "06_coffee_tl",
        "07_astronaut_br",
    ]
    assert {p.name: read_image_uint8(p) for p in sorted(refs.iterdir())[:4]}.keys() == first4.keys()
    for name, img in first4.items():
        assert np.array_equal(read_image_uint8(refs / name), img)


# ---------------------------------------------------------------------------------------------------- data module
def test_datamodule_on_samples(samples_root: Path) -> None:
    dm = MultiRefSRDataModule(samples_root=samples_root, n_refs=4, lr_patch_size=40, batch_size=4, num_workers=0)
    assert dm.val_names == ["samples"] == dm.test_names and dm.train_spec == {"layout": "samples", "root": samples_root}
    dm.trainer = _fake_trainer(2, rank=1)  # type: ignore[assignment]
    dm.setup("fit")
    assert dm.per_device_batch_size == 2
    loader = dm.train_dataloader()
    assert len(loader) == 13  # 54 pairs, 27 per rank, batches of 2
    batch = next(iter(loader))
    assert batch["lr"].shape == (2, 3, 40, 40) and batch["hr"].shape == (2, 3, 160, 160)
    distractor_names = {"rocket", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "logo"}
    distractor_names.add("immunohistochemistry_tl")
    for name, ref_names, refs in zip(batch["name"], batch["ref_names"], batch["refs"], strict=True):
        assert ref_names[0] == name and set(ref_names[1:]) <= distractor_names and len(refs) == 4
        assert sorted(refs[0].shape[1:]) in ([160, 160], [160, 181], [160, 230], [160, 240])
    resumed = MultiRefSRDataModule(samples_root=samples_root, lr_patch_size=40, batch_size=4, num_workers=0)
    resumed.trainer = _fake_trainer(2, rank=1, step=2)  # type: ignore[assignment]
    resumed.setup("fit")
    third = next(iter(resumed.train_dataloader()))
    fresh = iter(dm.train_dataloader())
    next(fresh), next(fresh)
    expected = next(fresh)
    assert third["name"] == expected["name"] and torch.equal(third["hr"], expected["hr"])  # resumes mid-epoch

    val_loaders = dm.val_dataloader()
    assert len(val_loaders) == 1 and len(val_loaders[0]) == 1  # rank 1 of 2: the second image only
    item = next(iter(val_loaders[0]))
    assert item["name"] == ["motorcycle_r2l"]
    assert item["ref_names"] == [["00_left", "01_astronaut", "02_chelsea", "03_coffee"]]
    assert item["lr"].shape == (1, 3, 12, 16) and item["hr"].shape == (1, 3, 48, 64)
    assert item["refs"][0][0].shape == (3, 48, 144)
    dm.set_n_refs(1)
    assert [len(r) for r in next(iter(dm.val_dataloader()[0]))["refs"]] == [1]
    assert dm.eval_n_refs == 1 and dm.train_set is not None and dm.train_set.n_refs == 4  # training unaffected
    dm.set_n_refs(8)  # supp. Table 3's largest N_M: the stereo view + 7 distractors, the first 4 as with n_refs=4
    names8 = next(iter(dm.val_dataloader()[0]))["ref_names"][0]
    assert names8[:4] == ["00_left", "01_astronaut", "02_chelsea", "03_coffee"] and len(names8) == 8
    with pytest.raises(ValueError, match=r"sample 'motorcycle_l2r' has 8 reference\(s\).*n_refs=9"):
        dm.set_n_refs(9)
    dm.train_set.set_n_refs(8)  # training: 1 own + 7 distractors, all of the pool
    assert sorted(dm.train_set.sample(0, 0)["ref_names"][1:]) == sorted(distractor_names)
    with pytest.raises(ValueError, match=r"n_refs=9 needs 8 distractor.*only 7"):
        dm.train_set.set_n_refs(9)


def test_datamodule_sets_and_errors(tmp_path: Path, cufed_root: Path) -> None:
    cufed5 = _cufed5(tmp_path / "CUFED5")
    dm = MultiRefSRDataModule(
        train={"layout": "cufed", "root": str(cufed_root), "repeat": 2},
        val={
            "CUFED5": {"layout": "cufed5", "root": str(cufed5)},
            "L3": {"layout": "cufed5", "root": str(cufed5), "ref_levels": [3]},
        },
        n_refs=2,
        lr_patch_size=P,
        batch_size=2,
        num_workers=0,
    )
    assert dm.val_names == dm.test_names == ["CUFED5", "L3"]
    dm.setup()
    assert dm.train_set is not None and len(dm.train_set) == 10
    batch = next(iter(dm.train_dataloader()))
    assert batch["lr"].shape == (2, 3, P, P) and [len(r) for r in batch["refs"]] == [2, 2]
    first = [next(iter(dl))["ref_names"] for dl in dm.test_dataloader()]
    assert first == [[["000_1", "000_2"]], [["000_3"]]]
    with pytest.raises(FileNotFoundError, match="CUFED root folder not found"):
        MultiRefSRDataModule(train={"layout": "cufed", "root": str(tmp_path / "no")}, lr_patch_size=P).setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"val": {"A": {"layout": "div2k", "root": "x"}}},
            r"data\.val\.A\.layout: unknown layout 'div2k'; "
            "allowed layouts: cufed5, sun80, folder, samples",
        ),
        ({"train": {"layout": "folder", "root": "x"}}, r"data\.train\.layout: .*allowed layouts: cufed, samples"),
        ({"train": {"root": "x"}}, r"data\.train\.layout is required"),
        ({"val": {"A": {"layout": "sun80"}}}, r"data\.val\.A\.root is required"),
        ({"val": {"A": {"layout": "sun80", "root": "x", "ref_levels": [1]}}}, r"data\.val\.A\.ref_levels is a cufed5"),
        ({"val": {"A": {"layout": "cufed5", "root": "x", "hr_dir": "y"}}}, r"data\.val\.A: unknown key"),
        ({"train": {"layout": "cufed", "root": "x", "repeat": 0}}, r"data\.train\.repeat"),
        ({"scale": 2}, r"data\.scale must be 4"),
        ({"n_refs": 0}, r"data\.n_refs"),
        ({"degradation": "area"}, r"data\.degradation must be one of \['pil', 'matlab'\]"),
        ({"ref_augment": "mixed"}, r"data\.ref_augment"),
        ({"distractors": "all"}, r"data\.distractors"),
    ],
)
def test_datamodule_config_errors_name_the_key(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MultiRefSRDataModule(**kwargs)


# ---------------------------------------------------------------------------------------------------- configs
def test_hydra_configs_instantiate(samples_root: Path, tmp_path: Path) -> None:
    from conftest import compose_cfg

    data_dir = samples_root.parent
    expected = {
        "samples_multiref": ["samples"],
        "cufed": ["CUFED5"],
        "cufed5": ["CUFED5"],
        "sun80": ["Sun80"],
        "multiref_folder": ["multiref"],
    }
    for name, val_names in expected.items():
        overrides = [f"data={name}", "model=safmn", "data.lr_patch_size=40", "data.batch_size=2"]
        dm = instantiate(compose_cfg("train", overrides, tmp_path / name, data_dir=data_dir).data)
        assert isinstance(dm, MultiRefSRDataModule) and dm.n_refs == 4 and dm.scale == 4 and dm.degradation == "pil"
        assert dm.val_names == val_names == dm.test_names and dm.name == name
    assert dm.val_specs["multiref"] == {"layout": "folder", "root": data_dir / "multiref"}
    cufed = instantiate(compose_cfg("train", ["data=cufed"], tmp_path / "c", data_dir=data_dir).data)
    assert cufed.train_spec == {"layout": "cufed", "root": data_dir / "CUFED" / "train", "repeat": 1}
    assert cufed.val_specs["CUFED5"] == {"layout": "cufed5", "root": data_dir / "CUFED" / "test" / "CUFED5"}
    sun80 = instantiate(compose_cfg("test", ["data=sun80", "ckpt=x"], tmp_path / "s", data_dir=data_dir).data)
    assert sun80.train_spec is None and sun80.test_specs["Sun80"]["layout"] == "sun80"
    samples = instantiate(
        compose_cfg(
            "train",
            ["data=samples_multiref", "data.lr_patch_size=40", "data.num_workers=0"],
            tmp_path / "m",
            data_dir=data_dir,
        ).data
    )
    samples.setup("validate")
    item = samples.val_sets["samples"][0]
    assert item["name"] == "motorcycle_l2r" and len(item["refs"]) == 4 and item["hr"].shape == (3, *VAL_SIZE)
