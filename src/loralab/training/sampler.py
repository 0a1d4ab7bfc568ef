"""Which training examples each process trains on at each step: seeded length-grouped global
batches, each cut into the micro-batches of every rank and accumulation step.

The same ``--batch-size`` (the *global* batch) gives the same optimisation on 1 or N processes:
the global batches of an epoch depend only on the seed, the epoch and the lengths, never on the
world size. A global batch of ``n`` examples is cut into ``world_size * grad_accum`` contiguous
micro-batches of ``ceil(n / (world_size * grad_accum))`` rows (contiguous, so that rows of a
micro-batch have similar lengths). Where ``n`` does not divide evenly (the epoch's last, short
global batch), the missing rows are *weight-0 copies* of a real example: they keep every rank's
micro-batches non-empty and every rank's step count equal, and add nothing to the loss or the
gradient. So every example is trained on exactly once per epoch, every rank takes
``ceil(N / batch_size)`` optimizer steps per epoch, and the learning-rate schedule ends at zero.

Written by hand rather than taken from accelerate: accelerate's batch-sampler sharding evens out
a short last batch by repeating examples from the start of the epoch (they train twice), and a
short batch that is not last (length grouping shuffles batch order) makes it drop a whole round.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


class LengthGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Seeded global batches of similar-length examples; every example exactly once per epoch.

    Shuffle all indices, cut them into mega-batches of ``batch_size * mega`` examples, sort each
    mega-batch by length, cut it into batches, then shuffle the batch order. Batches stay random
    across the epoch while padding inside a batch stays small. ``group_by_length=False`` gives
    plain shuffled batches. Call :meth:`set_epoch` so that each epoch has its own order.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool = True, mega: int = 50
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.mega = mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        if not self.group_by_length:
            yield from (order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))
            return
        size = self.batch_size * self.mega
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: -self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        yield from (batches[p] for p in perm)


@dataclass(frozen=True)
class MicroBatch:
    """One forward/backward of one rank: example indices, their loss weights (1 real, 0 fill),
    the number of real examples in the whole global batch, and whether the optimizer steps after it."""

    indices: list[int]
    weights: list[float]
    global_count: int
    step_index: int  # which global batch of the epoch (0-based)
    last_of_step: bool


def split_global_batch(batch: Sequence[int], parts: int) -> list[tuple[list[int], list[float]]]:
    """Cut ``batch`` into ``parts`` contiguous micro-batches of equal row count; the rows missing
    at the end are weight-0 copies of the batch's first example."""
    rows = math.ceil(len(batch) / parts)
    out = []
    for j in range(parts):
        real = list(batch[j * rows : (j + 1) * rows])
        fill = rows - len(real)
        out.append((real + [batch[0]] * fill, [1.0] * len(real) + [0.0] * fill))
    return out


class RankMicroBatches:
    """The micro-batches of one rank, epoch by epoch, from the shared global batches.

    Rank ``r`` at accumulation step ``a`` of a global batch takes micro-batch ``a * world_size + r``.
    :meth:`set_epoch` takes ``start``, the number of global batches of the epoch already trained
    (a resumed run continues exactly where its checkpoint was taken).
    """

    def __init__(
        self, batches: LengthGroupedBatchSampler, world_size: int = 1, rank: int = 0, grad_accum: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.batches, self.world_size, self.rank, self.grad_accum = batches, world_size, rank, grad_accum
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.batches.set_epoch(epoch)
        self.start = start

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (global batches), the same on every rank."""
        return len(self.batches)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start) * self.grad_accum

    def __iter__(self) -> Iterator[MicroBatch]:
        parts = self.world_size * self.grad_accum
        for step, batch in enumerate(self.batches):
            if step < self.start:
                continue
            pieces = split_global_batch(batch, parts)
            for a in range(self.grad_accum):
                idx, w = pieces[a * self.world_size + self.rank]
                yield MicroBatch(idx, w, len(batch), step, a == self.grad_accum - 1)
