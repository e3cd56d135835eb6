"""Deterministic, resumable training samplers.

A training run must give the same weights whether it ran straight through or was killed and resumed (BasicSR
restarts the epoch's order on resume; Lightning warns that plain loaders are not resumable). Here every sample's
randomness is a function of ``(seed, epoch, position)`` alone: :class:`ResumableSampler` yields ``(index, sample_seed)``
pairs from a per-epoch seeded permutation, the dataset derives its crop/flip generator from ``sample_seed``, and
:class:`ResumableDataLoader` exposes ``state_dict``/``load_state_dict`` (Lightning's stateful-loader protocol) holding
the epoch and the number of batches already delivered, so a resumed run skips exactly those. The stream is the same
for any ``num_workers``. Under DDP each rank takes a disjoint strided shard of every epoch's permutation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for one sample, mixed from the run seed, the epoch and the position in the epoch."""
    x = (seed * _MIX + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 32)) & 0x7FFFFFFFFFFFFFFF


class ResumableSampler(Sampler[tuple[int, int]]):
    """Seeded per-epoch permutation, sharded by rank, yielding ``(index, sample_seed)``; can start mid-epoch."""

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if length <= 0:
            raise ValueError(f"ResumableSampler needs a non-empty dataset, got length {length}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.length, self.seed, self.shuffle = length, int(seed), shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0  # samples of this rank's shard to skip in the current epoch

    def __len__(self) -> int:
        return self.length // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        n = len(self)
        shard = order[self.rank : n * self.world_size : self.world_size]
        for pos in range(self.start, n):
            global_pos = pos * self.world_size + self.rank
            yield shard[pos], sample_seed(self.seed, self.epoch, global_pos)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` that starts at a given number of consumed batches.

    ``start_batch`` is the number of training batches already consumed by the run (Lightning's ``global_step``
    times gradient accumulation at the moment ``train_dataloader()`` is requested, which on resume is after the
    loop state has been restored). The position is derived from the step count rather than counted here, because
    Lightning prefetches a batch ahead of the one being trained on. ``state_dict``/``load_state_dict`` exist so that
    Lightning recognises the loader as resumable; the state they carry is informational.
    """

    def __init__(
        self, dataset: Any, sampler: ResumableSampler, batch_size: int, start_batch: int = 0, **kwargs: Any
    ) -> None:
        kwargs.setdefault("drop_last", True)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        per_epoch = len(self)
        if per_epoch == 0:
            raise ValueError(
                f"the training set yields no full batch: {len(sampler)} samples per rank < batch size {batch_size}; "
                "lower data.batch_size or raise data.train.repeat"
            )
        self._epoch, self._skip = divmod(int(start_batch), per_epoch)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        """One call per epoch (Lightning creates one iterator per epoch); the bookkeeping is eager, so the sampler
        is positioned before worker prefetching starts."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        sampler.epoch, sampler.start = self._epoch, self._skip * self.batch_size
        self._epoch += 1
        self._skip = 0
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Nothing to restore: the position comes from ``start_batch`` (see the class docstring)."""
