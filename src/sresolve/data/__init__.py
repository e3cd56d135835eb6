"""Data: image IO, the embedded sample set, paired/benchmark datasets, samplers and LightningDataModules.

Names are imported lazily (PEP 562), so ``import sresolve.data.io`` does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # io
    "IMAGE_EXTENSIONS": "io",
    "ImageReadError": "io",
    "image_size": "io",
    "list_images": "io",
    "read_image": "io",
    "read_image_uint8": "io",
    "to_uint8": "io",
    "write_image": "io",
    # samples
    "SAMPLE_SPLIT": "samples",
    "load_sample": "samples",
    "materialize_samples": "samples",
    # transforms
    "augment": "transforms",
    "paired_random_crop": "transforms",
    "random_crop": "transforms",
    # datasets
    "BenchmarkDataset": "datasets",
    "ImageFolderPairDataset": "datasets",
    "MultiScalePairedDataset": "datasets",
    "PairedImageDataset": "datasets",
    # degradation
    "imresize": "degradation",
    "pil_bicubic_resize": "degradation",
    # arbitrary-scale SR (EQSR)
    "ArbitraryScaleBenchmarkDataModule": "arbitrary",
    "ArbitraryScaleBenchmarkDataset": "arbitrary",
    "ArbitraryScaleSRDataModule": "arbitrary",
    "ArbitraryScaleTrainDataset": "arbitrary",
    # multi-reference SR (AMRSR)
    "MultiRefEvalDataset": "multiref",
    "MultiRefSRDataModule": "multiref",
    "MultiRefTrainDataset": "multiref",
    "collate_multiref": "multiref",
    "materialize_multiref_samples": "multiref",
    # datamodules
    "BENCHMARK_NAMES": "datamodules",
    "BenchmarkDataModule": "datamodules",
    "ImageNetSRDataModule": "datamodules",
    "PairedSRDataModule": "datamodules",
    "SamplesDataModule": "datamodules",
    "ShardedEvalSampler": "datamodules",
    "samples_datamodule": "datamodules",
}

__all__ = [
    "BENCHMARK_NAMES",
    "IMAGE_EXTENSIONS",
    "SAMPLE_SPLIT",
    "ArbitraryScaleBenchmarkDataModule",
    "ArbitraryScaleBenchmarkDataset",
    "ArbitraryScaleSRDataModule",
    "ArbitraryScaleTrainDataset",
    "BenchmarkDataModule",
    "BenchmarkDataset",
    "ImageFolderPairDataset",
    "ImageNetSRDataModule",
    "ImageReadError",
    "MultiRefEvalDataset",
    "MultiRefSRDataModule",
    "MultiRefTrainDataset",
    "MultiScalePairedDataset",
    "PairedImageDataset",
    "PairedSRDataModule",
    "SamplesDataModule",
    "ShardedEvalSampler",
    "augment",
    "collate_multiref",
    "image_size",
    "imresize",
    "list_images",
    "load_sample",
    "materialize_multiref_samples",
    "materialize_samples",
    "paired_random_crop",
    "pil_bicubic_resize",
    "random_crop",
    "read_image",
    "read_image_uint8",
    "samples_datamodule",
    "to_uint8",
    "write_image",
]

if TYPE_CHECKING:
    from sresolve.data.arbitrary import (
        ArbitraryScaleBenchmarkDataModule,
        ArbitraryScaleBenchmarkDataset,
        ArbitraryScaleSRDataModule,
        ArbitraryScaleTrainDataset,
    )
    from sresolve.data.datamodules import (
        BENCHMARK_NAMES,
        BenchmarkDataModule,
        ImageNetSRDataModule,
        PairedSRDataModule,
        SamplesDataModule,
        ShardedEvalSampler,
        samples_datamodule,
    )
    from sresolve.data.datasets import (
        BenchmarkDataset,
        ImageFolderPairDataset,
        MultiScalePairedDataset,
        PairedImageDataset,
    )
    from sresolve.data.degradation import imresize, pil_bicubic_resize
    from sresolve.data.io import (
        IMAGE_EXTENSIONS,
        ImageReadError,
        image_size,
        list_images,
        read_image,
        read_image_uint8,
        to_uint8,
        write_image,
    )
    from sresolve.data.multiref import (
        MultiRefEvalDataset,
        MultiRefSRDataModule,
        MultiRefTrainDataset,
        collate_multiref,
        materialize_multiref_samples,
    )
    from sresolve.data.samples import SAMPLE_SPLIT, load_sample, materialize_samples
    from sresolve.data.transforms import augment, paired_random_crop, random_crop


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sresolve.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sresolve.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
