"""Findings: the report's sentences, each built from the numbers it states (never a fixed text)."""

from __future__ import annotations

import math
from collections import Counter

from loralab.evaluation.comparison import Comparison
from loralab.evaluation.stats import POWER
from loralab.study.report.document import count, fmt_mb, fmt_p, mean_std, pct_ci
from loralab.study.report.numbers import ALPHA, CHOICE_SPLIT, NEAR_BEST_PT, ReportData, pareto_front


def verdict(label_a: str, label_b: str, c: Comparison, family: int | None = 1) -> str:
    """One comparison of the methods in words. The wording follows the Holm-adjusted p over the
    ``family`` of the methods' tests (with the raw p beside it; ``family=None``: a comparison
    outside any family, worded on its raw p), and it states the minimum detectable effect at the family's
    level, so that "not significantly" reads as "no difference of that size was found". With one
    paired seed the methods cannot be tested: the sentence says so and gives the per-example test
    of the two runs, labelled as such."""
    d = 100 * c.diff
    paired = (
        f" (compared on the {c.paired} paired seed{'s' if c.paired > 1 else ''} only)"
        if c.paired < max(c.seeds_a, c.seeds_b)
        else ""
    )
    if not c.tested:
        m = c.models
        return (
            f"{label_a} − {label_b}: {d:+.1f} pt, not tested as a difference between the methods (one run "
            f"each: no seed-to-seed spread to test against){paired}; these two trained runs alone, over the "
            f"{c.n_examples} examples: 95% CI [{100 * m.ci_low:+.1f}, {100 * m.ci_high:+.1f}], p {_eq(m.p)}"
            + (f", Holm-adjusted p {_eq(m.p_holm)}" if family is not None else "")
        )
    sig = c.significant(ALPHA) if family is not None else c.p < ALPHA
    if sig:
        verb = "is better than" if d > 0 else "is worse than"
    else:
        verb = "is not significantly better than" if d >= 0 else "is not significantly worse than"
    text = (
        f"{label_a} {verb} {label_b}: {d:+.1f} pt, 95% CI [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}], p {_eq(c.p)}"
    )
    if family is not None:
        text += f", Holm-adjusted p {_eq(c.p_holm)}"
        if not sig and c.p < ALPHA:
            text += f" (p < {ALPHA:g} before the Holm adjustment for the report's {family} tests)"
    if not math.isnan(c.mde):
        level = f" at α = {ALPHA:g}/{family}" if family and family > 1 else ""
        text += (
            f"; with {c.paired} seeds per cell and {c.n_examples} examples it had {100 * POWER:.0f}% power "
            f"to detect a difference of ±{100 * c.mde:.1f} pt{level}"
        )
    return text + paired


def _eq(p: float) -> str:
    text = fmt_p(p)
    return text if text.startswith("<") else "= " + text


def findings(r: ReportData, analysis_result: dict | None) -> list[str]:
    out: list[str] = []
    split = r.split
    runs = r.study.runs
    done = [x for x in runs if x.run is not None]
    failed = [x for x in runs if x.status == "failed"]
    if len(done) < len(runs):
        text = f"{len(runs) - len(done)} of {len(runs)} runs are not finished"
        if failed:
            text += f" ({len(failed)} failed, e.g. {failed[0].id}: {failed[0].error})"
        out.append(text + "; the numbers below cover finished runs only.")
    scored = [s for s in r.summaries.values() if s.n and not math.isnan(s.metrics[(split, "accuracy")].mean)]
    if not scored and r.best is not None and r.metric_vs_baseline is not None:
        return out + metric_findings(r)  # a regression study: no accuracy at all
    if not scored or r.best is None:
        return out + ["No finished run yet."]
    out += constant_predictors(r)
    acc = {s.name: s.metrics[(split, "accuracy")] for s in scored}
    val = {s.name: s.metrics[(CHOICE_SPLIT, "accuracy")] for s in scored}
    best = r.summaries[r.best]
    if r.metric != "accuracy":
        chosen = r.summaries[r.best].metrics[(CHOICE_SPLIT, r.metric)]
        text = f"Best cell (chosen on {CHOICE_SPLIT} {r.metric}, {chosen.mean:.4f}): **{best.name}**, accuracy "
    else:
        text = f"Best cell (chosen on {CHOICE_SPLIT} accuracy): **{best.name}**, "
    text += mean_std(val[best.name])
    if split != CHOICE_SPLIT and best.name in acc:
        text += f"; its {split} accuracy: {mean_std(acc[best.name])}"
    if best.n > 1 and best.name in acc:
        text += f" (95% CI over seeds {pct_ci(acc[best.name])})"
    out.append(text + ".")
    if len(scored) > 1:
        top = max(scored, key=lambda s: acc[s.name].mean)
        worst = min(scored, key=lambda s: acc[s.name].mean)
        out.append(
            f"Lowest {split} accuracy: {worst.name}, {mean_std(acc[worst.name])}; "
            f"spread between cells {100 * (acc[top.name].mean - acc[worst.name].mean):.1f} pt."
        )
    family, tested = r.family, r.tested
    if len(family) > 1 or tested < len(family):
        text = (
            f"The report makes {len(family)} comparison{'s' if len(family) > 1 else ''} (each cell against the "
            f"baseline and each pair of cells that differ in one option)"
        )
        if tested < len(family):
            text += (
                f"; {len(family) - tested} of them have one paired seed, so there only the two runs are "
                "compared, not the methods"
            )
        if tested > 1:
            text += (
                f". The {tested} tests of the methods are one family: each p is shown raw and Holm-adjusted, and "
                f"the wording follows the adjusted one (family-wise {ALPHA:g}); each MDE is at the Bonferroni "
                f"level {ALPHA:g}/{tested}"
            )
        out.append(
            text + ". A test of the methods counts the spread over seeds and the sampling of the examples; the "
            "per-example tests of the trained runs (each section's second table) speak about these runs only."
        )
    for pr in r.vs_baseline:
        out.append(verdict(pr.a, f"the baseline {pr.b}", pr.comparison, tested) + ".")
    out += metric_verdicts(r)
    for pr in r.pairs:
        out.append(verdict(pr.label_a, pr.label_b, pr.comparison, tested) + pr.cells_note + ".")
    front = pareto_front(scored, CHOICE_SPLIT)
    with_params = [s for s in scored if s.trainable is not None and not math.isnan(val[s.name].mean)]
    if len(with_params) > 1:
        out.append(
            f"Pareto front ({CHOICE_SPLIT} accuracy vs trainable parameters): "
            + ", ".join(f"{s.name} ({count(s.trainable)})" for s in front)
            + "."
        )
        near = [s for s in with_params if 100 * (val[best.name].mean - val[s.name].mean) <= NEAR_BEST_PT]
        cheapest = min(near, key=lambda s: s.trainable)
        if cheapest.name != best.name and best.trainable and cheapest.trainable < best.trainable:
            ratio = best.trainable / max(cheapest.trainable, 1)
            out.append(
                f"{cheapest.name} comes within {NEAR_BEST_PT:g} pt of the best on {CHOICE_SPLIT} "
                f"({100 * (val[cheapest.name].mean - val[best.name].mean):+.1f} pt) with "
                f"{ratio:,.0f}x fewer trainable parameters ({count(cheapest.trainable)} vs "
                f"{count(best.trainable)})."
            )
    timed = [s for s in scored if not math.isnan(s.seconds_per_epoch.mean)]
    if len(timed) > 1:
        fast = min(timed, key=lambda s: s.seconds_per_epoch.mean)
        slow = max(timed, key=lambda s: s.seconds_per_epoch.mean)
        if slow.name != fast.name:
            out.append(
                f"Training speed: {fast.name} takes {fast.seconds_per_epoch.mean:.1f} s per epoch, "
                f"{slow.seconds_per_epoch.mean / fast.seconds_per_epoch.mean:.1f}x less than "
                f"{slow.name} ({slow.seconds_per_epoch.mean:.1f} s)."
            )
    mem = [s for s in scored if not math.isnan(s.peak_memory_mb.mean)]
    if len(mem) > 1:
        lo = min(mem, key=lambda s: s.peak_memory_mb.mean)
        hi = max(mem, key=lambda s: s.peak_memory_mb.mean)
        if fmt_mb(hi.peak_memory_mb.mean) != fmt_mb(lo.peak_memory_mb.mean):
            out.append(
                f"Peak memory ranges from {fmt_mb(lo.peak_memory_mb.mean)} ({lo.name}) to "
                f"{fmt_mb(hi.peak_memory_mb.mean)} ({hi.name})."
            )
    multi = [s for s in scored if s.n > 1]
    if multi:
        noisy = max(multi, key=lambda s: acc[s.name].std)
        out.append(
            f"Seed spread: the largest standard deviation over seeds is {100 * acc[noisy.name].std:.1f} pt "
            f"({noisy.name}, {noisy.n} seeds)."
        )
    else:
        out.append(
            "One seed per cell: no spread over seeds can be measured, so no comparison tests the methods; "
            "the per-example intervals and tests describe these trained runs only."
        )
    if analysis_result is not None:
        out += analysis_findings(analysis_result, best.name)
    return out


def metric_verdicts(r: ReportData) -> list[str]:
    """One sentence per cell tested against the baseline on the study's metric (not accuracy)."""
    out = []
    for name, c in (r.metric_vs_baseline or {}).items():
        where = f"{name} vs the baseline {r.study.baseline} on {r.split} {r.metric}: {c.diff:+.4f}"
        if not c.tested:
            out.append(where + " (one run in a cell: the methods are not tested).")
            continue
        ci = f"95% CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}], p = {c.p:.3g}, Holm p = {c.p_holm:.3g}"
        if c.p_holm < ALPHA:
            out.append(f"{where} ({ci}): the methods differ at the family-wise {ALPHA:g} level.")
        else:
            out.append(f"{where} ({ci}): no difference shown between the methods.")
    return out


def metric_findings(r: ReportData) -> list[str]:
    """The findings of a study whose runs have no accuracy (regression): the best cell on the metric,
    the tests against the baseline, the seed spread."""
    split, metric = r.split, r.metric
    best = r.summaries[r.best]
    chosen = best.metrics[(CHOICE_SPLIT, metric)]
    out = [f"Best cell (chosen on {CHOICE_SPLIT} {metric}): **{best.name}**, {chosen.mean:.4f} ± {chosen.std:.4f}."]
    out += metric_verdicts(r)
    multi = [s for s in r.summaries.values() if s.n > 1 and not math.isnan(s.metrics[(split, metric)].std)]
    if multi:
        noisy = max(multi, key=lambda s: s.metrics[(split, metric)].std)
        out.append(
            f"Seed spread: the largest standard deviation of {split} {metric} over seeds is "
            f"{noisy.metrics[(split, metric)].std:.4f} ({noisy.name}, {noisy.n} seeds)."
        )
    return out


def constant_predictors(r: ReportData, share: float = 0.95) -> list[str]:
    """Cells whose runs give (almost) one label to every example: they have not learned the task."""
    out = []
    for name, p in r.preds.items():
        preds = [row["prediction"] for rows in p.rows.values() for row in rows]
        label, n_top = Counter(preds).most_common(1)[0]
        if n_top / len(preds) >= share:
            names = r.study.cell(name).done[0].run.label_names
            shown = names[label] if 0 <= label < len(names) else str(label)
            out.append(
                f"{name} predicts {shown!r} for {100 * n_top / len(preds):.1f}% of the {r.split} examples "
                f"(seeds pooled): a near-constant classifier, not a trained one."
            )
    return out


def analysis_findings(res: dict, cell: str) -> list[str]:
    out = []
    cal = res["calibration"]
    gap = 100 * (cal["mean_confidence"] - res["accuracy"])
    kind = "over-confident" if gap > 0 else "under-confident"
    out.append(
        f"Calibration of {cell}: ECE {cal['ece']:.3f}; mean confidence {100 * cal['mean_confidence']:.1f}% "
        f"vs accuracy {100 * res['accuracy']:.1f}% ({kind} by {abs(gap):.1f} pt)."
    )
    buckets = [b for b in res["length"] if b["n"] >= 20]
    if len(buckets) > 1:
        worst = min(buckets, key=lambda b: b["accuracy"])
        best = max(buckets, key=lambda b: b["accuracy"])
        out.append(
            f"By length, {cell} is weakest on {worst['name']}-word sentences ({100 * worst['accuracy']:.1f}%, "
            f"n = {worst['n']}) and strongest on {best['name']} ({100 * best['accuracy']:.1f}%, n = {best['n']})."
        )
    for key, what in (("negation", "a negation"), ("contrast", "a contrast word")):
        with_, without = res[key]
        if with_["n"] and without["n"]:
            d = 100 * (with_["accuracy"] - without["accuracy"])
            out.append(
                f"Sentences with {what} ({with_['n']}) are {abs(d):.1f} pt "
                f"{'less' if d < 0 else 'more'} accurate than those without ({100 * with_['accuracy']:.1f}% vs "
                f"{100 * without['accuracy']:.1f}%) for {cell}; a constant guess of each group's majority "
                f"label would get {100 * with_['majority']:.1f}% vs {100 * without['majority']:.1f}%."
            )
    return out
