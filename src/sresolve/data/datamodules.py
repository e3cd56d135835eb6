"""LightningDataModules: DF2K/DIV2K-style paired training, ImageNet pre-training, benchmark evaluation and the embedded
sample set.

Conventions (lightning-hydra-template, frameworks spec §4.1; BasicSR keys, §2.7):

* ``batch_size`` is the **global** batch: each of the ``world_size`` processes loads ``batch_size // world_size``
  (BasicSR ``batch_size_per_gpu``); a batch that does not divide is an error naming both numbers.
* Every dataset spec is a plain dict (Hydra-friendly), checked key by key with errors that name the key
  (``data.train.repeat must be a positive int, got 'abc'``).
* Sharding is done here, not by Lightning: the training loader uses
  :class:`~sresolve.data.samplers.ResumableSampler` (seeded per-epoch permutation, strided shard per rank, per-sample
  seeds, resumable mid-epoch) and the validation/test loaders use :class:`ShardedEvalSampler` (rank ``r`` gets images
  ``r, r + W, r + 2W, ...``: no padding, so no image is scored twice, frameworks spec §2.8). The trainer must run
  with ``use_distributed_sampler=False`` (sresolve's ``conf/trainer/default.yaml`` sets it); :meth:`setup` raises
  otherwise under DDP. The evaluation sampler subclasses ``DistributedSampler``, so Lightning never replaces it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sresolve.data.datasets import BenchmarkDataset, MultiScalePairedDataset, PairedImageDataset
from sresolve.validation import check_bool, check_int

__all__ = [
    "BENCHMARK_NAMES",
    "BenchmarkDataModule",
    "ImageNetSRDataModule",
    "PairedSRDataModule",
    "SamplesDataModule",
    "ShardedEvalSampler",
    "samples_datamodule",
]

#: Standard SR benchmark sets, in the order papers report them.
BENCHMARK_NAMES: tuple[str, ...] = ("Set5", "Set14", "BSD100", "Urban100", "Manga109")
_ALIASES: dict[str, tuple[str, ...]] = {"BSD100": ("B100", "BSDS100"), "B100": ("BSD100", "BSDS100")}
_BENCH_HR_SUBDIRS = ("HR", "GTmod12", "GTmod4", "GT", "original")

_TRAIN_KEYS = {
    "hr_dirs": "HR folder or list of folders (required)",
    "lr_dirs": "LR folders, one per HR folder (null = bicubic LR on the fly)",
    "filename_tmpl": "LR name template, e.g. '{}x4' or '{}x{scale}'",
    "repeat": "dataset enlarge ratio",
    "cache": "true | false | auto",
    "cache_max_gb": "decoded-cache size limit for cache=auto",
    "use_hflip": "random horizontal flip",
    "use_rot": "random vertical flip + transpose",
    "lr_quantize": "round on-the-fly LR to 8-bit levels",
    "recursive": "also take the images of sub-folders",
    "skip_small": "leave out images smaller than the HR patch (logged) instead of failing",
}
_EVAL_KEYS = {
    "hr_dir": "HR folder (required)",
    "lr_dir": "LR folder (null = auto-detect LR_bicubic/X{s}, false = bicubic on the fly)",
    "modcrop": "HR modcrop (null = scale)",
    "filename_tmpl": "LR name template (null = auto)",
    "lr_quantize": "round on-the-fly LR to 8-bit levels",
}


class ShardedEvalSampler(DistributedSampler):
    """Non-padding evaluation shard: rank ``r`` of ``W`` gets indices ``r, r + W, r + 2W, ...`` in order.

    Unlike ``DistributedSampler`` it never repeats samples to even out the shards, so per-image metrics summed over
    ranks (torchmetrics ``dist_reduce_fx="sum"``) count every image exactly once (frameworks spec §2.8). Shards may
    differ in length by one (or be empty when ``W`` exceeds the number of images).
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0) -> None:
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:  # type: ignore[override]
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


# ---------------------------------------------------------------------------------------------------- spec checks
def _to_container(value: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _pos_int(value: Any, key: str) -> int:
    return check_int(value, key)


def _nonneg_int(value: Any, key: str) -> int:
    return check_int(value, key, minimum=0)


_bool = check_bool


def _path(value: Any, key: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{key} must be a folder path, got {value!r}")
    return Path(value)


def _paths(value: Any, key: str) -> list[Path]:
    if isinstance(value, (str, os.PathLike)):
        return [_path(value, key)]
    if isinstance(value, Sequence) and value:
        return [_path(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{key} must be a folder path or a non-empty list of folder paths, got {value!r}")


def _check_keys(spec: Mapping[str, Any], allowed: Mapping[str, str], key: str) -> None:
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(
            f"{key}: unknown key(s) {unknown}; allowed: " + ", ".join(f"{k} ({desc})" for k, desc in allowed.items())
        )


def _train_spec(spec: Any, key: str = "data.train") -> dict[str, Any]:
    spec = _to_container(spec)
    if isinstance(spec, (str, os.PathLike)):
        spec = {"hr_dirs": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{key} must be a mapping with at least 'hr_dirs', got {spec!r}")
    _check_keys(spec, _TRAIN_KEYS, key)
    if spec.get("hr_dirs") is None:
        raise ValueError(f"{key}.hr_dirs is required (an HR folder or a list of folders)")
    out: dict[str, Any] = {"hr_dirs": _paths(spec["hr_dirs"], f"{key}.hr_dirs")}
    if spec.get("lr_dirs") is not None:
        out["lr_dirs"] = _paths(spec["lr_dirs"], f"{key}.lr_dirs")
        if len(out["lr_dirs"]) != len(out["hr_dirs"]):
            raise ValueError(
                f"{key}.lr_dirs must list one folder per {key}.hr_dirs entry: got {len(out['lr_dirs'])} LR and "
                f"{len(out['hr_dirs'])} HR folders"
            )
    if spec.get("filename_tmpl") is not None:
        if not isinstance(spec["filename_tmpl"], str):
            raise ValueError(f"{key}.filename_tmpl must be a string such as '{{}}x4', got {spec['filename_tmpl']!r}")
        out["filename_tmpl"] = spec["filename_tmpl"]
    if spec.get("repeat") is not None:
        out["repeat"] = _pos_int(spec["repeat"], f"{key}.repeat")
    if "cache" in spec and spec["cache"] is not None:
        if spec["cache"] not in (True, False, "auto"):
            raise ValueError(f"{key}.cache must be true, false or 'auto', got {spec['cache']!r}")
        out["cache"] = spec["cache"]
    if spec.get("cache_max_gb") is not None:
        gb = spec["cache_max_gb"]
        if isinstance(gb, bool) or not isinstance(gb, (int, float)) or gb < 0:
            raise ValueError(f"{key}.cache_max_gb must be a number >= 0, got {gb!r}")
        out["cache_max_gb"] = float(gb)
    for flag in ("use_hflip", "use_rot", "lr_quantize", "recursive", "skip_small"):
        if spec.get(flag) is not None:
            out[flag] = _bool(spec[flag], f"{key}.{flag}")
    return out


def _eval_spec(spec: Any, key: str) -> dict[str, Any]:
    spec = _to_container(spec)
    if isinstance(spec, (str, os.PathLike)):
        spec = {"hr_dir": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{key} must be an HR folder path or a mapping with 'hr_dir', got {spec!r}")
    _check_keys(spec, _EVAL_KEYS, key)
    if spec.get("hr_dir") is None:
        raise ValueError(f"{key}.hr_dir is required")
    out: dict[str, Any] = {"hr_dir": _path(spec["hr_dir"], f"{key}.hr_dir")}
    lr_dir = spec.get("lr_dir")
    if lr_dir is False:
        out["lr_dir"] = False
    elif lr_dir is not None:
        out["lr_dir"] = _path(lr_dir, f"{key}.lr_dir")
    if spec.get("modcrop") is not None:
        out["modcrop"] = _pos_int(spec["modcrop"], f"{key}.modcrop")
    if spec.get("filename_tmpl") is not None:
        if not isinstance(spec["filename_tmpl"], str):
            raise ValueError(f"{key}.filename_tmpl must be a string, got {spec['filename_tmpl']!r}")
        out["filename_tmpl"] = spec["filename_tmpl"]
    if spec.get("lr_quantize") is not None:
        out["lr_quantize"] = _bool(spec["lr_quantize"], f"{key}.lr_quantize")
    return out


def _eval_specs(sets: Any, key: str, allowed: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``{name: spec}`` of the evaluation sets, each checked by :func:`_eval_spec`; ``allowed`` narrows the keys a
    spec may have (errors list them)."""
    sets = _to_container(sets)
    if sets is None:
        return {}
    if not isinstance(sets, Mapping):
        raise ValueError(f"{key} must map a set name to its spec ({{name: {{hr_dir: ...}}}}), got {sets!r}")
    out = {}
    for name, spec in sets.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{key}: set names must be non-empty strings, got {name!r}")
        if allowed is not None and isinstance(spec, Mapping):
            _check_keys(spec, allowed, f"{key}.{name}")
        out[name] = _eval_spec(spec, f"{key}.{name}")
    return out


def _world(dm: L.LightningDataModule) -> tuple[int, int]:
    trainer = getattr(dm, "trainer", None)
    if trainer is None:
        return 1, 0
    return int(trainer.world_size), int(trainer.global_rank)


def _check_trainer_sampler(dm: L.LightningDataModule, world_size: int) -> None:
    trainer = getattr(dm, "trainer", None)
    connector = getattr(trainer, "_accelerator_connector", None)
    if world_size > 1 and getattr(connector, "use_distributed_sampler", False):
        raise ValueError(
            f"{type(dm).__name__} shards its data itself (world size {world_size}); create the Trainer with "
            "use_distributed_sampler=False (trainer.use_distributed_sampler: false), otherwise Lightning would "
            "re-shard the training loader"
        )


def _eval_loaders(
    datasets: Sequence[Dataset],
    world: int,
    rank: int,
    num_workers: int,
    pin_memory: bool,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> list[DataLoader]:
    return [
        DataLoader(
            ds,
            batch_size=1,
            sampler=ShardedEvalSampler(ds, num_replicas=world, rank=rank),  # type: ignore[arg-type]
            num_workers=num_workers,
            pin_memory=pin_memory,
            collate_fn=collate_fn,
        )
        for ds in datasets
    ]


def _resumable_train_loader(dm: Any, dataset: Any) -> DataLoader:
    """The training loader of a datamodule with ``seed``, ``num_workers``, ``persistent_workers``,
    ``per_device_batch_size`` and ``_pin()``: a :class:`~sresolve.data.samplers.ResumableSampler` shard of this rank,
    started after the batches the run already consumed (so a restored run continues with the next sample)."""
    from sresolve.data.samplers import ResumableDataLoader, ResumableSampler

    world, rank = _world(dm)
    trainer = dm.trainer
    # Batches already consumed by the run (after a checkpoint restore): the loader resumes right after them.
    start_batch = int(trainer.global_step) * int(trainer.accumulate_grad_batches) if trainer is not None else 0
    sampler = ResumableSampler(len(dataset), seed=dm.seed, shuffle=True, rank=rank, world_size=world)
    persistent = dm.persistent_workers if dm.persistent_workers is not None else dm.num_workers > 0
    return ResumableDataLoader(
        dataset,
        sampler,
        batch_size=dm.per_device_batch_size,
        start_batch=start_batch,
        num_workers=dm.num_workers,
        pin_memory=dm._pin(),
        persistent_workers=persistent and dm.num_workers > 0,
        drop_last=True,
        collate_fn=getattr(dm, "collate_fn", None),
    )


# ---------------------------------------------------------------------------------------------------- paired SR
class SRDataModuleBase(L.LightningDataModule):
    """The loaders shared by the training data modules (paired and arbitrary-scale): the resumable, sharded training
    loader and one sharded evaluation loader per set (batch 1). Subclasses fill ``train_spec``, ``train_set``,
    ``val_names`` / ``test_names`` and, in :meth:`setup`, ``val_sets`` / ``test_sets``."""

    train_spec: dict[str, Any] | None
    train_set: Dataset | None
    val_sets: Mapping[str, Dataset]
    test_sets: Mapping[str, Dataset]
    val_names: list[str]
    test_names: list[str]
    num_workers: int
    pin_memory: bool

    samples_root: Path | None
    batch_size: int
    per_device_batch_size: int
    #: batches items (``None``: torch's default collate); multi-reference sets keep their references as lists
    collate_fn: Callable[[list[Any]], Any] | None = None

    def prepare_data(self) -> None:
        """Materialise the embedded sample images when ``samples_root`` is set (runs once per node)."""
        if self.samples_root is not None:
            from sresolve.data.samples import materialize_samples

            materialize_samples(self.samples_root)

    def _setup_world(self) -> int:
        """Split the global batch over the processes (an error when it does not divide) and make sure the sample
        images exist (``prepare_data`` may not have run, e.g. outside a Trainer); returns the world size."""
        world, _ = _world(self)
        if self.batch_size % world:
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch and must be divisible by the world size "
                f"{world} (trainer.devices x trainer.num_nodes)"
            )
        self.per_device_batch_size = self.batch_size // world
        if self.samples_root is not None:
            self.prepare_data()  # no-op when complete
        return world

    def _pin(self) -> bool:
        return self.pin_memory and torch.cuda.is_available()

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            if self.train_spec is None:
                raise ValueError("no training data: set data.train (e.g. {hr_dirs: [DIV2K/DIV2K_train_HR]})")
            self.setup("fit")
        assert self.train_set is not None
        return _resumable_train_loader(self, self.train_set)

    def val_dataloader(self) -> list[DataLoader]:
        if not self.val_sets and self.val_names:
            self.setup("validate")
        world, rank = _world(self)
        return _eval_loaders(list(self.val_sets.values()), world, rank, self.num_workers, self._pin(), self.collate_fn)

    def test_dataloader(self) -> list[DataLoader]:
        if not self.test_sets and self.test_names:
            self.setup("test")
        world, rank = _world(self)
        return _eval_loaders(list(self.test_sets.values()), world, rank, self.num_workers, self._pin(), self.collate_fn)


class PairedSRDataModule(SRDataModuleBase):
    """Paired SR training (random patches) + one validation loader per named set + optional test sets.

    Args:
        train: training spec ``{hr_dirs: [...], lr_dirs: null, filename_tmpl: '{}', repeat: 1, cache: auto,
            cache_max_gb: 8, use_hflip: true, use_rot: true, lr_quantize: true}`` (see
            :class:`~sresolve.data.datasets.PairedImageDataset`), or an HR folder path; ``None`` = no training.
        val: ``{name: {hr_dir, lr_dir: null, modcrop: null, filename_tmpl: null}}`` (or ``{name: hr_dir}``): one
            validation loader per set, in this order (``val_names``), batch 1 (full images).
        scale: upscaling factor.
        lr_patch_size: LR training patch side (HR patch = ``lr_patch_size * scale``; BasicSR ``gt_size / scale``).
        batch_size: **global** batch size, split evenly over the processes.
        num_workers: DataLoader workers per process (training and evaluation loaders).
        pin_memory: pin batches (only when CUDA is available).
        persistent_workers: keep training workers between epochs (default: ``num_workers > 0``).
        seed: seed of the sample order and of every sample's crop/flip stream.
        test: like ``val``, for ``trainer.test`` (default: the validation sets).
        samples_root: materialise the embedded sample images there (in :meth:`prepare_data`) and use
            ``<root>/train/HR`` / ``{"samples": <root>/val/HR}`` for ``train``/``val`` left at ``None``.
        name: a label (the Hydra config's ``data.name``); not used for loading.
        scales: multi-related-task pre-training (``pretrain=multi_task``, HAT Table 7): the training items hold one
            pair per scale (:class:`~sresolve.data.datasets.MultiScalePairedDataset`) and every validation set is
            evaluated at each scale: under its own name at ``scale`` (which must be one of ``scales``), as
            ``<name>_x<s>`` at the others (``val_scales`` lists the scale of each loader). ``None``: one scale.

    Attributes (after :meth:`setup`): ``train_set``, ``val_sets``, ``test_sets``, ``per_device_batch_size``.
    """

    def __init__(
        self,
        train: Mapping[str, Any] | str | None = None,
        val: Mapping[str, Any] | None = None,
        scale: int = 4,
        lr_patch_size: int = 64,
        batch_size: int = 64,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool | None = None,
        seed: int = 0,
        test: Mapping[str, Any] | None = None,
        samples_root: str | os.PathLike[str] | None = None,
        name: str | None = None,
        scales: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.scale = _pos_int(scale, "data.scale")
        self.scales = _multi_scales(scales, self.scale)
        self.lr_patch_size = _pos_int(lr_patch_size, "data.lr_patch_size")
        self.batch_size = _pos_int(batch_size, "data.batch_size")
        self.num_workers = _nonneg_int(num_workers, "data.num_workers")
        self.pin_memory = _bool(pin_memory, "data.pin_memory")
        if persistent_workers is not None:
            _bool(persistent_workers, "data.persistent_workers")
        self.persistent_workers = persistent_workers
        self.seed = _nonneg_int(seed, "data.seed")
        self.name = name
        self.samples_root = _path(samples_root, "data.samples_root") if samples_root is not None else None
        if self.samples_root is not None:
            if train is None:
                train = {"hr_dirs": [str(self.samples_root / "train" / "HR")]}
            if val is None:
                val = {"samples": {"hr_dir": str(self.samples_root / "val" / "HR")}}
        self.train_spec = _train_spec(train) if train is not None else None
        self.val_specs = _eval_specs(val, "data.val")
        self.test_specs = _eval_specs(test, "data.test") if test is not None else dict(self.val_specs)
        self.val_names, self.val_scales = self._per_scale(list(self.val_specs))
        self.test_names, self.test_scales = self._per_scale(list(self.test_specs))
        self.train_set: PairedImageDataset | None = None
        self.val_sets: dict[str, BenchmarkDataset] = {}
        self.test_sets: dict[str, BenchmarkDataset] = {}
        self.per_device_batch_size = self.batch_size

    def _loaders(self, sets: list[str]) -> list[tuple[str, int, str]]:
        """(loader name, scale, set) of every evaluation loader: the sets at ``scale``, then (multi-scale) each set
        at the other scales as ``<set>_x<s>``."""
        loaders = [(n, self.scale, n) for n in sets]
        return loaders + [(f"{n}_x{s}", s, n) for s in self.scales or () if s != self.scale for n in sets]

    def _per_scale(self, sets: list[str]) -> tuple[list[str], list[int]]:
        loaders = self._loaders(sets)
        return [name for name, _, _ in loaders], [s for _, s, _ in loaders]

    def _eval_sets(self, specs: Mapping[str, dict[str, Any]]) -> dict[str, BenchmarkDataset]:
        return {name: BenchmarkDataset(scale=s, name=name, **specs[n]) for name, s, n in self._loaders(list(specs))}

    # ------------------------------------------------------------------ lightning hooks
    def setup(self, stage: str | None = None) -> None:
        world = self._setup_world()
        if stage in (None, "fit") and self.train_spec is not None and self.train_set is None:
            _check_trainer_sampler(self, world)
            common = {"lr_patch_size": self.lr_patch_size, "seed": self.seed, **self.train_spec}
            self.train_set = (
                MultiScalePairedDataset(scales=self.scales, **common)
                if self.scales
                else PairedImageDataset(scale=self.scale, **common)
            )
        if stage in (None, "fit", "validate") and not self.val_sets:
            self.val_sets = self._eval_sets(self.val_specs)
        if stage in (None, "test") and not self.test_sets:
            self.test_sets = self._eval_sets(self.test_specs)


def _multi_scales(scales: Sequence[int] | None, scale: int) -> tuple[int, ...] | None:
    """``data.scales`` checked: None, or at least two different positive ints that include ``data.scale``."""
    if scales is None:
        return None
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
        raise ValueError(f"data.scales must be a list of scales such as [2, 3, 4], got {scales!r}")
    values = tuple(_pos_int(s, "data.scales") for s in scales)
    if len(values) < 2 or len(set(values)) != len(values):
        raise ValueError(f"data.scales must list at least two different scales, got {list(values)}")
    if scale not in values:
        raise ValueError(
            f"data.scale={scale} (the target scale, validated under the plain set names) must be one of "
            f"data.scales={list(values)}"
        )
    return tuple(sorted(values))


class SamplesDataModule(PairedSRDataModule):
    """:class:`PairedSRDataModule` on the embedded scikit-image sample set (:mod:`sresolve.data.samples`).

    ``root`` receives ``train/HR`` (8 images) and ``val/HR`` (3 held-out images, validation set name
    ``"samples"``) in :meth:`prepare_data`; every other argument is passed on.
    """

    def __init__(self, root: str | os.PathLike[str], scale: int = 4, **kwargs: Any) -> None:
        kwargs.setdefault("name", "samples")
        super().__init__(scale=scale, samples_root=root, **kwargs)


class ImageNetSRDataModule(PairedSRDataModule):
    """Same-task pre-training data of HAT / HMA (spec ``archs_hat_hma_safmn.md`` §1.6, §2.5): ImageNet HR images,
    LR made on the fly.

    ``root`` is the ILSVRC training folder ``train/<wnid>/*.JPEG`` or any folder tree of images (searched
    recursively; ``.JPEG``/``.jpg``/``.png``/... any case, :data:`~sresolve.data.io.IMAGE_EXTENSIONS`). When ``root``
    has a ``train`` sub-folder (``ILSVRC/Data/CLS-LOC``), only that one is used, so ImageNet's val/test images never
    enter training. Each item is an HR patch of ``lr_patch_size * scale`` at a random position of a random image, its
    LR the MATLAB-exact bicubic downscale of that patch (:func:`~sresolve.data.degradation.imresize`, rounded to 8
    bits like a saved LR PNG), then the dihedral flips; it is :class:`~sresolve.data.datasets.PairedImageDataset`
    with ``recursive=True, skip_small=True, cache=False``.

    Differences from the official ``ImageNetPairedDataset`` on purpose: the official code up-scales (``cv2.resize``)
    images smaller than the patch and degrades the whole image before cropping; here images smaller than the HR patch
    are skipped (one log line: ``skipped N of M images smaller than the PxP HR patch``) and only the patch is degraded
    (the same pixels except the outer ~2 LR pixels, at a fraction of the CPU cost). Sizes are read from the file
    headers (no decoding) in a thread pool, once per process; nothing is cached in RAM.

    Args:
        root: the image folder tree (``${paths.data_dir}/ImageNet/train``).
        val: validation sets as for :class:`PairedSRDataModule` (``{Set5: {hr_dir: ...}}``); ``None`` = none.
        repeat, use_hflip, use_rot, lr_quantize: the training spec keys of :class:`PairedSRDataModule`.
        other arguments: as :class:`PairedSRDataModule`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        val: Mapping[str, Any] | None = None,
        scale: int = 4,
        lr_patch_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool | None = None,
        seed: int = 0,
        repeat: int = 1,
        use_hflip: bool = True,
        use_rot: bool = True,
        lr_quantize: bool = True,
        test: Mapping[str, Any] | None = None,
        name: str | None = "imagenet",
        scales: Sequence[int] | None = None,
    ) -> None:
        root_dir = _path(root, "data.root")
        self.root = root_dir / "train" if (root_dir / "train").is_dir() else root_dir
        train = {
            "hr_dirs": [str(self.root)],
            "recursive": True,
            "skip_small": True,
            "cache": False,
            "repeat": repeat,
            "use_hflip": use_hflip,
            "use_rot": use_rot,
            "lr_quantize": lr_quantize,
        }
        super().__init__(
            train=train,
            val=val,
            scale=scale,
            lr_patch_size=lr_patch_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            seed=seed,
            test=test,
            name=name,
            scales=scales,
        )


def samples_datamodule(root: str | os.PathLike[str], scale: int = 4, **kwargs: Any) -> SamplesDataModule:
    """Materialise the sample images under ``root`` now and return a :class:`SamplesDataModule` on them."""
    dm = SamplesDataModule(root, scale=scale, **kwargs)
    dm.prepare_data()
    return dm


# ---------------------------------------------------------------------------------------------------- benchmarks
def _find_benchmark_dir(root: Path, name: str) -> tuple[Path | None, list[Path]]:
    """HR folder of benchmark ``name`` under ``root`` (``<root>/<name>/HR`` etc.), plus the paths tried."""
    tried: list[Path] = []
    for folder_name in (name, *_ALIASES.get(name, ())):
        base = root / folder_name
        for sub in _BENCH_HR_SUBDIRS:
            cand = base / sub
            tried.append(cand)
            if cand.is_dir():
                return cand, tried
    return None, tried


def _benchmark_sets(root: Any, names: Any, parse_specs: Any) -> dict[str, dict[str, Any]]:
    """Benchmark sets ``{name: spec}`` of ``data.root`` (a folder holding the sets, or a ``{name: spec}`` mapping
    parsed by ``parse_specs(mapping, "data.root")``) and ``data.names`` (``None`` = every set of
    :data:`BENCHMARK_NAMES` present in the folder, or every set of the mapping)."""
    root = _to_container(root)
    names = _to_container(names)
    if names is not None and (
        isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(f"data.names must be a list of set names such as ['Set5', 'Set14'], got {names!r}")
    sets: dict[str, dict[str, Any]] = {}
    if isinstance(root, Mapping):
        specs = parse_specs(root, "data.root")
        selected = list(names) if names is not None else list(specs)
        for n in selected:
            if n not in specs:
                raise ValueError(f"data.names: set {n!r} is not in data.root (available: {list(specs)})")
            sets[n] = specs[n]
        return sets
    root_dir = _path(root, "data.root")
    if not root_dir.is_dir():
        raise FileNotFoundError(f"benchmark root folder not found: {root_dir} (data.root)")
    for n in names if names is not None else BENCHMARK_NAMES:
        hr_dir, tried = _find_benchmark_dir(root_dir, n)
        if hr_dir is None:
            if names is None:
                continue
            raise FileNotFoundError(
                f"benchmark set {n!r} not found: expected HR images in {tried[0]} "
                f"(also tried {', '.join(str(t) for t in tried[1:])})"
            )
        sets[n] = {"hr_dir": hr_dir}
    if not sets:
        raise FileNotFoundError(
            f"no benchmark set found under {root_dir}: expected <root>/<Name>/HR for Name in {list(BENCHMARK_NAMES)}"
        )
    return sets


class BenchmarkDataModule(L.LightningDataModule):
    """Benchmark evaluation sets (``trainer.test``/``trainer.validate``), one loader per set, batch 1.

    Layout: ``<root>/<Name>/HR/*.png`` with optional ``<root>/<Name>/LR_bicubic/X{s}/<stem>x{s}.png`` (also accepted:
    BasicSR's ``GTmod12``/``LRbicx{s}`` folders, and ``B100`` for ``BSD100``). Without LR files the LR is made with
    MATLAB bicubic and rounded to 8 bits (:class:`~sresolve.data.datasets.BenchmarkDataset`).

    Args:
        root: the folder holding the sets, or a mapping ``{name: hr_dir}`` / ``{name: {hr_dir, lr_dir, ...}}``.
        names: sets to use (with a folder ``root``). ``None`` = those of :data:`BENCHMARK_NAMES` that are present
            (at least one must be); an explicit list requires every set, and a missing one is an error naming the
            expected folder.
        scale: upscaling factor.
        modcrop: HR modcrop for every set (``None`` = ``scale``); recorded in :attr:`modcrop` for result tables.
        num_workers: loader workers per process.
        pin_memory: pin batches (only when CUDA is available).
        lr_quantize: round on-the-fly LR to 8-bit levels (the protocol; keep true).
        name: a label (the Hydra config's ``data.name``).

    Attributes: ``test_names`` (= ``val_names``), ``modcrop`` (int actually used), ``sets`` (name -> spec).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Mapping[str, Any],
        names: Sequence[str] | None = None,
        scale: int = 4,
        modcrop: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        lr_quantize: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.scale = _pos_int(scale, "data.scale")
        self.modcrop = self.scale if modcrop is None else _pos_int(modcrop, "data.modcrop")
        if self.modcrop % self.scale:
            raise ValueError(f"data.modcrop={self.modcrop} must be a multiple of data.scale={self.scale}")
        self.num_workers = _nonneg_int(num_workers, "data.num_workers")
        self.pin_memory = _bool(pin_memory, "data.pin_memory")
        self.lr_quantize = _bool(lr_quantize, "data.lr_quantize")
        self.name = name
        self.sets: dict[str, dict[str, Any]] = _benchmark_sets(root, names, _eval_specs)
        for spec in self.sets.values():
            spec.setdefault("modcrop", self.modcrop)
        self.test_names: list[str] = list(self.sets)
        self.val_names: list[str] = self.test_names
        self.test_sets: dict[str, BenchmarkDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.test_sets:
            self.test_sets = {
                n: BenchmarkDataset(scale=self.scale, name=n, **{"lr_quantize": self.lr_quantize, **spec})
                for n, spec in self.sets.items()
            }

    def test_dataloader(self) -> list[DataLoader]:
        self.setup("test")
        world, rank = _world(self)
        pin = self.pin_memory and torch.cuda.is_available()
        return _eval_loaders(list(self.test_sets.values()), world, rank, self.num_workers, pin)

    def val_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()
