"""Multi-reference SR data (AMRSR, Pesavento et al., ICCV 2021, ×4), spec ``archs_eqsr_amrsr.md`` B9, B10, B13.

Every loader yields the same batch (built by :func:`collate_multiref`):

* ``"lr"``: float32 ``B×3×h×w`` in [0, 1]; ``"hr"``: float32 ``B×3×4h×4w``;
* ``"refs"``: a list of length ``B``, each a list of ``N_M`` float32 tensors ``3×H_m×W_m`` (sizes may differ from
  each other and from the input); the true / most similar reference comes first;
* ``"name"``: ``list[str]``; ``"ref_names"``: ``list[list[str]]`` (file stems).

Layouts (spec B10):

* ``cufed`` (training, SRNTT/TTSR): ``<root>/input/*.png`` and ``<root>/ref/*.png`` with the same file names, one
  reference per input. An item is a random HR crop of ``4 * lr_patch_size`` of the input (SRNTT: 160), its LR made by
  the degradation, the own reference (whole, or a random crop of ``ref_patch_size``) and ``n_refs - 1`` distractors
  drawn at random, without repetition, from the **other** pairs' references or from ``distractor_dir`` (choice C10:
  CUFED has one reference per input, so ``N_M > 1`` needs references of unrelated scenes).
* ``cufed5`` (test): ``<root>/NNN_0.png`` = HR, ``NNN_1.png`` .. ``NNN_5.png`` = references, most to least similar;
  the first ``n_refs`` are used, or exactly the levels of ``ref_levels`` (``[1]``: the single-reference protocol).
* ``sun80``: ``<root>/Sun_Hays_SR_groundtruth/<name>.jpg`` and ``<root>/Sun_Hays_SR_scenematches/<name>/*.jpg``
  (references sorted by file name, the first ``n_refs``).
* ``folder`` (generic): ``<root>/<name>/hr.png`` and ``<root>/<name>/refs/*.png`` (sorted by file name).
* ``samples``: the embedded stereo pair of scikit-image (:func:`materialize_multiref_samples`): a ``cufed`` training
  layout with a distractor folder and a ``folder`` validation layout, under ``<root>/multiref``.

LR degradation (spec B10): ``"pil"`` (default; the RefSR convention of TTSR/MASA: Pillow bicubic of the 8-bit HR) or
``"matlab"`` (MATLAB bicubic rounded to 8 bits). Evaluation HR images are modcropped to the scale first.
Augmentation (spec B9): random hflip / vflip / transpose applied identically to LR and HR; the references get their
own draw each (``ref_augment="independent"``, TTSR), the LR/HR one (``"same"``) or none. Evaluation sets are
scored with the RefSR convention of choice C12 (Y channel, no border crop): that is the evaluator's business, the
data only fixes the LR/HR pair.

Training randomness follows :mod:`sresolve.data.datasets`: an item is a pure function of ``(index, sample_seed)``
(what :class:`~sresolve.data.samplers.ResumableSampler` yields), so runs resume exactly and DDP ranks draw disjoint
shards; evaluation loaders use :class:`~sresolve.data.datamodules.ShardedEvalSampler` with batch 1.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from sresolve.data.arbitrary import DEGRADATIONS, _resize_u8, _uniform_int
from sresolve.data.datamodules import (
    SRDataModuleBase,
    _check_keys,
    _check_trainer_sampler,
    _path,
    _to_container,
)
from sresolve.data.datasets import SeededItems, _default_threads, _map_threads, _to_float, _uint8_hwc_to_chw
from sresolve.data.degradation import modcrop
from sresolve.data.io import IMAGE_EXTENSIONS, image_size, list_images, read_image_uint8, write_image
from sresolve.data.transforms import apply_augment, draw_augment
from sresolve.validation import check_bool, check_choice, check_int

__all__ = [
    "DISTRACTOR_MODES",
    "EVAL_LAYOUTS",
    "REF_AUGMENTS",
    "TRAIN_LAYOUTS",
    "MultiRefEvalDataset",
    "MultiRefRecord",
    "MultiRefSRDataModule",
    "MultiRefTrainDataset",
    "collate_multiref",
    "index_cufed5",
    "index_cufed_pairs",
    "index_folder",
    "index_sun80",
    "materialize_multiref_samples",
]

log = logging.getLogger(__name__)

#: Layouts of the training set (``samples`` = the embedded stereo pair in the ``cufed`` layout).
TRAIN_LAYOUTS: tuple[str, ...] = ("cufed", "samples")
#: Layouts of the evaluation sets (``samples`` = the embedded stereo pair in the ``folder`` layout).
EVAL_LAYOUTS: tuple[str, ...] = ("cufed5", "sun80", "folder", "samples")
#: How training references are augmented: own draw per reference (TTSR), the LR/HR draw, or not at all.
REF_AUGMENTS: tuple[str, ...] = ("independent", "same", "none")
#: Where the ``n_refs - 1`` extra training references come from (choice C10): other pairs / distractor_dir, or none.
DISTRACTOR_MODES: tuple[str, ...] = ("random", "none")

_SCALE = 4  # AMRSR is a ×4 model: relu3_1 sits at 1/4 of the input, the swapped maps at ×1/×2/×4 (spec B3)
_FLIPS_OFF = (False, False, False)


# ---------------------------------------------------------------------------------------------------- checks
def _layout(value: Any, allowed: Sequence[str], key: str) -> str:
    if value not in allowed:
        raise ValueError(f"{key}: unknown layout {value!r}; allowed layouts: {', '.join(allowed)}")
    return str(value)


def _check_scale(value: Any, key: str) -> int:
    scale = check_int(value, key)
    if scale != _SCALE:
        raise ValueError(
            f"{key} must be {_SCALE}, got {value!r}: AMRSR is a x4 model (its reference features are matched at "
            "relu3_1, 1/4 of the input size)"
        )
    return scale


def _check_ref_levels(value: Any, key: str) -> tuple[int, ...] | None:
    value = _to_container(value)
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= int(v) <= 5 for v in value)
    ):
        raise ValueError(
            f"{key} must be a non-empty list of CUFED5 reference levels in 1..5 such as [1], got {value!r}"
        )
    levels = tuple(int(v) for v in value)
    if len(set(levels)) != len(levels):
        raise ValueError(f"{key} lists a level more than once: {list(levels)}")
    return levels


def _existing_dir(path: Path, what: str, expected: str = "") -> Path:
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "not found"
        raise FileNotFoundError(f"{what} {state}: {path}" + (f" (expected {expected})" if expected else ""))
    return path


def _images_in(folder: Path) -> list[Path]:
    """The images of ``folder`` sorted by name, ``[]`` when it has none (the caller words the error)."""
    try:
        return list_images(folder)
    except ValueError:
        return []


# ---------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class MultiRefRecord:
    """One sample of a multi-reference set: its name, HR file and candidate reference files (most similar first)."""

    name: str
    hr_path: Path
    ref_paths: tuple[Path, ...]


_CUFED5_NAME = re.compile(r"^(?P<sample>.+)_(?P<level>\d+)$")


def index_cufed5(root: Path, ref_levels: Sequence[int] | None = None) -> list[MultiRefRecord]:
    """CUFED5 groups ``<root>/NNN_0.png`` (HR) + ``NNN_<level>.png`` (references); candidates are the levels
    ``>= 1`` in increasing order, or exactly ``ref_levels``."""
    _existing_dir(root, "CUFED5 root folder", "<root>/NNN_0.png HR + NNN_1..5.png references")
    groups: dict[str, dict[int, Path]] = {}
    for path in list_images(root):
        match = _CUFED5_NAME.match(path.stem)
        if match is None:
            raise ValueError(f"CUFED5 file {path} does not follow the naming <sample>_<level>.png (e.g. 000_0.png)")
        groups.setdefault(match["sample"], {})[int(match["level"])] = path
    records = []
    for sample, files in sorted(groups.items()):
        if 0 not in files:
            raise FileNotFoundError(
                f"CUFED5 sample {sample!r} has references but no HR image: expected {root}/{sample}_0.png"
            )
        hr = files[0]
        if ref_levels is None:
            refs = tuple(files[level] for level in sorted(files) if level >= 1)
        else:
            missing = [level for level in ref_levels if level not in files]
            if missing:
                expected = ", ".join(f"{sample}_{level}{hr.suffix}" for level in missing)
                raise FileNotFoundError(
                    f"CUFED5 sample {sample!r}: reference level(s) {missing} of ref_levels={list(ref_levels)} not "
                    f"found (expected {expected} in {root})"
                )
            refs = tuple(files[level] for level in ref_levels)
        if not refs:
            raise ValueError(
                f"CUFED5 sample {sample!r} has no reference images: expected {sample}_1{hr.suffix} .. "
                f"{sample}_5{hr.suffix} next to {hr}"
            )
        records.append(MultiRefRecord(sample, hr, refs))
    return records


def index_sun80(root: Path) -> list[MultiRefRecord]:
    """Sun80: ``<root>/Sun_Hays_SR_groundtruth/<name>.jpg`` + ``<root>/Sun_Hays_SR_scenematches/<name>/*.jpg``."""
    _existing_dir(root, "Sun80 root folder", "Sun_Hays_SR_groundtruth/ and Sun_Hays_SR_scenematches/ in it")
    gt_dir = _existing_dir(root / "Sun_Hays_SR_groundtruth", "Sun80 ground-truth folder")
    matches_dir = root / "Sun_Hays_SR_scenematches"
    records = []
    for hr in list_images(gt_dir):
        folder = matches_dir / hr.stem
        if not folder.is_dir():
            raise FileNotFoundError(f"Sun80 image {hr.stem!r} ({hr}) has no scene-match folder: expected {folder}")
        refs = _images_in(folder)
        if not refs:
            raise ValueError(
                f"Sun80 image {hr.stem!r} has no reference images: its scene-match folder {folder} is empty"
            )
        records.append(MultiRefRecord(hr.stem, hr, tuple(refs)))
    return records


def index_folder(root: Path) -> list[MultiRefRecord]:
    """Generic layout ``<root>/<name>/hr.<ext>`` + ``<root>/<name>/refs/*`` (references sorted by file name)."""
    _existing_dir(root, "multi-reference root folder", "<root>/<name>/hr.png + <root>/<name>/refs/")
    samples = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not samples:
        raise ValueError(f"no samples in {root}: expected sub-folders <name>/ holding hr.png and refs/")
    records = []
    for folder in samples:
        hr_files = [folder / f"hr{ext}" for ext in IMAGE_EXTENSIONS if (folder / f"hr{ext}").is_file()]
        if not hr_files:
            raise FileNotFoundError(f"sample {folder.name!r} has no HR image: expected {folder / 'hr.png'}")
        refs = _images_in(folder / "refs")
        if not refs:
            raise ValueError(
                f"sample {folder.name!r} has no reference images: expected at least one image in {folder / 'refs'}"
            )
        records.append(MultiRefRecord(folder.name, hr_files[0], tuple(refs)))
    return records


def index_cufed_pairs(root: Path) -> list[MultiRefRecord]:
    """CUFED training pairs ``<root>/input/<file>`` + ``<root>/ref/<file>`` (matched by file stem)."""
    _existing_dir(root, "CUFED root folder", "<root>/input/ and <root>/ref/")
    input_dir = _existing_dir(root / "input", "CUFED input folder")
    ref_dir = _existing_dir(root / "ref", "CUFED reference folder")
    refs_by_stem: dict[str, Path] = {}
    for ref in _images_in(ref_dir):
        refs_by_stem.setdefault(ref.stem, ref)
    records = []
    for inp in list_images(input_dir):
        ref = refs_by_stem.get(inp.stem)
        if ref is None:
            raise FileNotFoundError(
                f"CUFED input {inp.name!r} has no matching reference: expected {ref_dir / inp.name}"
            )
        records.append(MultiRefRecord(inp.stem, inp, (ref,)))
    return records


class _RefSizes:
    """Header sizes of reference files (read once) and the ``min_ref_size`` check."""

    def __init__(self, min_ref_size: int, num_threads: int | None = None) -> None:
        self.min_ref_size = min_ref_size
        self.threads = num_threads if num_threads is not None else _default_threads()
        self.sizes: dict[Path, tuple[int, int]] = {}

    def check(self, paths: Sequence[Path], owner: Mapping[Path, str] | None = None) -> None:
        todo = [p for p in dict.fromkeys(paths) if p not in self.sizes]
        self.sizes.update(zip(todo, _map_threads(image_size, todo, self.threads), strict=True))
        for path in paths:
            h, w = self.sizes[path]
            if h < self.min_ref_size or w < self.min_ref_size:
                who = f"sample {owner[path]!r}: " if owner and path in owner else ""
                raise ValueError(
                    f"{who}reference {path} is {h}x{w} (HxW), smaller than min_ref_size={self.min_ref_size} on a side "
                    "(a reference must hold at least one 3x3 patch at relu3_1, 1/4 of its size)"
                )


def _item(lr: Tensor, hr: Tensor, refs: list[Tensor], name: str, ref_paths: Sequence[Path]) -> dict[str, Any]:
    return {"lr": lr, "hr": hr, "refs": refs, "name": name, "ref_names": [p.stem for p in ref_paths]}


def _read_chw_u8(path: Path) -> Tensor:
    return _uint8_hwc_to_chw(read_image_uint8(path))


# ---------------------------------------------------------------------------------------------------- evaluation
class MultiRefEvalDataset(Dataset):
    """Full-image multi-reference evaluation items ``{lr, hr, refs, name, ref_names}`` (batch 1).

    The HR is modcropped to ``scale`` (top-left) and the LR made from it by ``degradation``; the references are
    whole and not augmented: the first ``n_refs`` candidates of each sample (most similar first), or exactly the
    ``ref_levels`` of a ``cufed5`` set (then ``n_refs`` does not apply to the set and :attr:`n_refs` reports
    ``len(ref_levels)``).

    Args:
        layout: ``"cufed5"``, ``"sun80"``, ``"folder"`` or ``"samples"`` (module docstring).
        root: the set's folder (for ``samples``: the samples root; the images are materialised under
            ``<root>/multiref`` first, see :func:`materialize_multiref_samples`).
        n_refs: references per sample (``N_M``); change it later with :meth:`set_n_refs`.
        scale: 4.
        degradation: ``"pil"`` (RefSR convention) or ``"matlab"``.
        min_ref_size: smallest reference side accepted (12: one 3×3 relu3_1 patch).
        ref_levels: ``cufed5`` only; e.g. ``[1]`` for the single-reference protocol.
        name: the set's name (default: the root folder's name).

    Raises at construction (messages name the sample and the file or folder expected): the root is missing
    (``FileNotFoundError``), a sample has no references or fewer than ``n_refs``, a used reference is smaller than
    ``min_ref_size`` (``ValueError``), a CUFED5 HR / level or Sun80 scene-match folder is missing
    (``FileNotFoundError``), the layout is unknown (``ValueError`` listing the allowed ones).
    """

    def __init__(
        self,
        layout: str,
        root: str | os.PathLike[str],
        n_refs: int = 4,
        scale: int = 4,
        degradation: str = "pil",
        min_ref_size: int = 12,
        ref_levels: Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.layout = _layout(layout, EVAL_LAYOUTS, "layout")
        self.root = Path(root)
        self.scale = _check_scale(scale, "scale")
        self.degradation = check_choice(degradation, DEGRADATIONS, "degradation")
        self.ref_levels = _check_ref_levels(ref_levels, "ref_levels")
        if self.ref_levels is not None and self.layout != "cufed5":
            raise ValueError(f"ref_levels is a CUFED5 option; layout {self.layout!r} takes the first n_refs references")
        self.name = str(name) if name is not None else self.root.name
        if self.layout == "cufed5":
            self.records = index_cufed5(self.root, self.ref_levels)
        elif self.layout == "sun80":
            self.records = index_sun80(self.root)
        elif self.layout == "folder":
            self.records = index_folder(self.root)
        else:
            self.records = index_folder(materialize_multiref_samples(self.root)["val"])
        self._ref_sizes = _RefSizes(check_int(min_ref_size, "min_ref_size"))
        self.n_refs = 0
        self.set_n_refs(n_refs)

    def set_n_refs(self, n_refs: int) -> None:
        """Use the first ``n_refs`` references of every sample from now on (no-op with ``ref_levels``). Errors name
        the first sample with fewer references, or a used reference smaller than ``min_ref_size``."""
        n = check_int(n_refs, "n_refs")
        if self.ref_levels is not None:
            n = len(self.ref_levels)
        for rec in self.records:
            if len(rec.ref_paths) < n:
                found = ", ".join(p.name for p in rec.ref_paths)
                raise ValueError(
                    f"{self.layout} set {self.name!r}: sample {rec.name!r} has {len(rec.ref_paths)} reference(s) "
                    f"({found}) but n_refs={n}"
                )
        self._ref_sizes.check(
            [p for rec in self.records for p in rec.ref_paths[:n]],
            {p: rec.name for rec in self.records for p in rec.ref_paths[:n]},
        )
        self.n_refs = n

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"MultiRefEvalDataset index must be an int, got {index!r}")
        rec = self.records[int(index)]
        hr_u8 = _read_chw_u8(rec.hr_path)
        h, w = int(hr_u8.shape[-2]), int(hr_u8.shape[-1])
        if h < self.scale or w < self.scale:
            raise ValueError(
                f"HR image {rec.hr_path} of sample {rec.name!r} is {h}x{w}, smaller than the scale {self.scale}"
            )
        hr_u8 = modcrop(hr_u8, self.scale).contiguous()
        lr_size = (int(hr_u8.shape[-2]) // self.scale, int(hr_u8.shape[-1]) // self.scale)
        lr = _resize_u8(hr_u8, lr_size, self.degradation, True)
        ref_paths = rec.ref_paths[: self.n_refs]
        refs = [_to_float(_read_chw_u8(p)) for p in ref_paths]
        return _item(lr, _to_float(hr_u8), refs, rec.name, ref_paths)

    def __repr__(self) -> str:
        refs = f"ref_levels={list(self.ref_levels)}" if self.ref_levels is not None else f"n_refs={self.n_refs}"
        return (
            f"{type(self).__name__}(name={self.name!r}, layout={self.layout!r}, samples={len(self)}, {refs}, "
            f"degradation={self.degradation!r})"
        )


# ---------------------------------------------------------------------------------------------------- training
class MultiRefTrainDataset(SeededItems, Dataset):
    """Random multi-reference training items ``{lr, hr, refs, name, ref_names}`` from a CUFED-layout set (B9, C10).

    Per item, from the generator seeded by the sample seed (in this order; :meth:`sample_params` returns them):
    the top-left of the ``4 * lr_patch_size`` HR crop (uniform in the input image); the LR/HR flags ``(hflip,
    vflip, transpose)`` (p = 0.5 each; ``use_hflip``, ``use_rot``); the ``n_refs - 1`` distractors, distinct, from
    the other pairs' references or from ``distractor_dir``; then per reference (own first) the top-left of its
    ``ref_patch_size`` crop (when set; a reference smaller than it on a side is kept whole on that side) and its
    flags (``ref_augment``: ``"independent"`` = own draw, ``"same"`` = the LR/HR flags, ``"none"``).
    The LR is the HR crop resized by ``degradation`` (Pillow bicubic by default), before the flips.

    Args:
        root: the CUFED training folder (``input/`` + ``ref/``), or the samples root for ``layout="samples"``
            (then ``<root>/multiref/train`` with ``distractor_dir`` defaulting to ``<root>/multiref/distractors``).
        layout: ``"cufed"`` or ``"samples"``.
        n_refs: references per item (``N_M``): 1 own + ``n_refs - 1`` distractors; :meth:`set_n_refs` changes it.
        scale: 4.
        lr_patch_size: LR patch side (SRNTT: 40, HR 160).
        ref_patch_size: side of a random reference crop; ``None`` = whole references.
        degradation, ref_augment, distractors: see the module constants.
        distractor_dir: folder of distractor images (``None`` = the other pairs' references).
        min_ref_size: smallest reference side accepted (checked on the file headers at construction).
        use_hflip, use_rot: LR/HR (and reference) augmentation switches.
        repeat: dataset enlarge ratio.
        seed: seed of the fallback stream of plain integer indexing.

    Indexing: ``dataset[(index, sample_seed)]`` (training sampler) or ``dataset[index]`` (a stream seeded from
    ``(seed, worker, index, call count)``, as :class:`~sresolve.data.datasets.PairedImageDataset`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        layout: str = "cufed",
        n_refs: int = 4,
        scale: int = 4,
        lr_patch_size: int = 40,
        ref_patch_size: int | None = None,
        degradation: str = "pil",
        ref_augment: str = "independent",
        distractors: str = "random",
        distractor_dir: str | os.PathLike[str] | None = None,
        min_ref_size: int = 12,
        use_hflip: bool = True,
        use_rot: bool = True,
        repeat: int = 1,
        seed: int = 0,
        num_threads: int | None = None,
    ) -> None:
        super().__init__()
        self.layout = _layout(layout, TRAIN_LAYOUTS, "layout")
        self.scale = _check_scale(scale, "scale")
        self.lr_patch_size = check_int(lr_patch_size, "lr_patch_size")
        self.hr_patch_size = self.lr_patch_size * self.scale
        self.min_ref_size = check_int(min_ref_size, "min_ref_size")
        self.ref_patch_size = None if ref_patch_size is None else check_int(ref_patch_size, "ref_patch_size")
        if self.ref_patch_size is not None and self.ref_patch_size < self.min_ref_size:
            raise ValueError(f"ref_patch_size={self.ref_patch_size} is smaller than min_ref_size={self.min_ref_size}")
        self.degradation = check_choice(degradation, DEGRADATIONS, "degradation")
        self.ref_augment = check_choice(ref_augment, REF_AUGMENTS, "ref_augment")
        self.distractors = check_choice(distractors, DISTRACTOR_MODES, "distractors")
        self.use_hflip = check_bool(use_hflip, "use_hflip")
        self.use_rot = check_bool(use_rot, "use_rot")
        self.repeat = check_int(repeat, "repeat")
        self.seed = check_int(seed, "seed", minimum=0)
        threads = num_threads if num_threads is not None else _default_threads()

        self.root = Path(root)
        if self.layout == "samples":
            dirs = materialize_multiref_samples(self.root)
            self.root = dirs["train"]
            if distractor_dir is None:
                distractor_dir = dirs["distractors"]
        self.records = index_cufed_pairs(self.root)
        self.distractor_dir = Path(distractor_dir) if distractor_dir is not None else None
        if self.distractor_dir is not None:
            _existing_dir(self.distractor_dir, "distractor folder")
            self.distractor_paths: list[Path] = list_images(self.distractor_dir)
        else:
            self.distractor_paths = [rec.ref_paths[0] for rec in self.records]

        self.input_sizes: list[tuple[int, int]] = _map_threads(image_size, [r.hr_path for r in self.records], threads)
        side = self.hr_patch_size
        for rec, (h, w) in zip(self.records, self.input_sizes, strict=True):
            if h < side or w < side:
                raise ValueError(
                    f"CUFED input {rec.hr_path} is {h}x{w} (HxW), smaller than the HR patch {side}x{side} "
                    f"(lr_patch_size {self.lr_patch_size} x scale {self.scale})"
                )
        self._ref_sizes = _RefSizes(self.min_ref_size, threads)
        self._ref_sizes.check([r.ref_paths[0] for r in self.records], {r.ref_paths[0]: r.name for r in self.records})
        if self.distractor_dir is not None and self.distractors == "random":
            self._ref_sizes.check(self.distractor_paths)
        self.n_refs = 0
        self.set_n_refs(n_refs)
        self._calls = 0
        log.info("%r", self)

    # ------------------------------------------------------------------ checks
    @property
    def _pool_size(self) -> int:
        """Distractors available to one item (the other pairs' references exclude the item's own)."""
        return len(self.distractor_paths) - (0 if self.distractor_dir is not None else 1)

    def set_n_refs(self, n_refs: int) -> None:
        """Draw ``n_refs - 1`` distractors per item from now on (an error when the pool cannot supply them)."""
        n = check_int(n_refs, "n_refs")
        if n > 1 and self.distractors == "none":
            raise ValueError(
                f"n_refs={n} needs distractors='random': a CUFED pair has one reference, so the other {n - 1} must be "
                "drawn from other pairs or distractor_dir"
            )
        if n - 1 > self._pool_size:
            source = f"distractor_dir {self.distractor_dir}" if self.distractor_dir is not None else "the other pairs"
            raise ValueError(
                f"n_refs={n} needs {n - 1} distractor reference(s) per item but {source} of {self.root} hold(s) only "
                f"{self._pool_size}"
            )
        self.n_refs = n

    # ------------------------------------------------------------------ sampling
    def __len__(self) -> int:
        return len(self.records) * self.repeat

    def _draw_distractors(self, pair_index: int, gen: torch.Generator) -> list[Path]:
        k = self.n_refs - 1
        if k == 0:
            return []
        picks = torch.randperm(self._pool_size, generator=gen)[:k].tolist()
        if self.distractor_dir is None:  # skip the item's own reference in the pool of all references
            picks = [j + 1 if j >= pair_index else j for j in picks]
        return [self.distractor_paths[j] for j in picks]

    def sample_params(self, pair_index: int, sample_seed: int) -> dict[str, Any]:
        """The random draws of one item: ``crop_top``/``crop_left`` (HR crop in the input), ``flips`` (LR/HR),
        ``ref_paths`` (own first), ``ref_crops`` (``(top, left, height, width)`` per reference, ``None`` = whole)
        and ``ref_flips``."""
        gen = torch.Generator().manual_seed(int(sample_seed))
        h, w = self.input_sizes[pair_index]
        side = self.hr_patch_size
        top = _uniform_int(h - side + 1, gen)
        left = _uniform_int(w - side + 1, gen)
        flips = draw_augment(self.use_hflip, self.use_rot, gen)
        ref_paths = [self.records[pair_index].ref_paths[0], *self._draw_distractors(pair_index, gen)]
        ref_crops: list[tuple[int, int, int, int] | None] = []
        ref_flips: list[tuple[bool, bool, bool]] = []
        for path in ref_paths:
            if self.ref_patch_size is None:
                ref_crops.append(None)
            else:
                rh, rw = self._ref_sizes.sizes[path]
                ch, cw = min(rh, self.ref_patch_size), min(rw, self.ref_patch_size)
                ref_crops.append((_uniform_int(rh - ch + 1, gen), _uniform_int(rw - cw + 1, gen), ch, cw))
            own = draw_augment(self.use_hflip, self.use_rot, gen)
            ref_flips.append({"independent": own, "same": flips, "none": _FLIPS_OFF}[self.ref_augment])
        return {
            "crop_top": top,
            "crop_left": left,
            "flips": flips,
            "ref_paths": ref_paths,
            "ref_crops": ref_crops,
            "ref_flips": ref_flips,
        }

    def sample(self, pair_index: int, sample_seed: int) -> dict[str, Any]:
        """The training item of pair ``pair_index`` drawn with the generator seeded by ``sample_seed``."""
        prm = self.sample_params(pair_index, sample_seed)
        rec = self.records[pair_index]
        side, top, left = self.hr_patch_size, prm["crop_top"], prm["crop_left"]
        hr_u8 = _read_chw_u8(rec.hr_path)[:, top : top + side, left : left + side].contiguous()
        lr = _resize_u8(hr_u8, (self.lr_patch_size, self.lr_patch_size), self.degradation, True)
        hr = apply_augment(_to_float(hr_u8), *prm["flips"]).contiguous()
        lr = apply_augment(lr, *prm["flips"]).contiguous()
        refs = []
        for path, crop, flips in zip(prm["ref_paths"], prm["ref_crops"], prm["ref_flips"], strict=True):
            ref_u8 = _read_chw_u8(path)
            if crop is not None:
                ct, cl, ch, cw = crop
                ref_u8 = ref_u8[:, ct : ct + ch, cl : cl + cw]
            refs.append(apply_augment(_to_float(ref_u8), *flips).contiguous())
        return _item(lr, hr, refs, rec.name, prm["ref_paths"])

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        idx, seed = self._parse_index(index)
        return self.sample(idx % len(self.records), seed)

    def __repr__(self) -> str:
        source = str(self.distractor_dir) if self.distractor_dir is not None else "other pairs"
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, pairs={len(self.records)}, n_refs={self.n_refs}, "
            f"lr_patch_size={self.lr_patch_size}, ref_patch_size={self.ref_patch_size}, "
            f"distractors={self.distractors!r} from {source}, degradation={self.degradation!r}, "
            f"ref_augment={self.ref_augment!r}, repeat={self.repeat})"
        )


# ---------------------------------------------------------------------------------------------------- collate
def collate_multiref(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch multi-reference items: ``lr``/``hr`` stacked, ``refs`` kept as a list (per sample) of lists of
    tensors, ``name`` a list of str, ``ref_names`` a list of lists (torch's default collate would try to stack the
    references, whose sizes differ)."""
    if not items:
        raise ValueError("collate_multiref needs at least one item")
    for key in ("lr", "hr"):
        shapes = {tuple(it[key].shape) for it in items}
        if len(shapes) > 1:
            raise ValueError(
                f"collate_multiref: the {key!r} tensors differ in size {sorted(shapes)}; full images must be batched "
                "one at a time (batch_size 1)"
            )
    return {
        "lr": torch.stack([it["lr"] for it in items]),
        "hr": torch.stack([it["hr"] for it in items]),
        "refs": [list(it["refs"]) for it in items],
        "name": [str(it["name"]) for it in items],
        "ref_names": [list(it["ref_names"]) for it in items],
    }


# ---------------------------------------------------------------------------------------------------- samples
_MULTIREF_DIR = "multiref"
_MANIFEST = "sresolve_multiref.json"
#: 2: 7 training distractors and 7 validation distractors (N_M up to 8, supp. Table 3); 1 had 6 and 3. A set written
#: by another version is rewritten whole on the next materialisation (the first 4 references of version 1 are kept).
_MANIFEST_VERSION = 2
_TILE = 160  # training HR tile side (SRNTT/CUFED: 160x160)
_TILE_STRIDE = 70
_TRAIN_ROWS = 300  # training tiles come from rows [0, 300); validation from rows [300, 300 + height)
_DISPARITY_MARGIN = 80  # the stereo disparity is about 0..70 px: a point at column x (left) is at x - d (right)
_VAL_LEFT_COL = 200  # left-to-right validation HR starts at this column of the left view
_VAL_RIGHT_COL = 120  # right-to-left validation HR starts at this column of the right view
_DISTRACTOR_SIZE = (160, 200)
#: training distractors: (image, crop) -> ``distractors/<image>[_<crop>].png``; crops: centre, tl (top-left), br.
_TRAIN_DISTRACTORS = (
    ("rocket", "centre"),
    ("hubble_deep_field", "centre"),
    ("immunohistochemistry", "centre"),
    ("retina", "centre"),
    ("colorwheel", "centre"),
    ("logo", "centre"),
    ("immunohistochemistry", "tl"),  # the 7th, so that n_refs = 8 (1 own + 7) can be trained (version 2)
)
#: validation distractors, in reference order 01.. (after the true ``00_`` view): the first three are those of
#: version 1 (so ``n_refs <= 4`` sees the same references), 04-07 are further crops of the validation photographs.
_VAL_DISTRACTORS = (
    ("astronaut", "centre"),
    ("chelsea", "centre"),
    ("coffee", "centre"),
    ("astronaut", "tl"),
    ("chelsea", "tl"),
    ("coffee", "tl"),
    ("astronaut", "br"),
)
_IMAGE_HEIGHT, _IMAGE_WIDTH = 500, 741  # the Middlebury motorcycle views of scikit-image
_DEFAULT_VAL_SIZE = (192, 384)


def _centre_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    return img[top : top + height, left : left + width]


def _crop(img: np.ndarray, height: int, width: int, where: str) -> np.ndarray:
    """A ``height × width`` crop at the centre, the top-left (``"tl"``) or the bottom-right (``"br"``) corner."""
    h, w = img.shape[:2]
    if where == "centre":
        return _centre_crop(img, height, width)
    top, left = (0, 0) if where == "tl" else (h - height, w - width)
    return img[top : top + height, left : left + width]


def _distractor_stem(name: str, where: str) -> str:
    return name if where == "centre" else f"{name}_{where}"


def _check_val_size(val_size: Any) -> tuple[int, int]:
    val_size = _to_container(val_size)
    if isinstance(val_size, (str, bytes)) or not isinstance(val_size, Sequence) or len(val_size) != 2:
        raise ValueError(f"val_size must be a pair [height, width], got {val_size!r}")
    height = check_int(val_size[0], "val_size[0] (height)", minimum=16)
    width = check_int(val_size[1], "val_size[1] (width)", minimum=24)
    max_h = _IMAGE_HEIGHT - _TRAIN_ROWS
    max_w = _IMAGE_WIDTH - _VAL_LEFT_COL
    if height > max_h or width > max_w:
        raise ValueError(
            f"val_size={[height, width]} does not fit the held-out rows of the stereo pair: height <= {max_h}, "
            f"width <= {max_w}"
        )
    return height, width


def _multiref_sample_images(val_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{relative path: HxWx3 uint8}`` of the multi-reference sample set (see :func:`materialize_multiref_samples`)."""
    from sresolve.data.samples import load_sample

    left, right = load_sample("motorcycle_left"), load_sample("motorcycle_right")
    width = left.shape[1]
    files: dict[str, np.ndarray] = {}
    for top in range(0, _TRAIN_ROWS - _TILE + 1, _TILE_STRIDE):
        rows = slice(top, top + _TILE)
        for col in range(0, width - _TILE + 1, _TILE_STRIDE):
            # Left tile, its match lies up to ~70 px further left in the right view; and the mirrored direction.
            name = f"y{top:03d}_x{col:03d}.png"
            files[f"train/input/l2r_{name}"] = left[rows, col : col + _TILE]
            files[f"train/ref/l2r_{name}"] = right[rows, max(0, col - _DISPARITY_MARGIN) : col + _TILE]
            files[f"train/input/r2l_{name}"] = right[rows, col : col + _TILE]
            files[f"train/ref/r2l_{name}"] = left[rows, col : min(width, col + _TILE + _DISPARITY_MARGIN)]
    for name, where in _TRAIN_DISTRACTORS:
        files[f"distractors/{_distractor_stem(name, where)}.png"] = _crop(load_sample(name), *_DISTRACTOR_SIZE, where)
    height, val_w = val_size
    rows = slice(_TRAIN_ROWS, _TRAIN_ROWS + height)
    l2r, r2l = "val/motorcycle_l2r", "val/motorcycle_r2l"
    files[f"{l2r}/hr.png"] = left[rows, _VAL_LEFT_COL : _VAL_LEFT_COL + val_w]
    files[f"{l2r}/refs/00_right.png"] = right[rows, _VAL_LEFT_COL - _DISPARITY_MARGIN : _VAL_LEFT_COL + val_w]
    files[f"{r2l}/hr.png"] = right[rows, _VAL_RIGHT_COL : _VAL_RIGHT_COL + val_w]
    files[f"{r2l}/refs/00_left.png"] = left[rows, _VAL_RIGHT_COL : _VAL_RIGHT_COL + val_w + _DISPARITY_MARGIN]
    distractor_w = max(16, round(val_w * 2 / 3))
    for i, (name, where) in enumerate(_VAL_DISTRACTORS, start=1):
        crop = _crop(load_sample(name), height, distractor_w, where)
        stem = f"{i:02d}_{_distractor_stem(name, where)}"
        files[f"{l2r}/refs/{stem}.png"] = crop
        files[f"{r2l}/refs/{stem}.png"] = crop
    return files


def _multiref_complete(base: Path, val_size: tuple[int, int] | None) -> bool:
    """True when the manifest is there (for ``val_size``; ``None`` = any) and every file has its recorded size."""
    manifest = base / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    if (
        not isinstance(recorded, dict)
        or recorded.get("version") != _MANIFEST_VERSION
        or (val_size is not None and recorded.get("val_size") != list(val_size))
        or not isinstance(recorded.get("files"), dict)
    ):
        return False
    for rel, shape in recorded["files"].items():
        path = base / rel
        try:
            if not path.is_file() or list(image_size(path)) != list(shape):
                return False
        except (OSError, ValueError):
            return False
    return True


def _recorded_val_size(base: Path) -> tuple[int, int] | None:
    """The validation size in an existing manifest (any version), if it is a valid one; else ``None``."""
    try:
        return _check_val_size(json.loads((base / _MANIFEST).read_text())["val_size"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def materialize_multiref_samples(
    samples_root: str | os.PathLike[str],
    *,
    val_size: Sequence[int] | None = None,
    compress_level: int = 3,
) -> dict[str, Path]:
    """Write the multi-reference sample set under ``<samples_root>/multiref`` once and return its folders.

    Built from scikit-image's Middlebury stereo pair (``motorcycle_left`` / ``motorcycle_right``, 500×741; a point
    at column ``x`` of the left view is at ``x - d`` in the right view, ``d`` in about [0, 70]) plus unrelated
    photographs as distractors:

    * ``train/input`` + ``train/ref`` (CUFED layout, 54 pairs): 160×160 HR tiles of rows [0, 300) of the left view
      (stride 70; ``l2r_y<top>_x<left>.png``), each with the right-view window of the same rows widened 80 px to the
      left (160×240, clipped at the border), and the mirrored direction (``r2l_*``: right-view tiles, the left-view
      window widened 80 px to the right).
    * ``distractors/``: 160×200 centre crops of rocket, hubble_deep_field, immunohistochemistry, retina, colorwheel
      and logo, and the top-left crop ``immunohistochemistry_tl`` (7 crops of training photographs unrelated to the
      scene: ``n_refs`` up to 8).
    * ``val/motorcycle_l2r`` and ``val/motorcycle_r2l`` (folder layout) from the held-out rows [300, 300 + height):
      HR = ``left[rows, 200:200 + width]`` with ``refs/00_right.png`` = ``right[rows, 120:200 + width]``, and HR =
      ``right[rows, 120:120 + width]`` with ``refs/00_left.png`` = ``left[rows, 120:200 + width]``; then the
      7 distractors, ``height × 2/3 width`` crops of the validation photographs: ``01_astronaut``, ``02_chelsea``,
      ``03_coffee`` (centre crops), ``04_astronaut_tl``, ``05_chelsea_tl``, ``06_coffee_tl`` (top-left) and
      ``07_astronaut_br`` (bottom-right). The true reference sorts first, so ``n_refs=1`` is the stereo view only,
      ``n_refs=4`` the view and the three centre crops, ``n_refs=8`` all (supp. Table 3 sweeps 1/2/4/8).

    ``val_size = (height, width)`` of the validation HR (tests use small ones); ``None`` accepts a complete set of
    any validation size and otherwise writes the size recorded by an incomplete or older set, or 192×384 (what the
    datasets and the data module call). A call that finds
    the set complete (manifest written last, of this version, every file with its recorded size) returns at once;
    otherwise every file is (re)written atomically, so concurrent calls (DDP ranks) are safe. A set written by an
    older version (manifest version 1: 6 training and 3 validation distractors) is therefore rewritten whole at its
    recorded validation size: the new files are added, the others come out identical.

    Returns:
        ``{"root": <samples_root>/multiref, "train": .../train, "distractors": .../distractors, "val": .../val}``.
    """
    wanted = None if val_size is None else _check_val_size(val_size)
    base = Path(samples_root) / _MULTIREF_DIR
    dirs = {"root": base, "train": base / "train", "distractors": base / "distractors", "val": base / "val"}
    if _multiref_complete(base, wanted):
        return dirs
    size = wanted or _recorded_val_size(base) or _DEFAULT_VAL_SIZE
    images = _multiref_sample_images(size)

    def write(rel: str) -> None:
        write_image(base / rel, np.ascontiguousarray(images[rel]), compress_level=compress_level)

    _map_threads(write, list(images), _default_threads())  # zlib releases the GIL
    record = {rel: [int(img.shape[0]), int(img.shape[1])] for rel, img in images.items()}
    tmp = base / f".{_MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"version": _MANIFEST_VERSION, "val_size": list(size), "files": record}, indent=1))
    os.replace(tmp, base / _MANIFEST)
    return dirs


# ---------------------------------------------------------------------------------------------------- data module
_TRAIN_KEYS = {
    "layout": f"training layout, one of {list(TRAIN_LAYOUTS)} (required)",
    "root": "the training folder (cufed: holding input/ and ref/; samples: the samples root) (required)",
    "repeat": "dataset enlarge ratio",
    "distractor_dir": "folder of distractor references (null = the other pairs' references; samples: its own)",
    "use_hflip": "random horizontal flip",
    "use_rot": "random vertical flip + transpose",
}
_EVAL_KEYS = {
    "layout": f"evaluation layout, one of {list(EVAL_LAYOUTS)} (required)",
    "root": "the set's folder (samples: the samples root) (required)",
    "ref_levels": "cufed5 only: the reference levels to use, e.g. [1] (null = the first n_refs)",
}


def _root_and_layout(spec: Mapping[str, Any], allowed: Sequence[str], key: str) -> dict[str, Any]:
    if spec.get("layout") is None:
        raise ValueError(f"{key}.layout is required; allowed layouts: {', '.join(allowed)}")
    if spec.get("root") is None:
        raise ValueError(f"{key}.root is required (the folder of the {spec['layout']!r} layout)")
    return {"layout": _layout(spec["layout"], allowed, f"{key}.layout"), "root": _path(spec["root"], f"{key}.root")}


def _multiref_train_spec(spec: Any, key: str = "data.train") -> dict[str, Any]:
    spec = _to_container(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"{key} must be a mapping such as {{layout: cufed, root: ...}}, got {spec!r}")
    _check_keys(spec, _TRAIN_KEYS, key)
    out = _root_and_layout(spec, TRAIN_LAYOUTS, key)
    if spec.get("repeat") is not None:
        out["repeat"] = check_int(spec["repeat"], f"{key}.repeat")
    if spec.get("distractor_dir") is not None:
        out["distractor_dir"] = _path(spec["distractor_dir"], f"{key}.distractor_dir")
    for flag in ("use_hflip", "use_rot"):
        if spec.get(flag) is not None:
            out[flag] = check_bool(spec[flag], f"{key}.{flag}")
    return out


def _multiref_eval_specs(sets: Any, key: str) -> dict[str, dict[str, Any]]:
    sets = _to_container(sets)
    if sets is None:
        return {}
    if not isinstance(sets, Mapping):
        raise ValueError(f"{key} must map a set name to its spec ({{name: {{layout: ..., root: ...}}}}), got {sets!r}")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in sets.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{key}: set names must be non-empty strings, got {name!r}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must be a mapping such as {{layout: cufed5, root: ...}}, got {spec!r}")
        _check_keys(spec, _EVAL_KEYS, where)
        out[name] = _root_and_layout(spec, EVAL_LAYOUTS, where)
        levels = _check_ref_levels(spec.get("ref_levels"), f"{where}.ref_levels")
        if levels is not None:
            if out[name]["layout"] != "cufed5":
                raise ValueError(f"{where}.ref_levels is a cufed5 option (layout is {out[name]['layout']!r})")
            out[name]["ref_levels"] = list(levels)
    return out


class MultiRefSRDataModule(SRDataModuleBase):
    """Multi-reference SR data (AMRSR ×4): CUFED-style training with distractors + one loader per evaluation set.

    Args:
        train: ``{layout: cufed|samples, root: ..., repeat: 1, distractor_dir: null, use_hflip: true, use_rot:
            true}`` (:class:`MultiRefTrainDataset`); ``None`` = no training.
        val: ``{name: {layout: cufed5|sun80|folder|samples, root: ..., ref_levels: null}}``
            (:class:`MultiRefEvalDataset`); one loader per set in this order (:attr:`val_names`), batch 1.
        test: like ``val``, for ``trainer.test`` (``None`` = the validation sets).
        n_refs: references per sample ``N_M`` (training: 1 own + ``n_refs - 1`` distractors; evaluation: the first
            ``n_refs``). Change the evaluation value between passes with :meth:`set_n_refs`.
        scale: 4 (checked).
        lr_patch_size: LR training patch side (SRNTT: 40 → HR 160).
        ref_patch_size: side of a random crop of every training reference (``None`` = whole references).
        batch_size: **global** training batch, split over the processes (SRNTT: 9).
        num_workers, pin_memory, persistent_workers, seed: as :class:`~sresolve.data.datamodules.PairedSRDataModule`.
        degradation: ``"pil"`` (RefSR convention, spec B10) or ``"matlab"``; training and evaluation.
        ref_augment: ``"independent"`` (TTSR), ``"same"`` or ``"none"``.
        distractors: ``"random"`` (choice C10) or ``"none"`` (then ``n_refs`` must be 1 for training).
        min_ref_size: smallest reference side accepted (12: a reference must hold one 3×3 relu3_1 patch).
        samples_root: fill ``train``/``val`` left at ``None`` with the embedded stereo sample set
            (:func:`materialize_multiref_samples`; validation set ``"samples"``), materialised in
            :meth:`prepare_data`.
        name: a label (the Hydra config's ``data.name``).

    ``n_refs`` for evaluation: call ``dm.set_n_refs(n)`` between passes. It sets :attr:`eval_n_refs` and updates
    every validation/test dataset already built (those built later use it too), and raises when a sample has fewer
    than ``n`` references; the training set keeps ``n_refs`` (use ``dm.train_set.set_n_refs`` to change that). The
    evaluation loaders do not keep persistent workers, so the next pass over them sees the new value. Re-instantiating
    the module with another ``n_refs`` works as well. A ``cufed5`` set with ``ref_levels`` keeps its levels.

    Attributes (after :meth:`setup`): ``train_set``, ``val_sets``, ``test_sets``, ``per_device_batch_size``.
    """

    collate_fn = staticmethod(collate_multiref)

    def __init__(
        self,
        train: Mapping[str, Any] | None = None,
        val: Mapping[str, Any] | None = None,
        test: Mapping[str, Any] | None = None,
        n_refs: int = 4,
        scale: int = 4,
        lr_patch_size: int = 40,
        ref_patch_size: int | None = None,
        batch_size: int = 9,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool | None = None,
        seed: int = 0,
        degradation: str = "pil",
        ref_augment: str = "independent",
        distractors: str = "random",
        min_ref_size: int = 12,
        samples_root: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.n_refs = check_int(n_refs, "data.n_refs")
        self.eval_n_refs = self.n_refs
        self.scale = _check_scale(scale, "data.scale")
        self.lr_patch_size = check_int(lr_patch_size, "data.lr_patch_size")
        self.ref_patch_size = None if ref_patch_size is None else check_int(ref_patch_size, "data.ref_patch_size")
        self.batch_size = check_int(batch_size, "data.batch_size")
        self.num_workers = check_int(num_workers, "data.num_workers", minimum=0)
        self.pin_memory = check_bool(pin_memory, "data.pin_memory")
        if persistent_workers is not None:
            check_bool(persistent_workers, "data.persistent_workers")
        self.persistent_workers = persistent_workers
        self.seed = check_int(seed, "data.seed", minimum=0)
        self.degradation = check_choice(degradation, DEGRADATIONS, "data.degradation")
        self.ref_augment = check_choice(ref_augment, REF_AUGMENTS, "data.ref_augment")
        self.distractors = check_choice(distractors, DISTRACTOR_MODES, "data.distractors")
        self.min_ref_size = check_int(min_ref_size, "data.min_ref_size")
        self.name = name
        self.samples_root = _path(samples_root, "data.samples_root") if samples_root is not None else None
        if self.samples_root is not None:
            if train is None:
                train = {"layout": "samples", "root": str(self.samples_root)}
            if val is None:
                val = {"samples": {"layout": "samples", "root": str(self.samples_root)}}
        self.train_spec = _multiref_train_spec(train) if train is not None else None
        self.val_specs = _multiref_eval_specs(val, "data.val")
        self.test_specs = _multiref_eval_specs(test, "data.test") if test is not None else dict(self.val_specs)
        self.val_names: list[str] = list(self.val_specs)
        self.test_names: list[str] = list(self.test_specs)
        self.train_set: MultiRefTrainDataset | None = None
        self.val_sets: dict[str, MultiRefEvalDataset] = {}
        self.test_sets: dict[str, MultiRefEvalDataset] = {}
        self.per_device_batch_size = self.batch_size

    # ------------------------------------------------------------------ n_refs
    def set_n_refs(self, n_refs: int) -> None:
        """Evaluate with ``n_refs`` references per sample from now on: the validation/test datasets already built and
        those built later (errors name the first sample with fewer references). Training is not affected."""
        n = check_int(n_refs, "n_refs")
        for ds in [*self.val_sets.values(), *self.test_sets.values()]:
            ds.set_n_refs(n)
        self.eval_n_refs = n

    # ------------------------------------------------------------------ lightning hooks
    def prepare_data(self) -> None:
        """Materialise the embedded stereo sample set for every ``samples`` root (runs once per node)."""
        specs = [self.train_spec or {}, *self.val_specs.values(), *self.test_specs.values()]
        roots = {Path(s["root"]) for s in specs if s.get("layout") == "samples"}
        if self.samples_root is not None:
            roots.add(self.samples_root)
        for root in sorted(roots):
            materialize_multiref_samples(root)

    def _eval_datasets(self, specs: Mapping[str, dict[str, Any]]) -> dict[str, MultiRefEvalDataset]:
        return {
            set_name: MultiRefEvalDataset(
                n_refs=self.eval_n_refs,
                scale=self.scale,
                degradation=self.degradation,
                min_ref_size=self.min_ref_size,
                name=set_name,
                **spec,
            )
            for set_name, spec in specs.items()
        }

    def setup(self, stage: str | None = None) -> None:
        world = self._setup_world()
        if stage in (None, "fit") and self.train_spec is not None and self.train_set is None:
            _check_trainer_sampler(self, world)
            self.train_set = MultiRefTrainDataset(
                n_refs=self.n_refs,
                scale=self.scale,
                lr_patch_size=self.lr_patch_size,
                ref_patch_size=self.ref_patch_size,
                degradation=self.degradation,
                ref_augment=self.ref_augment,
                distractors=self.distractors,
                min_ref_size=self.min_ref_size,
                seed=self.seed,
                **self.train_spec,
            )
        if stage in (None, "fit", "validate") and not self.val_sets:
            self.val_sets = self._eval_datasets(self.val_specs)
        if stage in (None, "test") and not self.test_sets:
            self.test_sets = self._eval_datasets(self.test_specs)
