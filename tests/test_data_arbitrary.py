"""Tests for the arbitrary-scale SR data pipeline (EQSR): pil_bicubic_resize, the random-scale training items, the
arbitrary-scale evaluation protocol and the two data modules (spec archs_eqsr_amrsr.md A7, A9)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader

from sresolve.data.arbitrary import (
    ArbitraryScaleBenchmarkDataModule,
    ArbitraryScaleBenchmarkDataset,
    ArbitraryScaleSRDataModule,
    ArbitraryScaleTrainDataset,
)
from sresolve.data.datasets import BenchmarkDataset
from sresolve.data.degradation import imresize, pil_bicubic_resize
from sresolve.data.io import read_image_uint8
from sresolve.data.transforms import apply_augment
from sresolve.ops.coords import make_coord

P = 48


# ---------------------------------------------------------------------------------------------------- helpers
def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradient + noise, so that resizes are not trivially equal."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([yy * 255.0 / h, xx * 255.0 / w, (yy + xx) * 127.0 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def train_dir(tmp_path: Path) -> Path:
    for i, (h, w) in enumerate([(200, 200), (210, 230), (200, 260)]):
        _save(tmp_path / "train" / f"img{i}.png", _image(h, w, seed=i))
    return tmp_path / "train"


def _eval_set(root: Path, name: str, sizes: list[tuple[int, int]]) -> Path:
    for i, (h, w) in enumerate(sizes):
        _save(root / name / "HR" / f"{name.lower()}_{i}.png", _image(h, w, seed=10 + i))
    return root / name / "HR"


def _pil_reference(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)


def _fake_trainer(world: int, rank: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        world_size=world,
        global_rank=rank,
        global_step=0,
        accumulate_grad_batches=1,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=False),
    )


# ---------------------------------------------------------------------------------------------------- pil resize
def test_pil_bicubic_resize_equals_pillow() -> None:
    arr = _image(37, 29, seed=3)
    for size in [(15, 11), (16, 12), (80, 70)]:  # shrink by a non-integer factor, shrink, enlarge
        ref = _pil_reference(arr, size).astype(np.float32) / 255.0
        out_np = pil_bicubic_resize(arr, size)
        out_t = pil_bicubic_resize(_chw(arr), size)
        assert out_np.shape == out_t.shape == (3, *size) and out_np.dtype == torch.float32
        assert torch.equal(out_np, torch.from_numpy(ref).permute(2, 0, 1))
        assert torch.equal(out_np, out_t)
    # Float input: the uint8 -> /255 -> ToPILImage round trip is exact, so it equals the uint8 path.
    assert torch.equal(pil_bicubic_resize(_chw(arr).float() / 255.0, (15, 11)), pil_bicubic_resize(arr, (15, 11)))
    # ... and truncates like ToPILImage's mul(255).byte(): 200.9/255 -> 200 (rounding would give 201).
    flat = torch.full((3, 8, 8), 200.9 / 255.0)
    assert torch.all(pil_bicubic_resize(flat, (3, 5)) * 255.0 == 200.0)
    # Gray numpy (H, W) -> (1, h, w); a non-integer scale gives the requested size.
    gray = arr[:, :, 0]
    out = pil_bicubic_resize(gray, (16, 13))
    ref_gray = np.array(Image.fromarray(gray).resize((13, 16), Image.Resampling.BICUBIC))
    assert out.shape == (1, 16, 13) and torch.equal(out[0] * 255.0, torch.from_numpy(ref_gray).float())
    assert torch.equal(pil_bicubic_resize(arr, (37, 29)) * 255.0, _chw(arr).float())  # same size = unchanged


def test_pil_bicubic_resize_matches_torchvision_pipeline() -> None:
    tv = pytest.importorskip("torchvision.transforms")
    img = _chw(_image(61, 53, seed=4)).float() / 255.0
    official = tv.ToTensor()(tv.Resize((23, 20), tv.InterpolationMode.BICUBIC)(tv.ToPILImage()(img)))
    assert torch.equal(pil_bicubic_resize(img, (23, 20)), official)


def test_pil_bicubic_resize_errors() -> None:
    arr = _image(10, 10)
    with pytest.raises(ValueError, match="size"):
        pil_bicubic_resize(arr, (0, 4))
    with pytest.raises(ValueError, match="size"):
        pil_bicubic_resize(arr, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        pil_bicubic_resize(arr.astype(np.float32), (4, 4))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        pil_bicubic_resize(torch.zeros(4, 5, 5, dtype=torch.uint8), (2, 2))
    with pytest.raises(ValueError, match="dtype"):
        pil_bicubic_resize(torch.zeros(3, 5, 5, dtype=torch.int32), (2, 2))


# ---------------------------------------------------------------------------------------------------- training
def test_train_item_shapes_and_dtypes(train_dir: Path) -> None:
    ds = ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, repeat=2)
    assert len(ds) == 6 and ds.max_hr_side == 192 and ds.min_side == 192
    item = ds[(4, 123)]
    assert set(item) == {"lr", "hr", "coord", "cell", "scale", "path"}
    assert item["lr"].shape == item["hr"].shape == (3, P, P)
    assert item["coord"].shape == (P, P, 2)
    assert item["cell"].shape == item["scale"].shape == ()
    for key in ("lr", "hr", "coord", "cell", "scale"):
        assert item[key].dtype == torch.float32, key
    assert item["path"] == str(ds.hr_paths[1])
    assert float(item["lr"].min()) >= 0.0 and float(item["lr"].max()) <= 1.0
    assert torch.equal(item["lr"] * 255.0, (item["lr"] * 255.0).round())  # 8-bit levels
    assert item["coord"].abs().max() < 1.0


def test_scale_draws_cover_the_range_and_cell_matches(train_dir: Path) -> None:
    ds = ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, use_hflip=False, use_rot=False)
    drawn, eff = [], []
    for seed in range(200):
        prm = ds.sample_params(seed % 3, seed)
        item = ds.sample(seed % 3, seed)
        s, side = prm["drawn_scale"], prm["hr_side"]
        assert 1.0 <= s <= 4.0 and side == round(P * s)
        assert float(item["cell"]) == pytest.approx(2.0 / side, rel=1e-6)
        assert float(item["scale"]) == pytest.approx(side / P, rel=1e-6)
        assert float(item["cell"]) * float(item["scale"]) == pytest.approx(2.0 / P, rel=1e-6)
        drawn.append(s)
        eff.append(float(item["scale"]))
    assert min(drawn) < 1.3 and max(drawn) > 3.7
    assert min(eff) >= 1.0 and max(eff) <= 4.0
    assert len({round(e * P) for e in eff}) > 60  # many distinct crop sides


def test_lr_is_the_resize_of_the_hr_crop_and_hr_the_window(train_dir: Path) -> None:
    for degradation in ("pil", "matlab"):
        ds = ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, degradation=degradation)
        for seed in range(12):
            idx = seed % 3
            prm = ds.sample_params(idx, seed)
            item = ds.sample(idx, seed)
            img = read_image_uint8(ds.hr_paths[idx])
            side, top, left = prm["hr_side"], prm["crop_top"], prm["crop_left"]
            crop = img[top : top + side, left : left + side]
            if degradation == "pil":
                lr = torch.from_numpy(_pil_reference(crop, (P, P)).copy()).permute(2, 0, 1).float() / 255.0
            else:
                lr = imresize(_chw(crop), size=(P, P)).float() / 255.0
            hr = _chw(crop).float() / 255.0
            flags = prm["flips"]
            lr, hr = apply_augment(lr, *flags), apply_augment(hr, *flags)
            wt, wl = prm["window_top"], prm["window_left"]
            assert torch.equal(item["lr"], lr), (degradation, seed)
            assert torch.equal(item["hr"], hr[:, wt : wt + P, wl : wl + P]), (degradation, seed)
            assert torch.equal(item["coord"], make_coord((side, side))[wt : wt + P, wl : wl + P])


def test_query_window_larger_than_the_lr_patch(train_dir: Path) -> None:
    ds = ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, scale_range=(2.0, 3.0), query_size=2 * P)
    for seed in range(6):
        prm, item = ds.sample_params(seed % 3, seed), ds.sample(seed % 3, seed)
        side, wt, wl = prm["hr_side"], prm["window_top"], prm["window_left"]
        assert item["lr"].shape == (3, P, P) and item["hr"].shape == (3, 2 * P, 2 * P)
        assert 0 <= wt <= side - 2 * P and 0 <= wl <= side - 2 * P
        assert torch.equal(item["coord"], make_coord((side, side))[wt : wt + 2 * P, wl : wl + 2 * P])
    with pytest.raises(ValueError, match="query_size=97 must fit the smallest HR square"):
        ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, scale_range=(2.0, 3.0), query_size=2 * P + 1)


def test_coord_window_at_the_crop_top_left(train_dir: Path) -> None:
    ds = ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, scale_range=(1.05, 1.05))  # side round(50.4) = 50
    seed = next(
        s
        for s in range(1000)
        if ds.sample_params(0, s)["window_top"] == 0 and ds.sample_params(0, s)["window_left"] == 0
    )
    item = ds.sample(0, seed)
    assert float(item["cell"]) == pytest.approx(2.0 / 50)
    assert item["coord"][0, 0].tolist() == pytest.approx([-1.0 + 1.0 / 50, -1.0 + 1.0 / 50])
    assert item["coord"][-1, -1].tolist() == pytest.approx([-1.0 + 95.0 / 50, -1.0 + 95.0 / 50])
    # Rows vary along y (last axis index 0), columns along x; steps are 2 / w_hr.
    assert torch.allclose(item["coord"][1:, :, 0] - item["coord"][:-1, :, 0], torch.tensor(2.0 / 50))
    assert torch.all(item["coord"][:, 1:, 0] == item["coord"][:, :-1, 0])
    # scale_range (1, 1): the window is the whole crop and LR == HR.
    one = ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, scale_range=(1, 1))[(0, 5)]
    assert torch.equal(one["lr"], one["hr"]) and torch.equal(one["coord"], make_coord((P, P)))


def test_determinism_and_cache(train_dir: Path) -> None:
    cached = ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, cache=True, seed=3)
    plain = ArbitraryScaleTrainDataset(train_dir, lr_patch_size=P, cache=False, seed=3)
    a, b, c = cached[(2, 77)], plain[(2, 77)], cached[(2, 78)]
    for key in ("lr", "hr", "coord", "cell", "scale"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["lr"], c["lr"]) and float(a["scale"]) != float(c["scale"])


def test_loader_batch_mixes_scales(train_dir: Path) -> None:
    dm = ArbitraryScaleSRDataModule(train={"hr_dirs": str(train_dir), "repeat": 4}, batch_size=8, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lr"].shape == batch["hr"].shape == (8, 3, P, P)
    assert batch["coord"].shape == (8, P, P, 2) and batch["cell"].shape == batch["scale"].shape == (8,)
    assert len(set(batch["scale"].tolist())) > 1
    assert torch.allclose(batch["cell"] * batch["scale"], torch.tensor(2.0 / P))
    again = next(iter(dm.train_dataloader()))  # the same seed: the same first batch
    assert torch.equal(batch["lr"], again["lr"])
    plain = next(iter(DataLoader(dm.train_set, batch_size=8)))  # stock loader, int indices
    assert plain["lr"].shape == (8, 3, P, P)


def test_small_images_error_or_skip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "mixed"
    _save(folder / "big.png", _image(200, 200))
    _save(folder / "edge.png", _image(193, 250))
    small = _save(folder / "small.png", _image(150, 300))
    with pytest.raises(ValueError, match=r"small\.png.*150x300.*192x192"):
        ArbitraryScaleTrainDataset(folder, lr_patch_size=P)
    with caplog.at_level(logging.INFO, logger="sresolve.data.arbitrary"):
        ds = ArbitraryScaleTrainDataset(folder, lr_patch_size=P, skip_small=True)
    assert ds.skipped == [small] and len(ds) == 2
    assert sum("skipped 1 of 3 images" in r.getMessage() for r in caplog.records) == 1
    # Official ImageNet filter: sides > 193 only.
    strict = ArbitraryScaleTrainDataset(folder, lr_patch_size=P, skip_small=True, min_size=194)
    assert [p.name for p in strict.hr_paths] == ["big.png"] and strict.min_side == 194
    # A smaller maximum scale needs smaller images: round(48 * 3) = 144.
    assert len(ArbitraryScaleTrainDataset(folder, lr_patch_size=P, scale_range=(1, 3))) == 3


def test_train_dataset_argument_errors(train_dir: Path) -> None:
    for bad, match in [
        ((0.5, 2.0), "scale_range"),
        ((3.0, 2.0), "scale_range"),
        ((1.0,), "scale_range"),
        ("1,4", "scale_range"),
        ((1.0, float("inf")), r"scale_range\[1\]"),
        ((True, 2.0), r"scale_range\[0\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            ArbitraryScaleTrainDataset(train_dir, scale_range=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="degradation"):
        ArbitraryScaleTrainDataset(train_dir, degradation="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr_quantize"):
        ArbitraryScaleTrainDataset(train_dir, lr_quantize=False)
    with pytest.raises(ValueError, match="min_size"):
        ArbitraryScaleTrainDataset(train_dir, min_size=0)
    with pytest.raises(ValueError, match="lr_patch_size"):
        ArbitraryScaleTrainDataset(train_dir, lr_patch_size=0)
    float_lr = ArbitraryScaleTrainDataset(train_dir, degradation="matlab", lr_quantize=False)[(0, 1)]["lr"]
    assert not torch.equal(float_lr * 255.0, (float_lr * 255.0).round())


# ---------------------------------------------------------------------------------------------------- evaluation
def test_noninteger_eval_sizes_and_lr(tmp_path: Path) -> None:
    hr_dir = _eval_set(tmp_path, "Tiny", [(101, 77)])
    hr_u8 = read_image_uint8(hr_dir / "tiny_0.png")
    ds = ArbitraryScaleBenchmarkDataset(hr_dir, 2.25)
    item = ds[0]
    assert set(item) == {"lr", "hr", "name", "dataset", "scale"}
    assert item["lr"].shape == (3, 44, 34) and item["hr"].shape == (3, 99, 76)  # round(76.5) = 76 (Python)
    assert item["name"] == "tiny_0" and item["dataset"] == "Tiny" and float(item["scale"]) == 2.25
    crop = hr_u8[:99, :76]
    assert torch.equal(item["hr"], _chw(crop).float() / 255.0)
    assert torch.equal(item["lr"], pil_bicubic_resize(crop, (44, 34)))
    for s, lr_hw, hr_hw in [(3.75, (26, 20), (98, 75)), (5.25, (19, 14), (100, 74))]:
        it = ArbitraryScaleBenchmarkDataset(hr_dir, s)[0]
        assert (tuple(it["lr"].shape[1:]), tuple(it["hr"].shape[1:])) == (lr_hw, hr_hw), s
    matlab = ArbitraryScaleBenchmarkDataset(hr_dir, 2.25, noninteger_degradation="matlab")[0]
    ref = imresize(_chw(crop).double() / 255.0, size=(44, 34))
    assert torch.equal(matlab["lr"], (torch.floor(ref.clamp(0, 1) * 255.0 + 0.5) / 255.0).float())
    # Integer scale on the resize path (official x6/x8 test sets): floor(101/3) = 33, floor(77/3) = 25.
    pil3 = ArbitraryScaleBenchmarkDataset(hr_dir, 3, integer_degradation="pil")[0]
    assert pil3["lr"].shape == (3, 33, 25) and pil3["hr"].shape == (3, 99, 75)
    assert torch.equal(pil3["lr"], pil_bicubic_resize(hr_u8[:99, :75], (33, 25)))


def test_integer_eval_equals_benchmark_dataset(tmp_path: Path) -> None:
    hr_dir = _eval_set(tmp_path, "Set5", [(101, 77), (64, 90)])
    for s in (2, 3.0):
        ours, ref = ArbitraryScaleBenchmarkDataset(hr_dir, s), BenchmarkDataset(hr_dir, int(s))
        assert len(ours) == len(ref) == 2 and ours.name == ref.name == "Set5"
        for i in range(2):
            a, b = ours[i], ref[i]
            assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"]) and a["name"] == b["name"]
            assert a["scale"].dtype == torch.float32 and float(a["scale"]) == float(s)
    # LR files in <set>/LR_bicubic/X2 are picked up like BenchmarkDataset does.
    lr_dir = tmp_path / "Set5" / "LR_bicubic" / "X2"
    for i, (h, w) in enumerate([(50, 38), (32, 45)]):
        _save(lr_dir / f"set5_{i}x2.png", _image(h, w, seed=50 + i))
    ours, ref = ArbitraryScaleBenchmarkDataset(hr_dir, 2), BenchmarkDataset(hr_dir, 2)
    assert (
        ours.lr_dir == lr_dir and torch.equal(ours[0]["lr"], ref[0]["lr"]) and torch.equal(ours[0]["hr"], ref[0]["hr"])
    )
    # lr_dir=False: MATLAB bicubic even when files exist.
    assert ArbitraryScaleBenchmarkDataset(hr_dir, 2, lr_dir=False).lr_dir is None


def test_eval_dataset_errors(tmp_path: Path) -> None:
    hr_dir = _eval_set(tmp_path, "Tiny", [(3, 40)])
    for bad in (1, 0.5, float("nan"), "2", True):
        with pytest.raises(ValueError, match="scale"):
            ArbitraryScaleBenchmarkDataset(hr_dir, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tiny_0\.png.*3x40.*scale 4\.5"):
        ArbitraryScaleBenchmarkDataset(hr_dir, 4.5)[0]
    with pytest.raises(ValueError, match=r"tiny_0\.png"):
        ArbitraryScaleBenchmarkDataset(hr_dir, 4)[0]
    with pytest.raises(ValueError, match="lr_dir"):
        ArbitraryScaleBenchmarkDataset(hr_dir, 2.5, lr_dir=tmp_path)
    with pytest.raises(ValueError, match="noninteger_degradation"):
        ArbitraryScaleBenchmarkDataset(hr_dir, 2.5, noninteger_degradation="area")  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        ArbitraryScaleBenchmarkDataset(hr_dir, 2.5)[1]


# ---------------------------------------------------------------------------------------------------- data modules
def test_datamodule_loaders_per_set_and_scale(tmp_path: Path, train_dir: Path) -> None:
    a = _eval_set(tmp_path / "bench", "A", [(60, 50), (41, 45)])
    b = _eval_set(tmp_path / "bench", "B", [(70, 66)])
    dm = ArbitraryScaleSRDataModule(
        train={"hr_dirs": [str(train_dir)], "repeat": 2},
        val={"A": {"hr_dir": str(a)}, "B": str(b)},
        val_scales=[2, 2.25, 3],
        test_scales=[4, 2.5],
        batch_size=4,
        num_workers=0,
    )
    assert dm.val_names == ["A_x2", "A_x2.25", "A_x3", "B_x2", "B_x2.25", "B_x3"]
    assert dm.val_scale_of == {"A_x2": 2.0, "A_x2.25": 2.25, "A_x3": 3.0, "B_x2": 2.0, "B_x2.25": 2.25, "B_x3": 3.0}
    assert dm.val_set_of["B_x2.25"] == "B"
    assert dm.test_names == ["A_x4", "A_x2.5", "B_x4", "B_x2.5"]
    dm.trainer = _fake_trainer(2, rank=1)  # type: ignore[assignment]
    dm.setup("fit")
    assert dm.per_device_batch_size == 2
    loaders = dm.val_dataloader()
    assert [len(dl) for dl in loaders] == [1, 1, 1, 0, 0, 0]  # rank 1 of 2: the second image of A only
    dm.trainer = _fake_trainer(1)  # type: ignore[assignment]
    loaders = dm.val_dataloader()
    assert len(loaders) == 6 and [len(dl.dataset) for dl in loaders] == [2, 2, 2, 1, 1, 1]  # type: ignore[arg-type]
    batch = next(iter(loaders[1]))
    assert batch["lr"].shape == (1, 3, 26, 22) and batch["hr"].shape == (1, 3, 58, 50)  # floor(60/2.25), ...
    assert batch["scale"].tolist() == [2.25] and batch["dataset"] == ["A"]
    tests = dm.test_dataloader()
    assert [dl.dataset.scale for dl in tests] == [4.0, 2.5, 4.0, 2.5]  # type: ignore[attr-defined]
    assert ArbitraryScaleSRDataModule(val={"A": str(a)}, val_scales=[2.5]).test_names == ["A_x2.5"]


def test_datamodule_lr_dir_template(tmp_path: Path) -> None:
    a = _eval_set(tmp_path, "A", [(60, 50)])
    for s in (2, 3):
        _save(tmp_path / "A" / "LR" / f"X{s}" / f"a_0x{s}.png", _image(60 // s, 50 // s, seed=s))
    dm = ArbitraryScaleSRDataModule(
        val={"A": {"hr_dir": str(a), "lr_dir": str(tmp_path / "A" / "LR" / "X{scale}")}}, val_scales=[2, 3, 2.5]
    )
    dm.setup("validate")
    lr_dirs = [ds.lr_dir for ds in dm.val_sets.values()]
    assert lr_dirs == [tmp_path / "A" / "LR" / "X2", tmp_path / "A" / "LR" / "X3", None]
    assert torch.equal(dm.val_sets["A_x3"][0]["lr"], _chw(read_image_uint8(tmp_path / "A/LR/X3/a_0x3.png")) / 255.0)
    with pytest.raises(ValueError, match=r"data\.val\.A\.lr_dir"):
        ArbitraryScaleSRDataModule(val={"A": {"hr_dir": str(a), "lr_dir": str(tmp_path)}}, val_scales=[2, 3])


def test_datamodule_batch_not_divisible_by_world_size(train_dir: Path) -> None:
    dm = ArbitraryScaleSRDataModule(train=str(train_dir), batch_size=6, num_workers=0)
    dm.trainer = _fake_trainer(4)  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"data\.batch_size=6.*world size 4"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale_range": [0.5, 4]}, r"data\.scale_range"),
        ({"scale_range": [4, 2]}, r"data\.scale_range"),
        ({"scale_range": ["a", 2]}, r"data\.scale_range\[0\]"),
        ({"degradation": "bilinear"}, r"data\.degradation"),
        ({"noninteger_degradation": "x"}, r"data\.noninteger_degradation"),
        ({"integer_degradation": "x"}, r"data\.integer_degradation"),
        ({"val_scales": [2, 1]}, r"data\.val_scales\[1\]"),
        ({"val_scales": [2, 2.0]}, r"data\.val_scales"),
        ({"val_scales": []}, r"data\.val_scales"),
        ({"test_scales": ["x"]}, r"data\.test_scales\[0\]"),
        ({"batch_size": 0}, r"data\.batch_size"),
        ({"lr_patch_size": "48"}, r"data\.lr_patch_size"),
        ({"num_workers": -1}, r"data\.num_workers"),
        ({"train": {"hr_dirs": "x", "lr_dirs": "y"}}, r"data\.train: unknown key"),
        ({"train": {"hr_dirs": "x", "min_size": "big"}}, r"data\.train\.min_size"),
        ({"train": {"hr_dirs": "x", "repeat": 0}}, r"data\.train\.repeat"),
        ({"train": {"repeat": 2}}, r"data\.train\.hr_dirs"),
        ({"train": {"hr_dirs": "x", "lr_quantize": False}}, r"data\.train\.lr_quantize"),
        ({"val": {"A": {"hr_dir": "x", "modcrop": 12}}}, r"data\.val\.A: unknown key"),
        ({"val": {"A": {"lr_dir": "x"}}}, r"data\.val\.A\.hr_dir"),
        ({"val": ["x"]}, r"data\.val"),
    ],
)
def test_datamodule_config_errors_name_the_key(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArbitraryScaleSRDataModule(**kwargs)


def test_benchmark_datamodule_finds_sets(tmp_path: Path) -> None:
    root = tmp_path / "benchmark"
    _eval_set(root, "Set5", [(60, 50)])
    _eval_set(root, "B100", [(48, 40), (40, 48)])
    dm = ArbitraryScaleBenchmarkDataModule(root, test_scales=[2, 3.5])
    assert list(dm.sets) == ["Set5", "BSD100"]
    assert dm.test_names == ["Set5_x2", "Set5_x3.5", "BSD100_x2", "BSD100_x3.5"] == dm.val_names
    assert dm.test_scale_of["BSD100_x3.5"] == 3.5
    loaders = dm.test_dataloader()
    assert [len(dl) for dl in loaders] == [1, 1, 2, 2] and len(dm.val_dataloader()) == 4
    item = next(iter(loaders[3]))
    assert item["dataset"] == ["BSD100"] and item["lr"].shape == (1, 3, 13, 11)  # floor(48/3.5), floor(40/3.5)
    with pytest.raises(FileNotFoundError, match="Urban100"):
        ArbitraryScaleBenchmarkDataModule(root, names=["Set5", "Urban100"])
    with pytest.raises(ValueError, match=r"data\.test_scales\[0\]"):
        ArbitraryScaleBenchmarkDataModule(root, test_scales=[0.5])
    mapped = ArbitraryScaleBenchmarkDataModule({"Mine": {"hr_dir": str(root / "Set5" / "HR")}}, test_scales=[2.5])
    assert mapped.test_names == ["Mine_x2.5"]


# ---------------------------------------------------------------------------------------------------- configs
def test_hydra_configs_instantiate(make_cfg: Callable[..., DictConfig], tmp_path: Path, samples_root: Path) -> None:
    cfg = make_cfg("train", ["data=samples_arbitrary"], tmp_path / "run1")
    dm = instantiate(cfg.data)
    assert isinstance(dm, ArbitraryScaleSRDataModule) and dm.scale_range == (1.0, 4.0) and dm.degradation == "pil"
    assert dm.val_names == ["samples_x2", "samples_x3", "samples_x4", "samples_x2.5", "samples_x3.5"]
    assert dm.lr_patch_size == cfg.model.lr_patch_size and dm.train_spec["repeat"] == 100
    assert dm.train_spec["hr_dirs"] == [samples_root / "train" / "HR"]
    for name, scales, repeat in [
        ("df2k_arbitrary", [2, 3, 4, 6, 2.25, 3.75, 5.25], 20),
        ("imagenet_arbitrary", [2, 3, 4], 1),
    ]:
        dm = instantiate(make_cfg("train", [f"data={name}"], tmp_path / name).data)
        assert dm.val_scales == scales and dm.train_spec["repeat"] == repeat and list(dm.val_specs) == ["Set5"]
    assert dm.train_spec["min_size"] == 194 and dm.train_spec["skip_small"] and dm.train_spec["recursive"]
    _eval_set(tmp_path / "data" / "benchmark", "Set14", [(40, 40)])
    cfg = make_cfg("test", ["data=benchmark_arbitrary", "+scales=[2,2.5]", "ckpt=x"], tmp_path / "run2")
    cfg.paths.data_dir = str(tmp_path / "data")
    bench = instantiate(cfg.data)
    assert bench.test_names == ["Set14_x2", "Set14_x2.5"] and bench.test_scale_of["Set14_x2.5"] == 2.5
    assert math.isclose(float(bench.test_dataloader()[1].dataset[0]["scale"]), 2.5)
