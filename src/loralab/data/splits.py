"""The loaded data in memory: one :class:`Split` per train/validation/test, the :class:`DataBundle`
that holds them with the label set, the stratified subsample behind ``--train-size`` and the
held-out validation part behind ``--validation-split``."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from loralab.errors import DataError


@dataclass
class Split:
    """One split: texts (and second texts of a pair task) and labels, with where they came from.

    ``labels`` are label ids (classification) or numbers (regression); None for a test file
    without labels (predicted, never scored)."""

    name: str
    texts: list[str]
    labels: list[int] | list[float] | None
    path: str
    sha256: str | None = None
    pairs: list[str] | None = None

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> Split:
        """The examples at ``indices``, in that order, with the same origin."""
        return Split(
            self.name,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices] if self.labels is not None else None,
            self.path,
            self.sha256,
            [self.pairs[i] for i in indices] if self.pairs is not None else None,
        )


@dataclass
class DataBundle:
    """The splits of one run (test optional), its label set and where the data came from."""

    train: Split
    validation: Split
    test: Split | None
    label_names: list[str]
    labels: list[str]  # raw label values in id order (regression: the label column's name)
    source: str  # "files" or "hub"
    task: str = "classification"  # or "regression"

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
    return split.subset(sorted(_stratified_indices(split.labels, n, seed)))


def _strata(labels: Sequence[int] | Sequence[float]) -> list[int]:
    """The stratum of each example: its label id, or for numbers (regression) its decile."""
    if not labels or not isinstance(labels[0], float):
        return list(labels)
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))
    strata = [0] * len(labels)
    for rank, i in enumerate(order):
        strata[i] = rank * 10 // len(labels)
    return strata


def _stratified_indices(labels: Sequence[int] | Sequence[float], n: int, seed: int) -> list[int]:
    total = len(labels)
    by_label: dict[int, list[int]] = {}
    for i, lab in enumerate(_strata(labels)):
        by_label.setdefault(lab, []).append(i)
    quotas = {lab: n * len(ix) / total for lab, ix in by_label.items()}
    take = {lab: math.floor(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda k: (-(quotas[k] - take[k]), k))[: n - sum(take.values())]:
        take[lab] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for lab in sorted(by_label):
        chosen += rng.sample(by_label[lab], take[lab])
    return chosen


def hold_out(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """``(train, validation)``: ``fraction`` of ``train`` held out as validation, stratified by label
    (regression: by decile of the score) and reproducible for ``seed`` (``--validation-split``)."""
    n_val = round(len(train) * fraction)
    if n_val < 1 or n_val >= len(train):
        raise DataError(
            train.path,
            None,
            f"--validation-split {fraction} leaves no validation or no training example "
            f"of the {len(train)} in the file",
        )
    held = set(_stratified_indices(train.labels, n_val, seed))
    rest = [i for i in range(len(train)) if i not in held]
    validation = train.subset(sorted(held))
    validation.name = "validation"
    validation.path = f"{train.path} (--validation-split {fraction:g})"
    return train.subset(rest), validation
