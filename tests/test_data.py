"""Tests for sresolve.data: IO, sample set, transforms, datasets, samplers of the DataModules."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from sresolve.data.datamodules import (
    BenchmarkDataModule,
    PairedSRDataModule,
    SamplesDataModule,
    ShardedEvalSampler,
)
from sresolve.data.datasets import BenchmarkDataset, PairedImageDataset
from sresolve.data.degradation import imresize
from sresolve.data.io import (
    ImageReadError,
    image_size,
    list_images,
    read_image,
    read_image_uint8,
    to_uint8,
    write_image,
)
from sresolve.data.samplers import ResumableSampler
from sresolve.data.samples import SAMPLE_SPLIT, load_sample, materialize_samples
from sresolve.data.transforms import apply_augment, augment, paired_random_crop, random_crop


# ---------------------------------------------------------------------------------------------------- helpers
def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    im.save(path)
    return path


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _png16(path: Path, arr: np.ndarray) -> None:
    """Independent 16-bit PNG encoder (PNG spec §6, §9): colour types 0/2/6, every row filter type 0..4 in turn."""
    h, w, c = arr.shape
    bpp = 2 * c
    raw = arr.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, w * bpp).astype(np.int32)
    out = bytearray()
    for y in range(h):
        r = raw[y]
        b = raw[y - 1] if y else np.zeros_like(r)
        a = np.concatenate([np.zeros(bpp, np.int32), r[:-bpp]])
        cc = np.concatenate([np.zeros(bpp, np.int32), b[:-bpp]])
        ftype = y % 5
        if ftype == 0:
            f = r
        elif ftype == 1:
            f = r - a
        elif ftype == 2:
            f = r - b
        elif ftype == 3:
            f = r - (a + b) // 2
        else:
            p = a + b - cc
            pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - cc)
            pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
            f = r - pred
        out.append(ftype)
        out += (f % 256).astype(np.uint8).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ctype = {1: 0, 3: 2, 4: 6}[c]
    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b"")
    )


def _find(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, int]:
    """Unique (top, left) of ``needle`` (h, w, C) inside ``haystack`` (H, W, C)."""
    hh, ww = needle.shape[:2]
    hits = [
        (t, left)
        for t in range(haystack.shape[0] - hh + 1)
        for left in range(haystack.shape[1] - ww + 1)
        if haystack[t, left, 0] == needle[0, 0, 0] and np.array_equal(haystack[t : t + hh, left : left + ww], needle)
    ]
    assert len(hits) == 1, hits
    return hits[0]


def _hwc_u8(t: torch.Tensor) -> np.ndarray:
    arr = (t * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert torch.equal(torch.from_numpy(arr).permute(2, 0, 1).float() / 255, t), "tensor is not on 8-bit levels"
    return arr


@pytest.fixture(scope="module")
def samples_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samples")
    materialize_samples(root)
    return root


# ---------------------------------------------------------------------------------------------------- io
def test_read_rgb_exact_and_uint8_path(tmp_path: Path) -> None:
    arr = _noise(7, 9)
    p = _save(tmp_path / "a.png", arr)
    x = read_image(p)
    assert x.dtype == torch.float32 and x.shape == (3, 7, 9)
    assert torch.equal(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    u = read_image_uint8(p)
    assert u.dtype == np.uint8 and u.shape == (7, 9, 3) and np.array_equal(u, arr)
    assert image_size(p) == (7, 9)


def test_read_gray_rgba_la_bilevel(tmp_path: Path) -> None:
    gray = _rng(1).integers(0, 256, size=(5, 6), dtype=np.uint8)
    x = read_image(_save(tmp_path / "g.png", gray))
    assert x.shape == (3, 5, 6)
    for c in range(3):
        assert torch.equal(x[c], torch.from_numpy(gray).float() / 255)
    rgba = np.concatenate([_noise(5, 6, 2), _rng(3).integers(0, 256, size=(5, 6, 1), dtype=np.uint8)], axis=2)
    x = read_image(_save(tmp_path / "rgba.png", rgba))
    assert torch.equal(x, torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float() / 255)  # alpha dropped, no blend
    assert np.array_equal(read_image_uint8(tmp_path / "rgba.png"), rgba[..., :3])
    la = Image.fromarray(gray).convert("LA")
    la.putalpha(Image.fromarray(255 - gray))
    la.save(tmp_path / "la.png")
    x = read_image(tmp_path / "la.png")
    assert torch.equal(x[1], torch.from_numpy(gray).float() / 255)
    bits = gray > 127
    Image.fromarray(bits).save(tmp_path / "b.png")
    x = read_image(tmp_path / "b.png")
    assert torch.equal(x[0], torch.from_numpy(bits).float())


def test_read_16bit_exact(tmp_path: Path) -> None:
    vals = np.array([[0, 1, 255, 256, 1000], [32767, 40000, 65534, 65535, 12345]], dtype=np.uint16)
    Image.fromarray(vals).save(tmp_path / "g16.png")  # Pillow writes I;16
    x = read_image(tmp_path / "g16.png")
    expect = torch.from_numpy(vals.astype(np.float32) / np.float32(65535))
    assert torch.equal(x[0], expect) and torch.equal(x[2], expect)
    # 16-bit RGB / RGBA (Pillow alone keeps only the high byte): all PNG filter types, exact values.
    rgb = _rng(4).integers(0, 65536, size=(11, 7, 3), dtype=np.uint16)
    rgb[0, 0] = (0, 1, 65535)
    _png16(tmp_path / "rgb16.png", rgb)
    x = read_image(tmp_path / "rgb16.png")
    assert torch.equal(x, torch.from_numpy(rgb.astype(np.float32) / np.float32(65535)).permute(2, 0, 1))
    rgba = _rng(5).integers(0, 65536, size=(6, 10, 4), dtype=np.uint16)
    _png16(tmp_path / "rgba16.png", rgba)
    x = read_image(tmp_path / "rgba16.png")
    assert torch.equal(x, torch.from_numpy(rgba[..., :3].astype(np.float32) / np.float32(65535)).permute(2, 0, 1))
    # uint8 path rounds the 16-bit values to the nearest 8-bit level
    u = read_image_uint8(tmp_path / "rgb16.png")
    assert np.array_equal(u, np.floor(rgb.astype(np.float64) / 65535 * 255 + 0.5).astype(np.uint8))


def test_read_palette_cmyk(tmp_path: Path) -> None:
    rgb = _noise(8, 8, 6)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    expect = np.array(pal.convert("RGB"))
    assert np.array_equal(read_image_uint8(tmp_path / "p.png"), expect)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow "palette with transparency" warning
        x = read_image(tmp_path / "pt.png")
    assert torch.equal(x, torch.from_numpy(expect).permute(2, 0, 1).float() / 255)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "c.tif")
    assert np.array_equal(read_image_uint8(tmp_path / "c.tif"), np.asarray(cmyk.convert("RGB")))


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    p = _save(tmp_path / "big.png", _noise(64, 64))
    data = p.read_bytes()
    trunc = tmp_path / "truncated.png"
    trunc.write_bytes(data[: len(data) // 2])
    for fn in (read_image, read_image_uint8):
        with pytest.raises(ImageReadError, match=r"truncated\.png.*truncated"):
            fn(trunc)
    assert issubclass(ImageReadError, ValueError)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"notes\.png"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


def test_write_image_rounds_atomic(tmp_path: Path) -> None:
    levels = torch.arange(0, 256, dtype=torch.float64)
    t = torch.stack([(levels + 0.49) / 255, (levels - 0.49) / 255, (levels + 0.51) / 255]).reshape(3, 16, 16)
    p = write_image(tmp_path / "sub" / "dir" / "w.png", t.float())
    got = read_image_uint8(p)
    ref = levels.reshape(16, 16).numpy()
    assert np.array_equal(got[..., 0], ref)
    assert np.array_equal(got[..., 1], ref)  # rounds, never truncates (k - 0.49 -> k)
    assert np.array_equal(got[..., 2], np.minimum(ref + 1, 255))
    hwc = np.full((4, 5, 3), 2.0)
    hwc[0, 0] = -1.0
    write_image(tmp_path / "clip.png", hwc)
    out = read_image_uint8(tmp_path / "clip.png")
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [255, 255, 255]
    assert to_uint8(np.array([0.5 / 255, 1.5 / 255])).tolist() == [1, 2]  # half away from zero (MATLAB im2uint8)
    # a failing write leaves the previous file untouched and no temporary file behind
    before = (tmp_path / "clip.png").read_bytes()
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "clip.png", np.full((4, 5, 3), np.nan))
    with pytest.raises(ValueError, match=r"clip\.png"):
        write_image(tmp_path / "clip.png", torch.zeros(2, 4, 5))
    assert (tmp_path / "clip.png").read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["clip.png", "sub"]


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.PNG", "c.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.png", "c.jpg"]
    assert [p.name for p in list_images(tmp_path, exts=("png",))] == ["a.PNG", "b.png"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        list_images(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------- samples
def test_samples_split_and_materialize(samples_root: Path) -> None:
    train, val = set(SAMPLE_SPLIT["train"]), set(SAMPLE_SPLIT["val"])
    assert len(train) == 8 and len(val) == 3 and not train & val
    dirs = materialize_samples(samples_root)
    assert dirs == {"train": samples_root / "train" / "HR", "val": samples_root / "val" / "HR"}
    assert [p.stem for p in list_images(dirs["train"])] == sorted(SAMPLE_SPLIT["train"])
    assert [p.stem for p in list_images(dirs["val"])] == sorted(SAMPLE_SPLIT["val"])
    import skimage.data

    assert np.array_equal(read_image_uint8(dirs["val"] / "astronaut.png"), skimage.data.astronaut())
    assert np.array_equal(read_image_uint8(dirs["train"] / "logo.png"), skimage.data.logo()[..., :3])
    assert image_size(dirs["train"] / "retina.png") == (960, 960)
    retina = read_image_uint8(dirs["train"] / "retina.png")
    assert retina.max(axis=2).min() > 20  # no black fundus border left
    assert image_size(dirs["val"] / "chelsea.png") == (300, 451)
    # idempotent: nothing rewritten when complete; a deleted file is restored
    mtime = (dirs["val"] / "coffee.png").stat().st_mtime_ns
    materialize_samples(samples_root)
    assert (dirs["val"] / "coffee.png").stat().st_mtime_ns == mtime
    (dirs["train"] / "rocket.png").unlink()
    materialize_samples(samples_root)
    assert np.array_equal(read_image_uint8(dirs["train"] / "rocket.png"), load_sample("rocket"))


# ---------------------------------------------------------------------------------------------------- transforms
def test_paired_random_crop_alignment() -> None:
    s, p = 3, 4
    lr = _noise(10, 13, 7)
    hr = np.repeat(np.repeat(lr, s, axis=0), s, axis=1)  # HR block (i, j) = LR pixel (i, j)
    tops = set()
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        hp, lp = paired_random_crop(hr, lr, p, s, g)
        assert hp.shape == (p * s, p * s, 3) and lp.shape == (p, p, 3)
        assert np.array_equal(hp, np.repeat(np.repeat(lp, s, axis=0), s, axis=1))
        tops.add(_find(lr, lp)[0])
    assert tops == set(range(10 - p + 1))  # every LR row position is reachable
    # tensors, and the same generator state gives the same crop
    ht, lt = torch.from_numpy(hr).permute(2, 0, 1), torch.from_numpy(lr).permute(2, 0, 1)
    a = paired_random_crop(ht, lt, p, s, torch.Generator().manual_seed(5))
    b = paired_random_crop(hr, lr, p, s, torch.Generator().manual_seed(5))
    assert np.array_equal(a[1].permute(1, 2, 0).numpy(), b[1])
    # HR up to s-1 px larger or smaller than LR*s is accepted; never crops outside either image
    for dh in (-(s - 1), s - 1):
        hr2 = hr[: 30 + dh] if dh < 0 else np.pad(hr, ((0, dh), (0, 0), (0, 0)))
        for seed in range(50):
            hp, lp = paired_random_crop(hr2, lr, p, s, torch.Generator().manual_seed(seed))
            assert hp.shape[0] == p * s and np.array_equal(hp, np.repeat(np.repeat(lp, s, 0), s, 1))
    with pytest.raises(ValueError, match=r"hr\.png.*33x39.*lr\.png.*10x13"):
        paired_random_crop(np.pad(hr, ((0, 3), (0, 0), (0, 0))), lr, p, s, path="hr.png", lr_path="lr.png")
    with pytest.raises(ValueError, match=r"x\.png.*too small.*LR 10x13.*LR patch 11x11"):
        paired_random_crop(hr, lr, 11, s, path="x.png")
    with pytest.raises(ValueError, match=r"y\.png.*10x13.*smaller than the 12x12 patch"):
        random_crop(lr, 12, path="y.png")


def test_augment_consistency() -> None:
    s = 2
    lr = torch.from_numpy(_noise(6, 6, 8)).permute(2, 0, 1)
    hr = lr.repeat_interleave(s, 1).repeat_interleave(s, 2)
    seen = set()
    for seed in range(64):
        h2, l2 = augment([hr, lr], generator=torch.Generator().manual_seed(seed))
        assert torch.equal(h2, l2.repeat_interleave(s, 1).repeat_interleave(s, 2))
        seen.add(tuple(l2.flatten().tolist()))
        # numpy (H, W, C) implementation matches the tensor one
        (ln,) = augment([lr.permute(1, 2, 0).numpy()], generator=torch.Generator().manual_seed(seed))
        assert np.array_equal(np.ascontiguousarray(ln), l2.permute(1, 2, 0).numpy())
    assert len(seen) == 8  # all dihedral transforms occur
    assert torch.equal(augment([lr], hflip=False, rot=False)[0], lr)
    assert torch.equal(apply_augment(lr, True, False, False), lr.flip(-1))
    assert torch.equal(apply_augment(lr, False, True, True), lr.flip(-2).transpose(-2, -1))


# ---------------------------------------------------------------------------------------------------- datasets
@pytest.fixture()
def hr_folder(tmp_path: Path) -> Path:
    for i, (h, w) in enumerate([(40, 52), (48, 44), (36, 60)]):
        _save(tmp_path / "HR" / f"{i:04d}.png", _noise(h, w, 10 + i))
    return tmp_path / "HR"


def _lr_folder(hr_dir: Path, s: int, tmpl: str) -> Path:
    lr_dir = hr_dir.parent / "LR"
    for p in list_images(hr_dir):
        hr = read_image(p)
        lr = imresize(hr[:, : hr.shape[1] // s * s, : hr.shape[2] // s * s].double(), 1 / s)
        write_image(lr_dir / f"{tmpl.format(p.stem, scale=s)}.png", lr)
    return lr_dir


def test_on_the_fly_lr_is_imresize_of_hr_patch(hr_folder: Path) -> None:
    s, p = 4, 8
    ds = PairedImageDataset(hr_folder, s, p, use_hflip=False, use_rot=False, cache=False)
    for k in range(6):
        item = ds[(k % 3, 1000 + k)]
        assert item["lr"].shape == (3, p, p) and item["hr"].shape == (3, p * s, p * s)
        hr_u8 = _hwc_u8(item["hr"])
        _find(read_image_uint8(item["path"]), hr_u8)  # the HR patch is a crop of its source image
        ref = imresize(torch.from_numpy(hr_u8).permute(2, 0, 1).double() / 255, 1 / s)
        ref = (torch.floor(ref.clamp(0, 1) * 255 + 0.5) / 255).float()
        assert torch.equal(item["lr"], ref)
    # with flips/transposes the pair stays consistent (up to float rounding of the resize)
    ds_aug = PairedImageDataset(hr_folder, s, p, cache=False)
    for k in range(8):
        item = ds_aug[(k % 3, k)]
        ref = imresize(item["hr"].double(), 1 / s)
        assert (ref.float() - item["lr"]).abs().max() <= 0.5 / 255 + 1e-6
    ds_float = PairedImageDataset(hr_folder, s, p, use_hflip=False, use_rot=False, cache=False, lr_quantize=False)
    item = ds_float[(0, 3)]
    assert torch.allclose(item["lr"], imresize(item["hr"], 1 / s).clamp(0, 1), atol=1e-6)


@pytest.mark.parametrize("tmpl", ["{}x{scale}", "{}x2", "{}"])
def test_lr_folder_patches_match_lr_file(hr_folder: Path, tmpl: str) -> None:
    s, p = 2, 6
    lr_dir = _lr_folder(hr_folder, s, tmpl)
    ds = PairedImageDataset(hr_folder, s, p, lr_dirs=lr_dir, filename_tmpl=tmpl, use_hflip=False, use_rot=False)
    for k in range(5):
        item = ds[(k % 3, 77 + k)]
        hr_img = read_image_uint8(item["path"])
        top, left = _find(hr_img, _hwc_u8(item["hr"]))
        assert top % s == 0 and left % s == 0
        stem = Path(item["path"]).stem
        lr_img = read_image_uint8(lr_dir / f"{tmpl.format(stem, scale=s)}.png")
        assert np.array_equal(_hwc_u8(item["lr"]), lr_img[top // s : top // s + p, left // s : left // s + p])


def test_dataset_errors(hr_folder: Path) -> None:
    lr_dir = _lr_folder(hr_folder, 2, "{}x2")
    with pytest.raises(FileNotFoundError, match=r"0000\.png.*expected .*LR/0000x3\.png"):
        PairedImageDataset(hr_folder, 3, 4, lr_dirs=lr_dir, filename_tmpl="{}x3")
    write_image(lr_dir / "0001x2.png", torch.zeros(3, 10, 10))  # HR 0001 is 48x44
    with pytest.raises(ValueError, match=r"HR .*0001\.png is 48x44 but LR .*0001x2\.png is 10x10"):
        PairedImageDataset(hr_folder, 2, 4, lr_dirs=lr_dir, filename_tmpl="{}x2")
    with pytest.raises(ValueError, match=r"0002\.png is 36x60.*smaller than the HR patch 40x40"):
        PairedImageDataset(hr_folder, 4, 10)
    with pytest.raises(ValueError, match="lr_patch_size must be a positive int, got 'abc'"):
        PairedImageDataset(hr_folder, 4, "abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache must be"):
        PairedImageDataset(hr_folder, 4, 4, cache="yes")  # type: ignore[arg-type]


def test_reproducible_cache_equivalence_and_worker_streams(hr_folder: Path, tmp_path: Path) -> None:
    # odd inputs (gray, RGBA, 16-bit) go through the same uint8 pipeline
    _save(hr_folder / "0003.png", _rng(9).integers(0, 256, size=(40, 40), dtype=np.uint8))
    _save(hr_folder / "0004.png", np.concatenate([_noise(40, 40, 3), np.full((40, 40, 1), 9, np.uint8)], axis=2))
    _png16(hr_folder / "0005.png", _rng(2).integers(0, 65536, size=(40, 40, 3), dtype=np.uint16))
    kw = {"scale": 2, "lr_patch_size": 8, "repeat": 2, "seed": 3}
    cached = PairedImageDataset(hr_folder, cache=True, **kw)
    plain = PairedImageDataset(hr_folder, cache=False, **kw)
    auto_off = PairedImageDataset(hr_folder, cache="auto", cache_max_gb=0.0, **kw)
    assert cached.cached and not plain.cached and not auto_off.cached and len(cached) == 12
    assert PairedImageDataset(hr_folder, cache="auto", **kw).cached
    for idx, seed in [(0, 1), (5, 2), (11, 2**62 + 5), (7, 0)]:
        a, b = cached[(idx, seed)], plain[(idx, seed)]
        assert a["path"] == b["path"] == str(cached.hr_paths[idx % 6])
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert not torch.equal(cached[(0, 1)]["hr"], cached[(0, 2)]["hr"])
    # the training sampler's (index, seed) stream gives the same batches for any number of workers
    sampler = ResumableSampler(len(cached), seed=11)
    batches = [
        torch.cat([b["hr"] for b in DataLoader(cached, batch_size=4, sampler=sampler, num_workers=n)]) for n in (0, 2)
    ]
    assert torch.equal(batches[0], batches[1])
    sampler.epoch = 1
    assert not torch.equal(torch.cat([b["hr"] for b in DataLoader(cached, batch_size=4, sampler=sampler)]), batches[0])

    # plain int indices: seeded from (seed, worker id, index, call count): reproducible, and workers differ
    def run() -> list[torch.Tensor]:
        loader = DataLoader(cached, batch_size=1, sampler=[0, 0, 0, 0], num_workers=2)
        return [b["hr"] for b in loader]

    first, second = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    assert not torch.equal(first[0], first[1])  # index 0 in worker 0 vs worker 1


def test_benchmark_dataset_modcrop_and_lr(tmp_path: Path) -> None:
    hr = _noise(50, 38, 20)
    _save(tmp_path / "Set5" / "HR" / "bird.png", hr)
    ds = BenchmarkDataset(tmp_path / "Set5" / "HR", 4)
    assert ds.name == "Set5" and ds.lr_dir is None and ds.modcrop == 4
    item = ds[0]
    assert item["name"] == "bird" and item["dataset"] == "Set5"
    assert item["hr"].shape == (3, 48, 36) and item["lr"].shape == (3, 12, 9)
    assert torch.equal(item["hr"], torch.from_numpy(hr[:48, :36]).permute(2, 0, 1).float() / 255)
    # LR = MATLAB imresize of the modcropped HR, rounded like imwrite(uint8): the uint8 code path is a reference
    ref = imresize(torch.from_numpy(np.ascontiguousarray(hr[:48, :36])).permute(2, 0, 1), 0.25)
    assert ref.dtype == torch.uint8 and torch.equal(item["lr"], ref.float() / 255)
    ds12 = BenchmarkDataset(tmp_path / "Set5" / "HR", 4, modcrop=12)
    assert ds12[0]["hr"].shape == (3, 48, 36)
    with pytest.raises(ValueError, match="multiple of scale"):
        BenchmarkDataset(tmp_path / "Set5" / "HR", 4, modcrop=6)
    # LR files auto-detected; HR cropped to LR x s when LR is smaller; error when larger
    lr_dir = tmp_path / "Set5" / "LR_bicubic" / "X4"
    write_image(lr_dir / "birdx4.png", torch.rand(3, 11, 9))
    ds = BenchmarkDataset(tmp_path / "Set5" / "HR", 4)
    assert ds.lr_dir == lr_dir and ds[0]["hr"].shape == (3, 44, 36) and ds[0]["lr"].shape == (3, 11, 9)
    write_image(lr_dir / "birdx4.png", torch.rand(3, 13, 9))
    with pytest.raises(ValueError, match=r"birdx4\.png is 13x9.*52x36.*bird\.png"):
        ds[0]
    (lr_dir / "birdx4.png").rename(lr_dir / "bird.png")  # same-name LR also found
    write_image(lr_dir / "bird.png", torch.rand(3, 12, 9))
    assert BenchmarkDataset(tmp_path / "Set5" / "HR", 4)[0]["lr"].shape == (3, 12, 9)
    assert BenchmarkDataset(tmp_path / "Set5" / "HR", 4, lr_dir=False).lr_dir is None


# ---------------------------------------------------------------------------------------------------- datamodules
def test_eval_sampler_shards_without_duplicates() -> None:
    for world in (1, 2, 3):
        shards = [list(ShardedEvalSampler(range(5), num_replicas=world, rank=r)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == [0, 1, 2, 3, 4]
        assert [len(ShardedEvalSampler(range(5), world, r)) for r in range(world)] == [len(s) for s in shards]
        # Lightning only injects its padding DistributedSampler for samplers that are not DistributedSamplers
        assert isinstance(ShardedEvalSampler(range(5), world, 0), DistributedSampler)
    assert [list(ShardedEvalSampler(range(2), 3, r)) for r in range(3)] == [[0], [1], []]


def _fake_trainer(world: int, rank: int) -> SimpleNamespace:
    return SimpleNamespace(
        world_size=world,
        global_rank=rank,
        global_step=0,
        accumulate_grad_batches=1,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=False),
    )


def test_paired_datamodule_sharding_and_errors(samples_root: Path) -> None:
    kw = {"scale": 4, "lr_patch_size": 16, "num_workers": 0, "seed": 5}
    train = {"hr_dirs": [str(samples_root / "train" / "HR")], "repeat": 3}
    val = {"a": {"hr_dir": str(samples_root / "val" / "HR")}, "b": str(samples_root / "val" / "HR")}
    ranks = []
    for rank in range(2):
        dm = PairedSRDataModule(train=train, val=val, batch_size=6, **kw)
        dm.trainer = _fake_trainer(2, rank)  # type: ignore[assignment]
        dm.setup("fit")
        assert dm.per_device_batch_size == 3 and dm.val_names == ["a", "b"]
        dl = dm.train_dataloader()
        assert dl.drop_last and len(dl) == 4  # 24 samples / 2 ranks / 3
        ranks.append([i for i, _ in dl.sampler])
        assert [len(v) for v in dm.val_dataloader()] == [2 - rank, 2 - rank]  # 3 images: ranks get 2 and 1
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == 12
    dm = PairedSRDataModule(train=train, val=val, batch_size=4, **kw)
    dm.trainer = _fake_trainer(3, 0)  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"data\.batch_size=4 .*world size 3"):
        dm.setup("fit")
    dm.trainer = SimpleNamespace(
        **{**vars(_fake_trainer(2, 0)), "_accelerator_connector": SimpleNamespace(use_distributed_sampler=True)}
    )  # type: ignore[assignment]
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        dm.setup("fit")
    with pytest.raises(ValueError, match=r"data\.lr_patch_size must be a positive int, got 'abc'"):
        PairedSRDataModule(train=train, lr_patch_size="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"data\.train: unknown key\(s\) \['gt_size'\]"):
        PairedSRDataModule(train={**train, "gt_size": 256})
    with pytest.raises(ValueError, match=r"data\.train\.repeat must be a positive int, got 'x'"):
        PairedSRDataModule(train={**train, "repeat": "x"})
    with pytest.raises(ValueError, match=r"data\.val\.a\.hr_dir is required"):
        PairedSRDataModule(val={"a": {"lr_dir": "x"}})


def test_benchmark_datamodule(tmp_path: Path) -> None:
    for name, n in (("Set5", 3), ("B100", 2)):
        for i in range(n):
            _save(tmp_path / name / "HR" / f"{i}.png", _noise(26, 30, i))
    dm = BenchmarkDataModule(tmp_path, scale=2, modcrop=4, num_workers=0)
    assert dm.test_names == ["Set5", "BSD100"] and dm.modcrop == 4
    loaders = dm.test_dataloader()
    assert [len(dl) for dl in loaders] == [3, 2]
    batch = next(iter(loaders[1]))
    assert (
        batch["hr"].shape == (1, 3, 24, 28) and batch["lr"].shape == (1, 3, 12, 14) and batch["dataset"] == ["BSD100"]
    )
    with pytest.raises(FileNotFoundError, match=r"'Urban100'.*Urban100/HR"):
        BenchmarkDataModule(tmp_path, names=["Set5", "Urban100"], scale=2)
    with pytest.raises(FileNotFoundError, match="no benchmark set"):
        BenchmarkDataModule(tmp_path / "Set5", scale=2)
    dm = BenchmarkDataModule({"mine": {"hr_dir": str(tmp_path / "Set5" / "HR")}}, scale=2)
    assert dm.test_names == ["mine"] and dm.modcrop == 2 and len(dm.test_dataloader()[0]) == 3


def test_samples_datamodule_fits_with_lightning(tmp_path: Path) -> None:
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
            self.seen: list[tuple[int, str]] = []

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.l1_loss(self.net(batch["lr"]), batch["hr"])

        def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
            assert self.net(batch["lr"]).shape == batch["hr"].shape
            self.seen.append((dataloader_idx, batch["name"][0]))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), 1e-3)

    dm = SamplesDataModule(
        tmp_path / "samples",
        scale=2,
        lr_patch_size=16,
        batch_size=4,
        num_workers=0,
        val={
            "x": {"hr_dir": str(tmp_path / "samples" / "val" / "HR")},
            "y": {"hr_dir": str(tmp_path / "samples" / "val" / "HR")},
        },
    )
    model = Tiny()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3
    assert model.seen == [(0, "astronaut"), (0, "chelsea"), (1, "astronaut"), (1, "chelsea")]
