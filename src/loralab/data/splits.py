"""The loaded data in memory: one :class:`Split` per train/validation/test, the :class:`DataBundle`
that holds them with the label set, and the stratified subsample behind ``--train-size``."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from loralab.errors import DataError


@dataclass
class Split:
    """One split: texts and label ids, with where they came from."""

    name: str
    texts: list[str]
    labels: list[int]
    path: str
    sha256: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> Split:
        """The examples at ``indices``, in that order, with the same origin."""
        return Split(
            self.name,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            self.path,
            self.sha256,
        )


@dataclass
class DataBundle:
    """The splits of one run (test optional), its label set and where the data came from."""

    train: Split
    validation: Split
    test: Split | None
    label_names: list[str]
    labels: list[str]  # raw label values in id order
    source: str  # "files" or "hub"

    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.validation, self.test) if s is not None]

    def files(self) -> dict[str, dict]:
        return {s.name: {"path": s.path, "sha256": s.sha256, "examples": len(s)} for s in self.splits()}


def stratified_subsample(split: Split, n: int, seed: int) -> Split:
    """``n`` examples drawn without replacement, keeping label proportions, reproducible for ``seed``.

    Per label, floor(n * share) examples, then the remainder to the labels with the largest
    fractional parts (largest-remainder rounding). Indices keep the file's order.
    """
    total = len(split)
    if n >= total:
        if n > total:
            raise DataError(split.path, None, f"--train-size {n} is larger than the {total} training examples")
        return split
    by_label: dict[int, list[int]] = {}
    for i, lab in enumerate(split.labels):
        by_label.setdefault(lab, []).append(i)
    quotas = {lab: n * len(ix) / total for lab, ix in by_label.items()}
    take = {lab: math.floor(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda k: (-(quotas[k] - take[k]), k))[: n - sum(take.values())]:
        take[lab] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for lab in sorted(by_label):
        chosen += rng.sample(by_label[lab], take[lab])
    return split.subset(sorted(chosen))
