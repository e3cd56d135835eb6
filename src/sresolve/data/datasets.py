"""Training and benchmark datasets for image super-resolution (BasicSR conventions, frameworks spec §2.3, §2.7).

:class:`PairedImageDataset` gives random training patches ``{lr, hr, path}``; :class:`BenchmarkDataset` gives
full test images ``{lr, hr, name, dataset}``.

Randomness (crop position, flips) of one training sample comes from a ``torch.Generator`` seeded with a 63-bit
*sample seed*. The training sampler (:class:`sresolve.data.samplers.ResumableSampler`) yields ``(index,
sample_seed)`` pairs whose seed is a hash of ``(run seed, epoch, position in the epoch)``, so a run is reproducible for
a fixed seed whatever the number of workers or processes, every sample of every epoch gets its own stream, and a
resumed run replays the exact same samples. A plain integer index (``dataset[i]``, a stock ``DataLoader``) uses a
fallback stream seeded from ``(dataset seed, worker id, index, call count in this process)``: reproducible for a fixed
seed and worker count, different in each worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from sresolve.data.io import image_size, list_images, read_image, read_image_uint8
from sresolve.data.transforms import apply_augment, draw_augment, paired_random_crop, random_crop
from sresolve.validation import check_int

__all__ = [
    "BenchmarkDataset",
    "ImageFolderPairDataset",
    "MultiScalePairedDataset",
    "PairedImageDataset",
    "benchmark_set_name",
    "find_lr_file",
    "resolve_lr_dir",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_GIB = float(1 << 30)


def _positive_int(value: object, name: str) -> int:
    return check_int(value, name)


def _as_path_list(value: PathLike | Sequence[PathLike], name: str) -> list[Path]:
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    if isinstance(value, Sequence) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [Path(v) for v in value]
    raise ValueError(f"{name} must be a folder path or a non-empty list of folder paths, got {value!r}")


def _format_name(tmpl: str, stem: str, scale: int, name: str) -> str:
    try:
        return tmpl.format(stem, scale=scale)
    except (IndexError, KeyError, ValueError) as err:
        raise ValueError(
            f"{name}={tmpl!r} is not a valid template: use '{{}}' for the HR file stem and optionally "
            f"'{{scale}}' (e.g. '{{}}x{{scale}}' or '{{}}x4'); {type(err).__name__}: {err}"
        ) from None


def _index_folder(folder: Path, recursive: bool = False) -> dict[str, list[Path]]:
    """Map file stem -> image files with that stem in ``folder`` (no listing errors: may be empty)."""
    index: dict[str, list[Path]] = {}
    for path in list_images(folder, recursive=recursive):
        index.setdefault(path.stem, []).append(path)
    return index


def find_lr_file(index: Mapping[str, list[Path]], lr_stem: str, hr_path: Path) -> Path | None:
    """The LR file named ``lr_stem`` (preferring the HR file's extension) in a folder index, or None."""
    candidates = index.get(lr_stem)
    if not candidates:
        return None
    for cand in candidates:
        if cand.suffix.lower() == hr_path.suffix.lower():
            return cand
    return candidates[0]


def _map_threads(fn: Any, items: Sequence[Any], threads: int) -> list[Any]:
    if len(items) <= 1 or threads <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fn, items))


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _uint8_hwc_to_chw(arr: np.ndarray) -> Tensor:
    # Always a private copy: cached arrays are read-only and shared with the other workers.
    return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C", copy=True)).permute(2, 0, 1)


def _to_float(x: Tensor) -> Tensor:
    return x.to(torch.float32).div_(255.0).contiguous()


class SeededItems:
    """Index handling of the training sets whose item is a pure function of ``(index, sample_seed)`` (what
    :class:`~sresolve.data.samplers.ResumableSampler` yields): ``ds[(i, seed)]``, or ``ds[i]`` with a fresh seed drawn
    from ``seed``, the worker id, the index and a call counter (plain ``DataLoader`` use). Needs ``seed``, ``_calls``
    and ``__len__``."""

    seed: int
    _calls: int
    __len__: Any  # provided by the dataset

    def _fallback_seed(self, index: int) -> int:
        info = get_worker_info()
        worker = info.id + 1 if info is not None else 0
        self._calls += 1
        state = np.random.SeedSequence([self.seed, worker, index, self._calls]).generate_state(2, np.uint32)
        return (int(state[0]) << 31 | int(state[1]) >> 1) & 0x7FFFFFFFFFFFFFFF

    def _parse_index(self, index: object) -> tuple[int, int]:
        """``(index, sample_seed)``; negative indices count from the end; a missing seed is drawn."""
        name = type(self).__name__
        if isinstance(index, (tuple, list)) and len(index) == 2:
            idx, seed = int(index[0]), int(index[1])
        elif isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            idx, seed = int(index), -1
        else:
            raise TypeError(f"{name} index must be an int or (index, sample_seed), got {index!r}")
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {name} of length {len(self)}")
        if seed < 0:
            seed = self._fallback_seed(idx)
        return idx, seed


class PairedImageDataset(SeededItems, Dataset):
    """Random aligned ``(LR, HR)`` training patches from HR folders (BasicSR ``PairedImageDataset`` semantics).

    HR images come from one or more folders (DF2K = ``DIV2K_train_HR`` + ``Flickr2K_HR``). The LR side is either

    * read from ``lr_dirs`` (one per HR folder): the LR file of ``<stem>.png`` is ``filename_tmpl.format(stem,
      scale=scale)`` plus an image extension, e.g. ``'{}x4'`` or ``'{}x{scale}'`` for DIV2K ``0001x4.png``; patches
      are cut at matching positions (:func:`~sresolve.data.transforms.paired_random_crop`); or
    * made on the fly: an HR patch of ``lr_patch_size * scale`` is cut at a uniform position, then
      ``LR = imresize(patch, 1 / scale)`` (MATLAB bicubic, :mod:`sresolve.data.degradation`) rounded to 8-bit levels
      like a saved LR PNG (``lr_quantize=False`` keeps the float result of ``bicubic_degrade``). Cropping first and
      resizing the patch differs from resizing the whole image and cropping the LR only in the outer ~2 LR pixels of
      the patch, where MATLAB's symmetric padding sees the patch border instead of the neighbouring image content;
      BasicSR's on-the-fly degradation pipelines (Real-ESRGAN) likewise degrade the cropped patch.

    Then ``hflip``/``vflip``/``transpose`` (p = 0.5 each; ``use_hflip``, ``use_rot``) are applied to both.

    Items: ``{"lr": float32 (3, p, p), "hr": float32 (3, p*s, p*s), "path": str}`` with values in [0, 1].
    ``len(dataset) = repeat * number of HR images`` (BasicSR ``dataset_enlarge_ratio``).

    Decoded cache: decoding a 2K PNG per patch costs tens of milliseconds. With ``cache=True`` every image is decoded
    once at construction (thread pool; Pillow releases the GIL) and kept as ``uint8`` ``(H, W, 3)`` numpy arrays.
    DataLoader workers created by ``fork`` (the Linux default up to Python 3.13) share those pages copy-on-write:
    the pixel buffers are never written, so they are not duplicated. With the ``spawn``/``forkserver`` start methods
    each worker receives a pickled copy, and under DDP every process builds its own cache. ``cache="auto"`` caches
    when the decoded size, estimated from the image headers without decoding, is at most ``cache_max_gb`` GiB.
    Cached and uncached datasets return identical items. All images (16-bit ones included) enter the training
    pipeline as 8-bit (:func:`~sresolve.data.io.read_image_uint8`).

    Folder trees: ``recursive=True`` takes the images of every sub-folder too (ImageNet's ``train/<wnid>/*.JPEG``).
    Image sizes are read from the file headers only (Pillow, no decoding), in a thread pool. An image smaller than
    the HR patch is an error naming it, unless ``skip_small=True`` (ImageNet pre-training): then it is left out and
    one log line says ``skipped N of M images smaller than the PxP HR patch``; the left-out files are in
    :attr:`skipped`.

    Indexing: ``dataset[(index, sample_seed)]`` (what the training sampler yields) or ``dataset[index]``; see the
    module docstring for how each seeds the sample's generator.
    """

    def __init__(
        self,
        hr_dirs: PathLike | Sequence[PathLike],
        scale: int,
        lr_patch_size: int = 64,
        lr_dirs: PathLike | Sequence[PathLike] | None = None,
        filename_tmpl: str = "{}",
        use_hflip: bool = True,
        use_rot: bool = True,
        repeat: int = 1,
        cache: bool | Literal["auto"] = "auto",
        cache_max_gb: float = 8.0,
        seed: int = 0,
        lr_quantize: bool = True,
        num_threads: int | None = None,
        recursive: bool = False,
        skip_small: bool = False,
    ) -> None:
        super().__init__()
        self.scale = _positive_int(scale, "scale")
        self.lr_patch_size = _positive_int(lr_patch_size, "lr_patch_size")
        self.repeat = _positive_int(repeat, "repeat")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be true, false or 'auto', got {cache!r}")
        if isinstance(cache_max_gb, bool) or not isinstance(cache_max_gb, (int, float)) or cache_max_gb < 0:
            raise ValueError(f"cache_max_gb must be a number >= 0, got {cache_max_gb!r}")
        if not isinstance(filename_tmpl, str):
            raise ValueError(f"filename_tmpl must be a string such as '{{}}x4', got {filename_tmpl!r}")
        self.use_hflip, self.use_rot, self.lr_quantize = bool(use_hflip), bool(use_rot), bool(lr_quantize)
        self.filename_tmpl = filename_tmpl
        threads = num_threads if num_threads is not None else _default_threads()

        self.hr_dirs = _as_path_list(hr_dirs, "hr_dirs")
        self.recursive, self.skip_small = bool(recursive), bool(skip_small)
        listed = {d: list_images(d, recursive=self.recursive) for d in self.hr_dirs}
        self.hr_paths: list[Path] = [p for d in self.hr_dirs for p in listed[d]]
        hr_dir_of = [d for d in self.hr_dirs for _ in listed[d]]
        self.lr_paths: list[Path] | None = None
        if lr_dirs is not None:
            self.lr_dirs = _as_path_list(lr_dirs, "lr_dirs")
            if len(self.lr_dirs) != len(self.hr_dirs):
                raise ValueError(
                    f"lr_dirs must have one folder per HR folder: {len(self.hr_dirs)} hr_dirs {self.hr_dirs} but "
                    f"{len(self.lr_dirs)} lr_dirs {self.lr_dirs}"
                )
            indexes = {
                hr_dir: _index_folder(lr_dir, recursive=self.recursive)
                for hr_dir, lr_dir in zip(self.hr_dirs, self.lr_dirs, strict=True)
            }
            lr_dir_of = dict(zip(self.hr_dirs, self.lr_dirs, strict=True))
            self.lr_paths = []
            for hr_path, hr_dir in zip(self.hr_paths, hr_dir_of, strict=True):
                lr_stem = _format_name(filename_tmpl, hr_path.stem, self.scale, "filename_tmpl")
                found = find_lr_file(indexes[hr_dir], lr_stem, hr_path)
                if found is None:
                    expected = lr_dir_of[hr_dir] / f"{lr_stem}{hr_path.suffix}"
                    raise FileNotFoundError(
                        f"LR image for HR {hr_path} not found: expected {expected} "
                        f"(filename_tmpl={filename_tmpl!r}, scale={self.scale})"
                    )
                self.lr_paths.append(found)
        else:
            self.lr_dirs = None

        # Header-only sizes: validate every pair up front and estimate the decoded size for cache="auto".
        self.hr_sizes: list[tuple[int, int]] = _map_threads(image_size, self.hr_paths, threads)
        self.lr_sizes: list[tuple[int, int]] | None = (
            _map_threads(image_size, self.lr_paths, threads) if self.lr_paths is not None else None
        )
        self.skipped: list[Path] = []
        if self.skip_small:
            self._drop_small()
        self._validate_sizes()
        self.decoded_bytes = 3 * sum(h * w for h, w in self.hr_sizes)
        if self.lr_sizes is not None:
            self.decoded_bytes += 3 * sum(h * w for h, w in self.lr_sizes)
        self.cached = bool(cache) if cache != "auto" else self.decoded_bytes <= cache_max_gb * _GIB
        self._hr_cache: list[np.ndarray] | None = None
        self._lr_cache: list[np.ndarray] | None = None
        if self.cached:
            self._hr_cache = _map_threads(read_image_uint8, self.hr_paths, threads)
            if self.lr_paths is not None:
                self._lr_cache = _map_threads(read_image_uint8, self.lr_paths, threads)
            self._check_cached_shapes()
        log.info(
            "%s: %d HR images from %s, LR %s, decoded size %.2f GiB, cache %s",
            type(self).__name__,
            len(self.hr_paths),
            [str(d) for d in self.hr_dirs],
            "on the fly" if self.lr_paths is None else f"from {[str(d) for d in self.lr_dirs or []]}",
            self.decoded_bytes / _GIB,
            "on" if self.cached else "off",
        )
        self._calls = 0

    # ------------------------------------------------------------------ checks
    def _drop_small(self) -> None:
        """``skip_small``: leave out images (pairs) too small for the patch, and log how many (one line)."""
        s, p = self.scale, self.lr_patch_size
        hr_patch = p * s
        keep = []
        for i, (h, w) in enumerate(self.hr_sizes):
            if self.lr_sizes is not None:
                lh, lw = self.lr_sizes[i]
                h, w = min(h, lh * s), min(w, lw * s)
            if h >= hr_patch and w >= hr_patch:
                keep.append(i)
        total = len(self.hr_paths)
        self.skipped = [self.hr_paths[i] for i in sorted(set(range(total)) - set(keep))]
        log.info(
            "skipped %d of %d images smaller than the %dx%d HR patch (lr_patch_size %d x scale %d)",
            len(self.skipped),
            total,
            hr_patch,
            hr_patch,
            p,
            s,
        )
        if not keep:
            raise ValueError(
                f"every one of the {total} HR images in {[str(d) for d in self.hr_dirs]} is smaller than the HR patch "
                f"{hr_patch}x{hr_patch} (lr_patch_size {p} x scale {s})"
            )
        self.hr_paths = [self.hr_paths[i] for i in keep]
        self.hr_sizes = [self.hr_sizes[i] for i in keep]
        if self.lr_paths is not None and self.lr_sizes is not None:
            self.lr_paths = [self.lr_paths[i] for i in keep]
            self.lr_sizes = [self.lr_sizes[i] for i in keep]

    def _validate_sizes(self) -> None:
        s, p = self.scale, self.lr_patch_size
        hr_patch = p * s
        for i, (hr_path, (h, w)) in enumerate(zip(self.hr_paths, self.hr_sizes, strict=True)):
            if self.lr_paths is None or self.lr_sizes is None:
                if h < hr_patch or w < hr_patch:
                    raise ValueError(
                        f"HR image {hr_path} is {h}x{w} (HxW), smaller than the HR patch {hr_patch}x{hr_patch} "
                        f"(lr_patch_size {p} x scale {s})"
                    )
                continue
            lr_path, (lh, lw) = self.lr_paths[i], self.lr_sizes[i]
            if abs(h - lh * s) >= s or abs(w - lw * s) >= s:
                raise ValueError(
                    f"size mismatch: HR {hr_path} is {h}x{w} but LR {lr_path} is {lh}x{lw}; expected LR x {s} "
                    f"= {lh * s}x{lw * s} to match the HR size (within {s - 1} px)"
                )
            if min(lh, h // s) < p or min(lw, w // s) < p:
                raise ValueError(
                    f"image pair too small for the patch: HR {hr_path} is {h}x{w}, LR {lr_path} is {lh}x{lw}, "
                    f"LR patch {p}x{p} (HR patch {hr_patch}x{hr_patch})"
                )

    def _check_cached_shapes(self) -> None:
        """The decoded arrays must have the header sizes (a file changed between the two reads otherwise)."""
        for paths, sizes, arrays in (
            (self.hr_paths, self.hr_sizes, self._hr_cache),
            (self.lr_paths, self.lr_sizes, self._lr_cache),
        ):
            if paths is None or sizes is None or arrays is None:
                continue
            for path, size, arr in zip(paths, sizes, arrays, strict=True):
                if arr.shape[:2] != size:
                    raise ValueError(f"image {path} decoded to {arr.shape[:2]} but its header says {size}")

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.hr_paths) * self.repeat

    def _load_hr(self, i: int) -> np.ndarray:
        return self._hr_cache[i] if self._hr_cache is not None else read_image_uint8(self.hr_paths[i])

    def _load_lr(self, i: int) -> np.ndarray:
        assert self.lr_paths is not None
        return self._lr_cache[i] if self._lr_cache is not None else read_image_uint8(self.lr_paths[i])

    def sample(self, image_index: int, sample_seed: int) -> dict[str, Any]:
        """The training item for HR image ``image_index`` drawn with the generator seeded by ``sample_seed``."""
        return self._draw(image_index, torch.Generator().manual_seed(int(sample_seed)), self.scale)

    def _draw(self, image_index: int, gen: torch.Generator, s: int) -> dict[str, Any]:
        """One ``(LR, HR)`` patch pair of HR image ``image_index`` at scale ``s`` drawn with ``gen`` (LR files only
        at the dataset's own scale)."""
        from sresolve.data.degradation import bicubic_degrade, imresize

        hr_path = self.hr_paths[image_index]
        hr_img = self._load_hr(image_index)
        if self.lr_paths is not None:
            lr_img = self._load_lr(image_index)
            hr_np, lr_np = paired_random_crop(
                hr_img, lr_img, self.lr_patch_size, s, gen, path=hr_path, lr_path=self.lr_paths[image_index]
            )
            hr = _uint8_hwc_to_chw(hr_np)
            lr = _uint8_hwc_to_chw(lr_np)
            hr_f, lr_f = _to_float(hr), _to_float(lr)
        else:
            hr = _uint8_hwc_to_chw(random_crop(hr_img, self.lr_patch_size * s, gen, path=hr_path))
            hr_f = _to_float(hr)
            # uint8 in: MATLAB computes in double and rounds half away from zero (= im2double, imresize, imwrite).
            lr_f = _to_float(imresize(hr, 1.0 / s)) if self.lr_quantize else bicubic_degrade(hr_f, s).contiguous()
        flags = draw_augment(self.use_hflip, self.use_rot, gen)
        if any(flags):
            hr_f = apply_augment(hr_f, *flags).contiguous()
            lr_f = apply_augment(lr_f, *flags).contiguous()
        return {"lr": lr_f, "hr": hr_f, "path": str(hr_path)}

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        idx, seed = self._parse_index(index)
        return self.sample(idx % len(self.hr_paths), seed)


class MultiScalePairedDataset(PairedImageDataset):
    """Training items of multi-related-task pre-training (EDT; HAT Table 7): one ``(LR, HR)`` pair per scale of
    ``scales`` from the same HR image, ``{"x2": {"lr", "hr"}, "x3": ..., "x4": ...}``.

    Every scale has an ``lr_patch_size`` LR patch (HR ``lr_patch_size * s``) cut at its own random position with its
    own flips, drawn from one generator seeded by the sample seed (the item is a pure function of ``(index, seed)``
    like :class:`PairedImageDataset`, which this extends: same folders, cache and size checks, done for the largest
    scale). LR made on the fly only (LR folders exist per scale; ``lr_dirs`` is refused).
    """

    def __init__(self, scales: Sequence[int], **kwargs: Any) -> None:
        scales = [_positive_int(s, "scales") for s in scales]
        if len(scales) < 2 or len(set(scales)) != len(scales):
            raise ValueError(f"scales must list at least two different scales, got {scales}")
        if kwargs.get("lr_dirs") is not None:
            raise ValueError("multi-scale training makes the LR on the fly; lr_dirs (LR files of one scale) is refused")
        kwargs.pop("scale", None)
        super().__init__(scale=max(scales), **kwargs)
        self.scales = tuple(sorted(scales))

    def sample(self, image_index: int, sample_seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(int(sample_seed))
        return {f"x{s}": self._draw(image_index, gen, s) for s in self.scales}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(images={len(self.hr_paths)}, scale={self.scale}, "
            f"lr_patch_size={self.lr_patch_size}, lr={'files' if self.lr_paths else 'on the fly'}, "
            f"repeat={self.repeat}, cached={self.cached})"
        )


# ---------------------------------------------------------------------------------------------------- benchmark
_LR_SUBDIRS = ("LR_bicubic/X{scale}", "LRbicx{scale}", "LR/X{scale}", "LR_bicubic/x{scale}")
_LR_AUTO_TMPLS = ("{}x{scale}", "{}", "{}_x{scale}", "{}_LRBI_x{scale}")


def resolve_lr_dir(hr_dir: Path, scale: int) -> Path | None:
    """Auto-detect the LR folder of a benchmark HR folder: ``<set>/LR_bicubic/X{s}`` (or ``<set>/LRbicx{s}``)."""
    for sub in _LR_SUBDIRS:
        cand = hr_dir.parent / sub.format(scale=scale)
        if cand.is_dir():
            return cand
    return None


def benchmark_set_name(hr_dir: PathLike) -> str:
    """Default name of a benchmark set: its folder, or the parent's for generic names (``Set5/HR`` -> ``Set5``)."""
    hr_dir = Path(hr_dir)
    generic = {"hr", "gt", "gtmod12", "gtmod4", "original", "hr_mod"}
    return hr_dir.parent.name if hr_dir.name.lower() in generic else hr_dir.name


def _quantize8(x: Tensor) -> Tensor:
    """Round to 8-bit levels like ``imwrite(im2uint8(x))``: ``floor(255 x + 0.5) / 255`` after clamping to [0, 1]."""
    return torch.floor(x.clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0


class BenchmarkDataset(Dataset):
    """Full benchmark images ``{lr, hr, name, dataset}`` (Set5/Set14/BSD100/Urban100/Manga109, DIV2K val, ...).

    Protocol (frameworks spec §2.3): HR is modcropped from the top-left to a multiple of ``modcrop`` (default
    ``scale``; BasicSR's ``GTmod12`` sets use 12, HAT's ×4 configs 4). The LR is

    * read from ``lr_dir`` when there is one (default: auto-detected ``<set>/LR_bicubic/X{s}`` or
      ``<set>/LRbicx{s}`` next to the HR folder; ``lr_dir=False`` disables LR files). The LR of ``<stem>.png`` is
      ``filename_tmpl.format(stem, scale=s)`` (``None`` tries ``<stem>x{s}``, ``<stem>``, ``<stem>_x{s}``,
      ``<stem>_LRBI_x{s}``). As in BasicSR, when ``LR x s`` is smaller than the modcropped HR, the HR is cropped
      (top-left) to ``LR x s``; when larger, it is an error naming both files.
    * otherwise made as ``imresize(HR, 1/s)`` (MATLAB bicubic, computed in float64) and rounded to 8-bit levels
      exactly as a saved LR PNG (``imwrite(im2uint8(.))``); ``lr_quantize=False`` keeps the float LR.

    Items: ``lr`` float32 ``(3, h, w)``, ``hr`` float32 ``(3, h*s, w*s)``, ``name`` (HR file stem), ``dataset``.
    """

    def __init__(
        self,
        hr_dir: PathLike,
        scale: int,
        lr_dir: PathLike | Literal[False] | None = None,
        modcrop: int | None = None,
        filename_tmpl: str | None = None,
        name: str | None = None,
        lr_quantize: bool = True,
    ) -> None:
        super().__init__()
        self.scale = _positive_int(scale, "scale")
        self.modcrop = self.scale if modcrop is None else _positive_int(modcrop, "modcrop")
        if self.modcrop % self.scale:
            raise ValueError(
                f"modcrop={self.modcrop} must be a multiple of scale={self.scale} (the HR must divide into LR pixels)"
            )
        self.hr_dir = Path(hr_dir)
        self.hr_paths = list_images(self.hr_dir)
        self.name = benchmark_set_name(self.hr_dir) if name is None else str(name)
        self.lr_quantize = bool(lr_quantize)
        if lr_dir is False:
            self.lr_dir: Path | None = None
        elif lr_dir is None:
            self.lr_dir = resolve_lr_dir(self.hr_dir, self.scale)
        else:
            self.lr_dir = Path(lr_dir)
            if not self.lr_dir.is_dir():
                raise FileNotFoundError(f"LR folder of benchmark set {self.name!r} not found: {self.lr_dir}")
        if filename_tmpl is not None and not isinstance(filename_tmpl, str):
            raise ValueError(f"filename_tmpl must be a string such as '{{}}x{{scale}}', got {filename_tmpl!r}")
        self.filename_tmpl = filename_tmpl
        self.lr_paths: list[Path] | None = None
        if self.lr_dir is not None:
            index = _index_folder(self.lr_dir)
            tmpls = (filename_tmpl,) if filename_tmpl is not None else _LR_AUTO_TMPLS
            self.lr_paths = []
            for hr_path in self.hr_paths:
                stems = [_format_name(t, hr_path.stem, self.scale, "filename_tmpl") for t in tmpls]
                found = next((f for f in (find_lr_file(index, st, hr_path) for st in stems) if f is not None), None)
                if found is None:
                    expected = " or ".join(str(self.lr_dir / f"{st}{hr_path.suffix}") for st in stems)
                    raise FileNotFoundError(f"LR image for HR {hr_path} not found: expected {expected}")
                self.lr_paths.append(found)

    def __len__(self) -> int:
        return len(self.hr_paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from sresolve.data.degradation import imresize, modcrop

        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"BenchmarkDataset index must be an int, got {index!r}")
        index = int(index) + (len(self) if index < 0 else 0)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for benchmark set {self.name!r} of length {len(self)}")
        hr_path = self.hr_paths[index]
        hr = read_image(hr_path)
        h0, w0 = hr.shape[-2:]
        if h0 < self.modcrop or w0 < self.modcrop:
            raise ValueError(f"HR image {hr_path} is {h0}x{w0}, smaller than modcrop {self.modcrop}")
        hr = modcrop(hr, self.modcrop)
        s = self.scale
        if self.lr_paths is not None:
            lr_path = self.lr_paths[index]
            lr = read_image(lr_path)
            lh, lw = lr.shape[-2:]
            h, w = hr.shape[-2:]
            if lh * s > h or lw * s > w:
                raise ValueError(
                    f"LR {lr_path} is {lh}x{lw}, so LR x {s} = {lh * s}x{lw * s} is larger than HR {hr_path} "
                    f"({h0}x{w0}, {h}x{w} after modcrop {self.modcrop})"
                )
            hr = hr[:, : lh * s, : lw * s]
        else:
            lr = imresize(hr.to(torch.float64), 1.0 / s)
            lr = (_quantize8(lr) if self.lr_quantize else lr.clamp(0.0, 1.0)).to(torch.float32)
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": hr_path.stem, "dataset": self.name}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, scale={self.scale}, "
            f"modcrop={self.modcrop}, lr={'files in ' + str(self.lr_dir) if self.lr_dir else 'bicubic on the fly'})"
        )


#: Alias: the benchmark dataset is also the generic "folder of full HR images (+ optional LR folder)" dataset.
ImageFolderPairDataset = BenchmarkDataset
