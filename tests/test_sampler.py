"""Global batches and their per-rank micro-batches: every example once per epoch on any world
size, equal step counts on every rank, the same global batches whatever the world size."""

from __future__ import annotations

import itertools

import pytest

from loralab.training.sampler import LengthGroupedBatchSampler, RankMicroBatches, split_global_batch


@pytest.mark.parametrize("group", [True, False])
def test_batches_cover_every_example_once_and_are_reproducible(group):
    lengths = [(i * 7) % 23 + 1 for i in range(203)]
    s = LengthGroupedBatchSampler(lengths, batch_size=8, seed=1, group_by_length=group, mega=4)
    s.set_epoch(1)
    first = list(s)
    flat = sorted(i for b in first for i in b)
    assert flat == list(range(203))
    assert len(first) == len(s)
    assert first == list(s)  # same epoch, same order
    s.set_epoch(2)
    assert list(s) != first
    if group:  # grouping lowers padding: mean in-batch length spread is small
        spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
        assert spread < 8


def _epoch(n: int, batch: int, world: int, accum: int, epoch: int, seed: int = 3, group: bool = True, start: int = 0):
    lengths = [(i * 13) % 41 + 1 for i in range(n)]
    ranks = []
    for r in range(world):
        micro = RankMicroBatches(LengthGroupedBatchSampler(lengths, batch, seed, group, mega=3), world, r, accum)
        micro.set_epoch(epoch, start)
        ranks.append(list(micro))
    return ranks


@pytest.mark.parametrize(
    ("n", "batch", "world", "accum"),
    [
        (1000, 32, 2, 1),
        (1000, 32, 4, 2),
        (203, 8, 2, 2),
        (7, 8, 4, 2),
        (65, 16, 3, 1),
        (64, 16, 2, 4),
        (33, 32, 2, 1),
    ],
)
def test_every_example_once_per_epoch_and_equal_steps_on_every_rank(n, batch, world, accum):
    for epoch in range(1, 41):
        ranks = _epoch(n, batch, world, accum, epoch)
        lengths = {len(r) for r in ranks}
        assert lengths == {-(-n // batch) * accum}, "every rank runs the same number of micro-batches"
        real = sorted(i for r in ranks for mb in r for i, w in zip(mb.indices, mb.weights) if w == 1.0)
        assert real == list(range(n)), f"epoch {epoch}: an example missing or repeated"
        for steps in zip(*ranks):  # lock-step: the same global batch and step flags on every rank
            assert len({mb.step_index for mb in steps}) == 1
            assert len({mb.last_of_step for mb in steps}) == 1
            assert len({len(mb.indices) for mb in steps}) == 1, "equal micro-batch rows on every rank"
            assert all(mb.indices for mb in steps)
        # optimizer steps: exactly one last_of_step per global batch
        assert sum(mb.last_of_step for mb in ranks[0]) == -(-n // batch)


def test_global_batches_do_not_depend_on_the_world_size():
    one = _epoch(203, 16, 1, 1, epoch=5)[0]
    four = _epoch(203, 16, 2, 2, epoch=5)
    for step, mb in enumerate(one):
        parts = [m for r in four for m in r if m.step_index == step]
        got = sorted(i for m in parts for i, w in zip(m.indices, m.weights) if w)
        assert got == sorted(mb.indices)
        assert {m.global_count for m in parts} == {len(mb.indices)}


def test_one_process_yields_the_global_batches_unchanged():
    lengths = [(i * 7) % 23 + 1 for i in range(100)]
    s = LengthGroupedBatchSampler(lengths, 8, seed=1)
    s.set_epoch(2)
    expected = list(s)
    micro = RankMicroBatches(LengthGroupedBatchSampler(lengths, 8, seed=1))
    micro.set_epoch(2)
    got = list(micro)
    assert [m.indices for m in got] == expected
    assert all(m.weights == [1.0] * len(m.indices) and m.last_of_step for m in got)


def test_start_skips_the_global_batches_already_trained():
    full = _epoch(203, 8, 2, 2, epoch=2)
    resumed = _epoch(203, 8, 2, 2, epoch=2, start=10)
    for r in range(2):
        assert resumed[r] == [mb for mb in full[r] if mb.step_index >= 10]


def test_split_fills_with_weight_zero_copies():
    pieces = split_global_batch([5, 6, 7], 4)
    assert pieces == [([5], [1.0]), ([6], [1.0]), ([7], [1.0]), ([5], [0.0])]
    assert split_global_batch(list(range(8)), 2) == [([0, 1, 2, 3], [1.0] * 4), ([4, 5, 6, 7], [1.0] * 4)]
    assert list(itertools.chain.from_iterable(p for p, _ in split_global_batch([1, 2, 3, 4, 5], 2))) == [
        1,
        2,
        3,
        4,
        5,
        1,
    ]
