"""Calibration of a study's comparisons by simulation: the per-example test against the methods' test.

    python bench/stats_calibration.py [--sims 10000] [--old-sims 2000] [--seed 0]

Two cells are simulated on the 872 examples of SST-2's validation split. Each run (cell, seed)
has a true accuracy drawn from ``N(90 % + effect, seed sd)``; it is right on example ``i`` when
``√ρ·z_i + √(1−ρ)·ε_ri < Φ⁻¹(accuracy)``, with ``z_i`` the example's difficulty (shared by every
run of both cells) and ``ε_ri`` the run's own noise. ρ = 0.9 makes two runs at 90 % disagree on
about 6 % of the examples, as LoRA runs of different seeds or ranks do in the reference studies
(ref003, rank 16 vs rank 8: 5.6 % of the test sentences per seed); ρ = 0 (independent examples) is
also run. With effect 0 the two cells are the same method, so every rejection is a false positive.

For each case it prints the share of simulations in which each test rejects at α = 0.05:

* old: the exact sign-flip test over examples of the seed-averaged differences (the report's
  headline test before the methods' test; now its "these trained runs" test);
* new: :func:`loralab.evaluation.stats.method_test`, the t-test with the seeds' and the examples'
  variance.

Rates are out of ``--sims`` simulations for the new test and the first ``--old-sims`` of them for
the old one (the exact sign-flip test takes about 2 ms per simulation); a rate near 5 % out of N
simulations has a standard error of √(0.05·0.95/N): 0.22 pt at 10,000, 0.49 pt at 2,000.
``tests/test_stats.py`` imports :func:`simulate` and :func:`rejection_rates` from here.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

N_EXAMPLES = 872  # SST-2 validation
ACCURACY = 0.90
RHO = 0.9
CHUNK = 500  # simulations generated at once (bounds memory: CHUNK × seeds × examples per cell)


def simulate(
    rng: np.random.Generator,
    sims: int,
    seeds: int,
    sd_a: float,
    sd_b: float | None = None,
    effect: float = 0.0,
    n: int = N_EXAMPLES,
    accuracy: float = ACCURACY,
    rho: float = RHO,
) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of cells A and B, each ``(sims, seeds, n)`` bool; accuracies and sds as fractions."""
    from scipy.stats import norm

    sd_b = sd_a if sd_b is None else sd_b
    z = np.sqrt(rho) * rng.standard_normal((sims, 1, n))
    acc_a = np.clip(accuracy + effect + sd_a * rng.standard_normal((sims, seeds, 1)), 0.01, 0.99)
    acc_b = np.clip(accuracy + sd_b * rng.standard_normal((sims, seeds, 1)), 0.01, 0.99)
    noise = np.sqrt(1 - rho)
    a = z + noise * rng.standard_normal((sims, seeds, n)) < norm.ppf(acc_a)
    b = z + noise * rng.standard_normal((sims, seeds, n)) < norm.ppf(acc_b)
    return a, b


def old_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact sign-flip test over examples of each simulation's seed-averaged differences."""
    from loralab.evaluation.stats import sign_flip_test

    counts = a.sum(axis=-2).astype(np.int64) - b.sum(axis=-2).astype(np.int64)
    return np.array([sign_flip_test(c) for c in counts])


def new_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from loralab.evaluation.stats import method_test

    return method_test(a, b).p


def rejection_rates(
    rng: np.random.Generator, sims: int, old_sims: int, alpha: float = 0.05, **case
) -> tuple[float, float]:
    """(old, new) shares of simulations rejecting at ``alpha``; old over the first ``old_sims``
    (NaN when 0). ``case``: the arguments of :func:`simulate` but ``rng`` and ``sims``."""
    old, new = [], []
    for start in range(0, sims, CHUNK):
        a, b = simulate(rng, min(CHUNK, sims - start), **case)
        new.append(new_p(a, b) < alpha)
        if start < old_sims:
            k = min(len(a), old_sims - start)
            old.append(old_p(a[:k], b[:k]) < alpha)
    return (float(np.concatenate(old).mean()) if old else float("nan")), float(np.concatenate(new).mean())


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def _row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def disagreement(rng: np.random.Generator, sims: int = 200) -> float:
    """How often two runs of one cell (seed sd 0.9 pt) disagree on an example, on average."""
    a, _ = simulate(rng, sims, 2, 0.009)
    return float((a[:, 0] != a[:, 1]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=10_000, help="simulations per case (new test)")
    ap.add_argument("--old-sims", type=int, default=2_000, help="of which scored by the old test too")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    def rates(**case) -> tuple[str, str]:
        return tuple(map(_pct, rejection_rates(rng, args.sims, args.old_sims, **case)))

    print(
        f"{N_EXAMPLES} examples, accuracy {100 * ACCURACY:.0f}%, ρ = {RHO} (two runs disagree on "
        f"{100 * disagreement(rng):.1f}% of the examples); share of simulations rejecting at α = 0.05"
    )
    print(f"{args.sims:,} simulations per case ({args.old_sims:,} for the old test), numpy seed {args.seed}\n")
    print(
        _row(
            "seeds per cell",
            "seed sd (pt)",
            "false positives, old",
            "false positives, new",
            *(f"power +{e} pt, old / new" for e in (1, 2)),
        )
    )
    print(_row(*["---"] * 6))
    for seeds in (3, 5):
        for sd in (0.3, 0.6, 0.9, 1.2, 1.5):
            (fo, fn), (p1o, p1n), (p2o, p2n) = (rates(seeds=seeds, sd_a=sd / 100, effect=e / 100) for e in (0, 1, 2))
            print(_row(seeds, f"{sd:.1f}", fo, fn, f"{p1o} / {p1n}", f"{p2o} / {p2n}"))
    print("\nOther cases, two cells of one method:\n")
    print(_row("case", "seeds per cell", "false positives, old", "false positives, new"))
    print(_row(*["---"] * 4))
    others = [
        ("independent examples (ρ = 0), seed sd 0.9 pt", {"sd_a": 0.009, "rho": 0.0}),
        ("seed sd 0.6 pt in one cell, 1.2 pt in the other", {"sd_a": 0.006, "sd_b": 0.012}),
        ("seed sd 0.3 pt in one cell, 1.5 pt in the other", {"sd_a": 0.003, "sd_b": 0.015}),
    ]
    for label, case in others:
        for seeds in (3, 5):
            print(_row(label, seeds, *rates(seeds=seeds, **case)))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
