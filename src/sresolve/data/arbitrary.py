"""Data pipeline of arbitrary-scale SR: EQSR (Wang, Chen et al., CVPR 2023), spec ``archs_eqsr_amrsr.md`` A7, A9, E7.

Training (:class:`ArbitraryScaleTrainDataset`, spec A7). Every item draws its own scale ``s ~ U(scale_range)``
(default ``U(1, 4)``), so a batch mixes scales. An HR square of side ``w_hr = round(p * s)`` (``p`` =
``lr_patch_size``, 48 in EQSR) is cut at a random position of the 8-bit HR image and resized to the ``p x p`` LR with
Pillow's bicubic (the official path) or MATLAB's. The same dihedral transform is applied to both, then a
**contiguous** ``p x p`` window of the HR square is kept as the query window, with its pixel-centre coordinates in the
frame of the whole square (:func:`~sresolve.ops.coords.make_coord` of ``(w_hr, w_hr)``, sliced) and the cell
``2 / w_hr``. Every item has the same LR/HR/coord shapes, so the default collate batches mixed scales. The effective
scale is ``w_hr / p``, not the drawn ``s``.

Evaluation (:class:`ArbitraryScaleBenchmarkDataset`, spec A9): at integer scales the standard benchmark protocol
(:class:`~sresolve.data.datasets.BenchmarkDataset`: ``LR_bicubic/X{s}`` files when present, else MATLAB bicubic of
the modcropped HR, rounded to 8 bits); at non-integer scales (and, with ``integer_degradation="pil"``, at integer ones
as the official ×6/×8 test files do) ``h_lr = floor(H / s + 1e-9)``, the HR is cropped at the top-left to
``round(h_lr * s)`` and the LR is the resize of that crop to ``h_lr x w_lr``.

Data modules: :class:`ArbitraryScaleSRDataModule` (training + one validation/test loader per (set, scale), named
``<set>_x<scale:g>``) and :class:`ArbitraryScaleBenchmarkDataModule` (the standard benchmark folders at several
scales, evaluation only).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sresolve.data.datamodules import (
    SRDataModuleBase,
    _benchmark_sets,
    _check_keys,
    _check_trainer_sampler,
    _eval_specs,
    _path,
    _to_container,
    _train_spec,
)
from sresolve.data.datasets import (
    BenchmarkDataset,
    PairedImageDataset,
    PathLike,
    _quantize8,
    _to_float,
    _uint8_hwc_to_chw,
    benchmark_set_name,
)
from sresolve.data.degradation import imresize, pil_bicubic_resize
from sresolve.data.io import list_images, read_image, to_uint8
from sresolve.data.transforms import apply_augment, draw_augment
from sresolve.ops.coords import axis_centres
from sresolve.validation import check_bool, check_choice, check_int

__all__ = [
    "DEGRADATIONS",
    "ArbitraryScaleBenchmarkDataModule",
    "ArbitraryScaleBenchmarkDataset",
    "ArbitraryScaleSRDataModule",
    "ArbitraryScaleTrainDataset",
    "check_eval_scale",
    "check_scale_range",
    "scale_name",
]

log = logging.getLogger(__name__)

#: LR generators: ``"pil"`` = Pillow bicubic on 8-bit data (official EQSR/LIIF); ``"matlab"`` = MATLAB-exact bicubic.
DEGRADATIONS: tuple[str, ...] = ("pil", "matlab")
Degradation = Literal["pil", "matlab"]


# ---------------------------------------------------------------------------------------------------- checks
def _number(value: Any, key: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{key} must be {what}, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{key} must be {what}, got {value!r}")
    return out


def check_scale_range(value: Any, key: str = "scale_range") -> tuple[float, float]:
    """``(lo, hi)`` with ``1 <= lo <= hi``, both finite numbers; errors name ``key``."""
    value = _to_container(value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{key} must be a pair [lo, hi] of numbers with 1 <= lo <= hi, got {value!r}")
    lo = _number(value[0], f"{key}[0]", "a finite number >= 1")
    hi = _number(value[1], f"{key}[1]", "a finite number >= 1")
    if lo < 1.0 or hi < lo:
        raise ValueError(f"{key} must satisfy 1 <= lo <= hi, got {value!r}")
    return lo, hi


def check_eval_scale(value: Any, key: str = "scale") -> float:
    """An evaluation scale: a finite number > 1 (ints and integral floats are integer scales)."""
    out = _number(value, key, "a finite number > 1")
    if out <= 1.0:
        raise ValueError(f"{key} must be a finite number > 1, got {value!r}")
    return out


def _check_degradation(value: Any, key: str) -> str:
    return check_choice(value, DEGRADATIONS, key)


def _check_scales(value: Any, key: str) -> list[float]:
    value = _to_container(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{key} must be a non-empty list of scales > 1 such as [2, 3, 4, 2.5], got {value!r}")
    scales = [check_eval_scale(v, f"{key}[{i}]") for i, v in enumerate(value)]
    labels = [scale_name(s) for s in scales]
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        raise ValueError(f"{key} lists the same scale more than once: {dupes} (in {value!r})")
    return scales


def scale_name(scale: float) -> str:
    """The scale as it appears in loader names: ``2 -> '2'``, ``2.25 -> '2.25'`` (``:g`` format)."""
    return f"{float(scale):g}"


def _is_integer(scale: float) -> bool:
    return float(scale).is_integer()


def _uniform_int(high: int, generator: torch.Generator) -> int:
    """Uniform integer in ``[0, high)`` (no draw when there is a single choice)."""
    if high <= 1:
        return 0
    return int(torch.randint(0, high, (1,), generator=generator).item())


def _resize_u8(hr_u8: Tensor, size: tuple[int, int], degradation: str, lr_quantize: bool) -> Tensor:
    """LR of a ``uint8`` CHW crop as float32 in [0, 1]: Pillow bicubic, or MATLAB bicubic rounded to 8 bits (``uint8``
    in, MATLAB computes in double and rounds half away from zero, as PairedImageDataset) or kept in float."""
    if degradation == "pil":
        return pil_bicubic_resize(hr_u8, size)
    if lr_quantize:
        return _to_float(imresize(hr_u8, size=size))
    return imresize(hr_u8.to(torch.float64) / 255.0, size=size).clamp_(0.0, 1.0).to(torch.float32).contiguous()


# ---------------------------------------------------------------------------------------------------- training
class ArbitraryScaleTrainDataset(PairedImageDataset):
    """Random arbitrary-scale training items ``{lr, hr, coord, cell, scale, path}`` (EQSR, spec A7).

    Per item, from the sample's generator (in this order): ``s ~ U(scale_range)``; the HR square side
    ``w_hr = round(lr_patch_size * s)`` (Python rounding, as the official ``round(48 * s)``) and its uniform position
    in the 8-bit image; LR = the square resized to ``lr_patch_size`` squared by ``degradation`` (``"pil"``:
    :func:`~sresolve.data.degradation.pil_bicubic_resize`, the official path; ``"matlab"``:
    :func:`~sresolve.data.degradation.imresize` with ``size=``, rounded to 8-bit levels like a saved PNG, or kept in
    float with ``lr_quantize=False``); the flags ``hflip``/``vflip``/``transpose`` (p = 0.5 each, ``use_hflip``,
    ``use_rot``) applied to the LR and the square alike; the uniform position of the ``p x p`` query window inside
    the (transformed) square. :meth:`sample_params` returns these draws.

    ``query_size`` ``q`` (default ``p``, the official 48 × 48 window) sets the side of the query window; a larger
    window supervises more HR pixels per item (the decoder's cost grows with it). It must fit the smallest square:
    ``q <= round(p * lo)``.

    Items:

    * ``lr``: float32 ``(3, p, p)`` in [0, 1];
    * ``hr``: float32 ``(3, q, q)``, the query window's pixels;
    * ``coord``: float32 ``(q, q, 2)``, ``(y, x)`` pixel centres of the window in the square's frame, i.e.
      ``make_coord((w_hr, w_hr))[top:top + q, left:left + q]``;
    * ``cell``: float32 0-d, ``2 / w_hr`` (one HR pixel in that frame; the official ``cell`` is this value
      broadcast to ``(p, p, 2)``);
    * ``scale``: float32 0-d, the effective scale ``w_hr / p``;
    * ``path``: the HR file.

    Image list, header-only sizes, decoded ``uint8`` cache, ``recursive``, ``repeat``, indexing with
    ``(index, sample_seed)`` and the seeding rules are those of :class:`~sresolve.data.datasets.PairedImageDataset`.
    Every image must hold the largest square, ``round(p * hi)`` (and ``min_size`` when given: the official ImageNet
    list keeps images whose sides are both > 4 * 48 + 1 = 193, i.e. ``min_size=194``); a smaller one is an error
    naming it, or, with ``skip_small=True``, left out with one log line (the left-out files are in :attr:`skipped`).
    """

    def __init__(
        self,
        hr_dirs: PathLike | Sequence[PathLike],
        lr_patch_size: int = 48,
        scale_range: Sequence[float] = (1.0, 4.0),
        degradation: Degradation = "pil",
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
        min_size: int | None = None,
        query_size: int | None = None,
    ) -> None:
        patch = check_int(lr_patch_size, "lr_patch_size")
        self.scale_range: tuple[float, float] = check_scale_range(scale_range, "scale_range")
        self.query_size = patch if query_size is None else check_int(query_size, "query_size")
        if self.query_size > round(patch * self.scale_range[0]):
            raise ValueError(
                f"query_size={self.query_size} must fit the smallest HR square round(lr_patch_size * "
                f"scale_range[0]) = {round(patch * self.scale_range[0])}"
            )
        self.degradation: str = _check_degradation(degradation, "degradation")
        if not isinstance(lr_quantize, bool):
            raise ValueError(f"lr_quantize must be true or false, got {lr_quantize!r}")
        if self.degradation == "pil" and not lr_quantize:
            raise ValueError("lr_quantize=false needs degradation='matlab': the Pillow resize works on 8-bit data")
        self.min_size = None if min_size is None else check_int(min_size, "min_size")
        #: Side of the largest HR square (``round(p * hi)``).
        self.max_hr_side = round(patch * self.scale_range[1])
        #: Smallest image side accepted: the largest square, or ``min_size`` when larger.
        self.min_side = max(self.max_hr_side, self.min_size or 0)
        super().__init__(
            hr_dirs,
            scale=1,  # unused: the scale is drawn per item
            lr_patch_size=patch,
            lr_dirs=None,
            use_hflip=use_hflip,
            use_rot=use_rot,
            repeat=repeat,
            cache=cache,
            cache_max_gb=cache_max_gb,
            seed=seed,
            lr_quantize=lr_quantize,
            num_threads=num_threads,
            recursive=recursive,
            skip_small=skip_small,
        )

    # ------------------------------------------------------------------ checks (replace the fixed-scale ones)
    def _requirement(self) -> str:
        why = f"the largest HR crop, lr_patch_size {self.lr_patch_size} x max scale {self.scale_range[1]:g}"
        if self.min_side > self.max_hr_side:
            why = f"min_size {self.min_side}; {why} = {self.max_hr_side}"
        return f"{self.min_side}x{self.min_side} ({why})"

    def _drop_small(self) -> None:
        side = self.min_side
        keep = [i for i, (h, w) in enumerate(self.hr_sizes) if h >= side and w >= side]
        total = len(self.hr_paths)
        kept = set(keep)
        self.skipped = [p for i, p in enumerate(self.hr_paths) if i not in kept]
        log.info("skipped %d of %d images smaller than %s", len(self.skipped), total, self._requirement())
        if not keep:
            raise ValueError(
                f"every one of the {total} HR images in {[str(d) for d in self.hr_dirs]} is smaller than "
                f"{self._requirement()}"
            )
        self.hr_paths = [self.hr_paths[i] for i in keep]
        self.hr_sizes = [self.hr_sizes[i] for i in keep]

    def _validate_sizes(self) -> None:
        side = self.min_side
        for path, (h, w) in zip(self.hr_paths, self.hr_sizes, strict=True):
            if h < side or w < side:
                raise ValueError(
                    f"HR image {path} is {h}x{w} (HxW), smaller than {self._requirement()}; use skip_small=true to "
                    "leave such images out"
                )

    # ------------------------------------------------------------------ sampling
    def _draw(self, image_index: int, gen: torch.Generator) -> dict[str, Any]:
        h, w = self.hr_sizes[image_index]
        p = self.lr_patch_size
        lo, hi = self.scale_range
        s = lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64).item())
        side = round(p * s)
        top = _uniform_int(h - side + 1, gen)
        left = _uniform_int(w - side + 1, gen)
        flags = draw_augment(self.use_hflip, self.use_rot, gen)
        return {
            "drawn_scale": s,
            "hr_side": side,
            "crop_top": top,
            "crop_left": left,
            "flips": flags,
            "window_top": _uniform_int(side - self.query_size + 1, gen),
            "window_left": _uniform_int(side - self.query_size + 1, gen),
        }

    def sample_params(self, image_index: int, sample_seed: int) -> dict[str, Any]:
        """The random draws of one item: ``drawn_scale`` (s), ``hr_side`` (w_hr), ``crop_top``/``crop_left`` (in the
        image), ``flips`` (hflip, vflip, transpose), ``window_top``/``window_left`` (in the transformed square)."""
        return self._draw(image_index, torch.Generator().manual_seed(int(sample_seed)))

    def sample(self, image_index: int, sample_seed: int) -> dict[str, Any]:
        """The training item for HR image ``image_index`` drawn with the generator seeded by ``sample_seed``."""
        prm = self.sample_params(image_index, sample_seed)
        path = self.hr_paths[image_index]
        img = self._load_hr(image_index)
        if img.shape[:2] != self.hr_sizes[image_index]:
            raise ValueError(
                f"image {path} decoded to {img.shape[:2]} but its header says {self.hr_sizes[image_index]}"
            )
        p, side = self.lr_patch_size, prm["hr_side"]
        top, left = prm["crop_top"], prm["crop_left"]
        crop = _uint8_hwc_to_chw(img[top : top + side, left : left + side])
        lr = _resize_u8(crop, (p, p), self.degradation, self.lr_quantize)
        flags = prm["flips"]
        if any(flags):
            lr = apply_augment(lr, *flags).contiguous()
            crop = apply_augment(crop, *flags)
        wt, wl, q = prm["window_top"], prm["window_left"], self.query_size
        hr = _to_float(crop[:, wt : wt + q, wl : wl + q])
        centres = axis_centres(side, dtype=torch.float32)
        coord = torch.stack(torch.meshgrid(centres[wt : wt + q], centres[wl : wl + q], indexing="ij"), dim=-1)
        return {
            "lr": lr,
            "hr": hr,
            "coord": coord.contiguous(),
            "cell": torch.tensor(2.0 / side, dtype=torch.float32),
            "scale": torch.tensor(side / p, dtype=torch.float32),
            "path": str(path),
        }

    def __repr__(self) -> str:
        lo, hi = self.scale_range
        return (
            f"{type(self).__name__}(images={len(self.hr_paths)}, scale_range=({lo:g}, {hi:g}), "
            f"lr_patch_size={self.lr_patch_size}, degradation={self.degradation!r}, repeat={self.repeat}, "
            f"cached={self.cached})"
        )


# ---------------------------------------------------------------------------------------------------- evaluation
class ArbitraryScaleBenchmarkDataset(Dataset):
    """Full images ``{lr, hr, name, dataset, scale}`` for evaluation at any scale > 1 (EQSR protocol, spec A9).

    * Integer ``scale`` with ``integer_degradation="matlab"`` (default): exactly
      :class:`~sresolve.data.datasets.BenchmarkDataset` (``lr_dir=None`` auto-detects ``<set>/LR_bicubic/X{s}``; without
      LR files the LR is MATLAB bicubic of the modcropped HR rounded to 8 bits; ``lr_dir=False`` forces that).
    * Otherwise (non-integer scales, or integer ones with ``integer_degradation="pil"``, the official ×6/×8 test
      sets): ``h_lr = floor(H / s + 1e-9)``, ``w_lr = floor(W / s + 1e-9)``; the HR is cropped at the top-left to
      ``(round(h_lr * s), round(w_lr * s))`` (Python rounding, as the official code) and the LR is that crop resized to
      ``(h_lr, w_lr)`` by ``noninteger_degradation`` (resp. ``integer_degradation``): ``"pil"`` (Pillow bicubic of the
      8-bit HR, the official path) or ``"matlab"`` (MATLAB bicubic in float64, rounded to 8 bits unless
      ``lr_quantize=False``). LR files are not used on this path (``lr_dir`` must be ``None`` or ``False``).

    ``scale`` in the items is the requested scale (float32 0-d); at non-integer scales the HR/LR size ratio differs
    from it by less than one HR pixel per side. An image too small for the scale is an error naming the file.
    """

    def __init__(
        self,
        hr_dir: PathLike,
        scale: float,
        lr_dir: PathLike | Literal[False] | None = None,
        name: str | None = None,
        integer_degradation: Degradation = "matlab",
        noninteger_degradation: Degradation = "pil",
        lr_quantize: bool = True,
        filename_tmpl: str | None = None,
    ) -> None:
        super().__init__()
        self.scale = check_eval_scale(scale, "scale")
        self.integer_degradation = _check_degradation(integer_degradation, "integer_degradation")
        self.noninteger_degradation = _check_degradation(noninteger_degradation, "noninteger_degradation")
        self.lr_quantize = check_bool(lr_quantize, "lr_quantize")
        integer = _is_integer(self.scale)
        self.degradation = self.integer_degradation if integer else self.noninteger_degradation
        self.hr_dir = Path(hr_dir)
        self._benchmark: BenchmarkDataset | None = None
        if integer and self.integer_degradation == "matlab":
            self._benchmark = BenchmarkDataset(
                self.hr_dir,
                int(self.scale),
                lr_dir=lr_dir,
                filename_tmpl=filename_tmpl,
                name=name,
                lr_quantize=self.lr_quantize,
            )
            self.hr_paths = self._benchmark.hr_paths
            self.name = self._benchmark.name
            self.lr_dir = self._benchmark.lr_dir
        else:
            if lr_dir is not None and lr_dir is not False:
                raise ValueError(
                    f"lr_dir={str(lr_dir)!r}: LR files are only read at integer scales with integer_degradation="
                    f"'matlab'; at scale {scale_name(self.scale)} the LR is made from the HR "
                    f"({self.degradation!r}), so leave lr_dir unset"
                )
            self.hr_paths = list_images(self.hr_dir)
            self.name = benchmark_set_name(self.hr_dir) if name is None else str(name)
            self.lr_dir = None

    def __len__(self) -> int:
        return len(self.hr_paths)

    def lr_size(self, hr_size: tuple[int, int]) -> tuple[int, int]:
        """``(h_lr, w_lr) = floor(size / s + 1e-9)`` of the resize path (may be 0 for a too-small image)."""
        return math.floor(hr_size[0] / self.scale + 1e-9), math.floor(hr_size[1] / self.scale + 1e-9)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scale = torch.tensor(self.scale, dtype=torch.float32)
        if self._benchmark is not None:
            item = self._benchmark[index]
            item["scale"] = scale
            return item
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"ArbitraryScaleBenchmarkDataset index must be an int, got {index!r}")
        index = int(index) + (len(self) if index < 0 else 0)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for benchmark set {self.name!r} of length {len(self)}")
        path = self.hr_paths[index]
        hr = read_image(path)
        h0, w0 = int(hr.shape[-2]), int(hr.shape[-1])
        h_lr, w_lr = self.lr_size((h0, w0))
        if h_lr < 1 or w_lr < 1:
            raise ValueError(
                f"HR image {path} is {h0}x{w0}, too small for scale {scale_name(self.scale)} "
                f"(LR would be {h_lr}x{w_lr})"
            )
        s = self.scale
        hr = hr[:, : min(round(h_lr * s), h0), : min(round(w_lr * s), w0)].contiguous()
        if self.degradation == "pil":
            lr = pil_bicubic_resize(torch.from_numpy(to_uint8(hr)), (h_lr, w_lr))
        else:
            lr = imresize(hr.to(torch.float64), size=(h_lr, w_lr))
            lr = (_quantize8(lr) if self.lr_quantize else lr.clamp(0.0, 1.0)).to(torch.float32)
        return {"lr": lr.contiguous(), "hr": hr, "name": path.stem, "dataset": self.name, "scale": scale}

    def __repr__(self) -> str:
        how = (
            "files in " + str(self.lr_dir)
            if self.lr_dir is not None
            else ("matlab bicubic (modcrop)" if self._benchmark is not None else f"{self.degradation} resize")
        )
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, scale={scale_name(self.scale)}, lr={how})"
        )


# ---------------------------------------------------------------------------------------------------- data modules
_TRAIN_KEYS = {
    "hr_dirs": "HR folder or list of folders (required)",
    "repeat": "dataset enlarge ratio",
    "cache": "true | false | auto",
    "cache_max_gb": "decoded-cache size limit for cache=auto",
    "use_hflip": "random horizontal flip",
    "use_rot": "random vertical flip + transpose",
    "lr_quantize": "round the MATLAB-bicubic LR to 8-bit levels (degradation=matlab only)",
    "recursive": "also take the images of sub-folders",
    "skip_small": "leave out images smaller than the largest HR crop / min_size (logged) instead of failing",
    "min_size": "smallest image side accepted (ImageNet list of the official code: 194, i.e. sides > 193)",
}
_EVAL_KEYS = {
    "hr_dir": "HR folder (required)",
    "lr_dir": "LR folder for integer scales, may contain '{scale}' (null = auto-detect LR_bicubic/X{s}, false = none)",
    "filename_tmpl": "LR name template (null = auto)",
    "lr_quantize": "round the MATLAB-bicubic LR to 8-bit levels",
}


def _arbitrary_train_spec(spec: Any, key: str = "data.train") -> dict[str, Any]:
    spec = _to_container(spec)
    if isinstance(spec, (str, os.PathLike)):
        spec = {"hr_dirs": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{key} must be a mapping with at least 'hr_dirs', got {spec!r}")
    _check_keys(spec, _TRAIN_KEYS, key)
    rest = {k: v for k, v in spec.items() if k != "min_size"}
    out = _train_spec(rest, key)
    if spec.get("min_size") is not None:
        out["min_size"] = check_int(spec["min_size"], f"{key}.min_size")
    return out


def _arbitrary_eval_specs(sets: Any, key: str) -> dict[str, dict[str, Any]]:
    """Evaluation set specs without ``modcrop`` (the arbitrary-scale protocol crops by scale)."""
    return _eval_specs(sets, key, allowed=_EVAL_KEYS)


class ArbitraryScaleSRDataModule(SRDataModuleBase):
    """Arbitrary-scale SR data (EQSR): random-scale training items + one evaluation loader per (set, scale).

    Args:
        train: training spec ``{hr_dirs: [...], repeat: 1, cache: auto, cache_max_gb: 8, use_hflip: true,
            use_rot: true, lr_quantize: true, recursive: false, skip_small: false, min_size: null}``
            (:class:`ArbitraryScaleTrainDataset`), or an HR folder path; ``None`` = no training.
        val: ``{name: {hr_dir, lr_dir: null, filename_tmpl: null, lr_quantize: true}}`` (or ``{name: hr_dir}``).
            ``lr_dir`` is used at integer scales only; with several integer scales it must contain ``{scale}``
            (e.g. ``.../LR_bicubic/X{scale}``).
        test: like ``val``, for ``trainer.test`` (default: the validation sets).
        lr_patch_size: LR patch side ``p`` (48 in EQSR); the HR query window is ``p x p`` too, unless
        query_size: side ``q`` of the HR query window (``null`` = ``p``, official); ``q <= round(p * scale_range[0])``.
        batch_size: **global** batch size, split evenly over the processes.
        num_workers, pin_memory, persistent_workers, seed, samples_root, name: as
            :class:`~sresolve.data.datamodules.PairedSRDataModule` (``samples_root`` fills ``train``/``val`` left at
            ``None`` with the embedded sample photographs, validation set ``"samples"``).
        scale_range: ``[lo, hi]`` of the per-item training scale (EQSR: ``[1, 4]``).
        degradation: training LR generator, ``"pil"`` (official) or ``"matlab"``.
        val_scales: evaluation scales (default ``[2, 3, 4]``), numbers > 1, integer or not.
        test_scales: scales of the test loaders (default: ``val_scales``).
        noninteger_degradation: LR generator of the non-integer evaluation scales (``"pil"`` official).
        integer_degradation: ``"matlab"`` (default: LR files or MATLAB bicubic, the standard protocol) or ``"pil"``
            (the resize path at integer scales too, as the official ×6/×8 test sets).

    Loaders are named ``<set>_x<scale:g>`` (``samples_x2``, ``samples_x2.25``), set by set, each set's scales in the
    given order: :attr:`val_names` / :attr:`test_names`, with the scale of each in :attr:`val_scale_of` /
    :attr:`test_scale_of` and the set in :attr:`val_set_of` / :attr:`test_set_of`.
    Attributes (after :meth:`setup`): ``train_set``, ``val_sets``, ``test_sets`` (name -> dataset),
    ``per_device_batch_size``.
    """

    def __init__(
        self,
        train: Mapping[str, Any] | str | None = None,
        val: Mapping[str, Any] | None = None,
        test: Mapping[str, Any] | None = None,
        lr_patch_size: int = 48,
        batch_size: int = 32,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool | None = None,
        seed: int = 0,
        samples_root: str | os.PathLike[str] | None = None,
        name: str | None = None,
        scale_range: Sequence[float] = (1.0, 4.0),
        degradation: Degradation = "pil",
        val_scales: Sequence[float] | None = (2, 3, 4),
        test_scales: Sequence[float] | None = None,
        noninteger_degradation: Degradation = "pil",
        integer_degradation: Degradation = "matlab",
        query_size: int | None = None,
    ) -> None:
        super().__init__()
        self.lr_patch_size = check_int(lr_patch_size, "data.lr_patch_size")
        self.query_size = None if query_size is None else check_int(query_size, "data.query_size")
        self.batch_size = check_int(batch_size, "data.batch_size")
        self.num_workers = check_int(num_workers, "data.num_workers", minimum=0)
        self.pin_memory = check_bool(pin_memory, "data.pin_memory")
        if persistent_workers is not None:
            check_bool(persistent_workers, "data.persistent_workers")
        self.persistent_workers = persistent_workers
        self.seed = check_int(seed, "data.seed", minimum=0)
        self.name = name
        self.scale_range = check_scale_range(scale_range, "data.scale_range")
        self.degradation = _check_degradation(degradation, "data.degradation")
        self.noninteger_degradation = _check_degradation(noninteger_degradation, "data.noninteger_degradation")
        self.integer_degradation = _check_degradation(integer_degradation, "data.integer_degradation")
        self.val_scales = _check_scales((2, 3, 4) if val_scales is None else val_scales, "data.val_scales")
        self.test_scales = (
            list(self.val_scales) if test_scales is None else _check_scales(test_scales, "data.test_scales")
        )
        self.samples_root = _path(samples_root, "data.samples_root") if samples_root is not None else None
        if self.samples_root is not None:
            if train is None:
                train = {"hr_dirs": [str(self.samples_root / "train" / "HR")]}
            if val is None:
                val = {"samples": {"hr_dir": str(self.samples_root / "val" / "HR")}}
        self.train_spec = _arbitrary_train_spec(train) if train is not None else None
        if self.train_spec is not None and self.degradation == "pil" and self.train_spec.get("lr_quantize") is False:
            raise ValueError("data.train.lr_quantize=false needs data.degradation=matlab (Pillow works on 8 bits)")
        self.val_specs = _arbitrary_eval_specs(val, "data.val")
        self.test_specs = _arbitrary_eval_specs(test, "data.test") if test is not None else dict(self.val_specs)
        self._val_plan = self._plan(self.val_specs, self.val_scales, "data.val")
        self._test_plan = self._plan(self.test_specs, self.test_scales, "data.test" if test is not None else "data.val")
        self.val_names: list[str] = list(self._val_plan)
        self.test_names: list[str] = list(self._test_plan)
        self.val_scale_of: dict[str, float] = {n: s for n, (_, s, _) in self._val_plan.items()}
        self.test_scale_of: dict[str, float] = {n: s for n, (_, s, _) in self._test_plan.items()}
        self.val_set_of: dict[str, str] = {n: st for n, (st, _, _) in self._val_plan.items()}
        self.test_set_of: dict[str, str] = {n: st for n, (st, _, _) in self._test_plan.items()}
        self.train_set: ArbitraryScaleTrainDataset | None = None
        self.val_sets: dict[str, ArbitraryScaleBenchmarkDataset] = {}
        self.test_sets: dict[str, ArbitraryScaleBenchmarkDataset] = {}
        self.per_device_batch_size = self.batch_size

    def _plan(
        self, specs: Mapping[str, dict[str, Any]], scales: Sequence[float], key: str
    ) -> dict[str, tuple[str, float, dict[str, Any]]]:
        """``{loader name: (set name, scale, dataset kwargs)}``, set-major, with ``lr_dir`` resolved per scale."""
        uses_files = [s for s in scales if _is_integer(s) and self.integer_degradation == "matlab"]
        plan: dict[str, tuple[str, float, dict[str, Any]]] = {}
        for set_name, spec in specs.items():
            lr_dir = spec.get("lr_dir")
            templated = isinstance(lr_dir, Path) and "{scale}" in str(lr_dir)
            if isinstance(lr_dir, Path) and not templated and len(uses_files) > 1:
                raise ValueError(
                    f"{key}.{set_name}.lr_dir={str(lr_dir)!r} serves several integer scales "
                    f"{[scale_name(s) for s in uses_files]}: write it with '{{scale}}' (e.g. .../LR_bicubic/X{{scale}})"
                )
            for s in scales:
                kwargs = dict(spec)
                if isinstance(lr_dir, Path):
                    if s in uses_files:
                        kwargs["lr_dir"] = Path(str(lr_dir).replace("{scale}", scale_name(s)))
                    else:
                        kwargs.pop("lr_dir")
                loader = f"{set_name}_x{scale_name(s)}"
                if loader in plan:
                    raise ValueError(f"{key}: two loaders would be named {loader!r}; rename set {set_name!r}")
                plan[loader] = (set_name, s, kwargs)
        return plan

    def _datasets(
        self, plan: Mapping[str, tuple[str, float, dict[str, Any]]]
    ) -> dict[str, ArbitraryScaleBenchmarkDataset]:
        return {
            loader: ArbitraryScaleBenchmarkDataset(
                scale=s,
                name=set_name,
                integer_degradation=self.integer_degradation,  # type: ignore[arg-type]
                noninteger_degradation=self.noninteger_degradation,  # type: ignore[arg-type]
                **kwargs,
            )
            for loader, (set_name, s, kwargs) in plan.items()
        }

    # ------------------------------------------------------------------ lightning hooks
    def setup(self, stage: str | None = None) -> None:
        world = self._setup_world()
        if stage in (None, "fit") and self.train_spec is not None and self.train_set is None:
            _check_trainer_sampler(self, world)
            self.train_set = ArbitraryScaleTrainDataset(
                lr_patch_size=self.lr_patch_size,
                scale_range=self.scale_range,
                degradation=self.degradation,  # type: ignore[arg-type]
                seed=self.seed,
                query_size=self.query_size,
                **self.train_spec,
            )
        if stage in (None, "fit", "validate") and not self.val_sets:
            self.val_sets = self._datasets(self._val_plan)
        if stage in (None, "test") and not self.test_sets:
            self.test_sets = self._datasets(self._test_plan)


class ArbitraryScaleBenchmarkDataModule(ArbitraryScaleSRDataModule):
    """Benchmark evaluation at several scales: Set5/Set14/BSD100/Urban100/Manga109 found like
    :class:`~sresolve.data.datamodules.BenchmarkDataModule` (``<root>/<Name>/HR``, ``B100`` alias, ...), one loader
    per (set, scale) named ``<set>_x<scale:g>``; batch 1; no training data.

    Args:
        root: the folder holding the sets, or ``{name: hr_dir}`` / ``{name: {hr_dir, lr_dir, ...}}``.
        names: sets to use; ``None`` = those present (at least one), an explicit list requires each.
        test_scales: evaluation scales (numbers > 1); the Hydra config takes the top-level ``scales`` list.
        integer_degradation, noninteger_degradation, lr_quantize: the protocol
            (:class:`ArbitraryScaleBenchmarkDataset`).
        num_workers, pin_memory, name: as :class:`ArbitraryScaleSRDataModule`.

    ``test_names``, ``test_scale_of``, ``test_set_of`` (the same as the ``val_`` ones); :meth:`val_dataloader` returns
    the test loaders.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Mapping[str, Any],
        names: Sequence[str] | None = None,
        test_scales: Sequence[float] = (2, 3, 4),
        num_workers: int = 2,
        pin_memory: bool = True,
        lr_quantize: bool = True,
        integer_degradation: Degradation = "matlab",
        noninteger_degradation: Degradation = "pil",
        name: str | None = None,
    ) -> None:
        quantize = check_bool(lr_quantize, "data.lr_quantize")
        sets = _benchmark_sets(root, names, _arbitrary_eval_specs)
        val = {n: {"lr_quantize": quantize, **spec} for n, spec in sets.items()}
        scales = _check_scales(test_scales, "data.test_scales")
        super().__init__(
            train=None,
            val=val,
            val_scales=scales,
            batch_size=1,
            num_workers=num_workers,
            pin_memory=pin_memory,
            name=name,
            integer_degradation=integer_degradation,
            noninteger_degradation=noninteger_degradation,
        )
        self.sets = sets

    def setup(self, stage: str | None = None) -> None:
        super().setup("test")

    def val_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()
