"""Resumable sampling (same stream after a restart, disjoint DDP shards) and the recipe losses."""

from __future__ import annotations

import pytest
import torch

from sresolve.data.samplers import ResumableDataLoader, ResumableSampler, sample_seed
from sresolve.models.losses import FFTLoss, WeightedLoss


class Echo(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, seed = key
        return torch.tensor([index, seed % 1000])


def _batches(loader: ResumableDataLoader, n: int) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    while len(out) < n:
        out.extend(iter(loader))
    return out[:n]


def test_resumed_loader_continues_the_same_stream() -> None:
    full = _batches(ResumableDataLoader(Echo(), ResumableSampler(10, seed=3), batch_size=3), 9)  # 3 per epoch
    for consumed in (1, 3, 4, 7):
        resumed = _batches(
            ResumableDataLoader(Echo(), ResumableSampler(10, seed=3), batch_size=3, start_batch=consumed), 9 - consumed
        )
        for a, b in zip(full[consumed:], resumed, strict=True):
            assert torch.equal(a, b)
    # epochs differ, seeds differ
    assert not torch.equal(full[0], full[3])
    other = _batches(ResumableDataLoader(Echo(), ResumableSampler(10, seed=4), batch_size=3), 3)
    assert not all(torch.equal(a, b) for a, b in zip(full[:3], other, strict=True))


def test_stream_does_not_depend_on_workers() -> None:
    a = _batches(ResumableDataLoader(Echo(), ResumableSampler(10, seed=1), batch_size=2), 5)
    b = _batches(ResumableDataLoader(Echo(), ResumableSampler(10, seed=1), batch_size=2, num_workers=2), 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_rank_shards_are_disjoint_and_cover_the_epoch() -> None:
    shards = [[i for i, _ in ResumableSampler(12, seed=0, rank=r, world_size=3)] for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(12))
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(12, rank=3, world_size=3)
    with pytest.raises(ValueError, match="no full batch"):
        ResumableDataLoader(Echo(), ResumableSampler(10), batch_size=11)


def test_sample_seed_is_deterministic_and_spread() -> None:
    seeds = {sample_seed(10, e, p) for e in range(4) for p in range(250)}
    assert len(seeds) == 1000 and sample_seed(10, 0, 0) == sample_seed(10, 0, 0)
    assert all(0 <= s < 2**63 for s in seeds)


def test_fft_loss_matches_definition_and_weighted_sum() -> None:
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 8, 10), torch.rand(2, 3, 8, 10)
    fp, ft = torch.fft.rfft2(pred), torch.fft.rfft2(target)
    expected = ((fp.real - ft.real).abs().sum() + (fp.imag - ft.imag).abs().sum()) / (2 * fp.numel())
    torch.testing.assert_close(FFTLoss()(pred, target), expected)
    total, parts = WeightedLoss({"l1": 1.0, "fft": 0.05})(pred, target)
    torch.testing.assert_close(total, (pred - target).abs().mean() + 0.05 * expected)
    assert set(parts) == {"l1", "fft"}
    with pytest.raises(ValueError, match="unknown loss"):
        WeightedLoss({"l2": 1.0})
