"""Calibration of the study test for a metric that is not accuracy (Pearson), by simulation.

    python bench/metric_test_calibration.py [--sims 300] [--examples 870] [--boot 300] [--seed 0]

Each run of a cell predicts ``(1 + effect + N(0, seed_sd))·y + N(0, 0.8)`` for true scores ``y``
drawn once per simulation (``N(0, 1)``, ``--examples`` of them): ``seed_sd`` is the run-to-run
distortion (the seed), the last term each run's own noise per example. With effect 0 the two
cells are the same method, so every rejection at α = 0.05 by
:func:`loralab.evaluation.metric_test.metric_comparison` is a false positive. It prints, per seed
sd and number of seeds, the spread of Pearson over seeds that produced, the false-positive rate,
and the power at effects that move Pearson by +0.014 and +0.028. A rate out of N
simulations has a standard error of √(p(1−p)/N): 1.3 pt for 5 % at 300.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from loralab.evaluation.metric_test import metric_comparison

NOISE = 0.8
EFFECTS = (0.05, 0.1)  # on the scale: +0.014 and +0.028 in Pearson


def cell(rng: np.random.Generator, y: np.ndarray, seeds: int, effect: float, seed_sd: float) -> np.ndarray:
    scale = 1 + effect + rng.normal(0, seed_sd, size=(seeds, 1))
    return scale * y + rng.normal(0, NOISE, size=(seeds, len(y)))


def rate(args, seeds: int, seed_sd: float, effect: float, rng: np.random.Generator) -> tuple[float, float]:
    """(share of simulations rejecting at 0.05, mean Pearson sd over seeds of cell A)."""
    hits, spread = 0, []
    for _ in range(args.sims):
        y = rng.normal(size=args.examples)
        a, b = cell(rng, y, seeds, effect, seed_sd), cell(rng, y, seeds, 0.0, seed_sd)
        c = metric_comparison("pearson", y, a, b, n_boot=args.boot, seed=int(rng.integers(1 << 30)))
        hits += c.p < 0.05
        spread.append(c.seed_sd_a)
    return hits / args.sims, float(np.mean(spread))


def pearson_of(effect: float) -> float:
    """The population Pearson of ``(1 + effect)·y + N(0, NOISE)`` with ``y ~ N(0, 1)``."""
    return (1 + effect) / float(np.hypot(1 + effect, NOISE))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=300)
    parser.add_argument("--examples", type=int, default=870)
    parser.add_argument("--boot", type=int, default=300, help="bootstrap resamples per comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-sds", default="0.02,0.05", help="comma-separated seed sds (of the scale) to simulate")
    parser.add_argument("--seeds", default="3,5", help="comma-separated seeds per cell")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    base = pearson_of(0.0)  # exact, not one noisy draw: a single run's Pearson varies by about 0.01
    shifted = {e: pearson_of(e) - base for e in EFFECTS}
    print(
        f"{args.examples} examples, {args.sims} simulations per cell, {args.boot} bootstrap resamples; "
        f"Pearson of one run ≈ {base:.3f}; "
        + ", ".join(f"effect {e} ≈ {d:+.3f}" for e, d in shifted.items())
        + " in Pearson"
    )
    print(
        "| seeds | seed sd (scale) | Pearson sd over seeds | false positives (effect 0) | "
        f"power, effect {EFFECTS[0]} | power, effect {EFFECTS[1]} |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    t0 = time.perf_counter()
    for seeds in (int(s) for s in args.seeds.split(",")):
        for sd in (float(s) for s in args.seed_sds.split(",")):
            fp, spread = rate(args, seeds, sd, 0.0, rng)
            p1, _ = rate(args, seeds, sd, EFFECTS[0], rng)
            p2, _ = rate(args, seeds, sd, EFFECTS[1], rng)
            print(f"| {seeds} | {sd} | {spread:.4f} | {100 * fp:.1f} % | {100 * p1:.1f} % | {100 * p2:.1f} % |")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
