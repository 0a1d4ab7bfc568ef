"""``loralab tune report DIR``: the search's best trial, every trial, its cost and Optuna's plots
(history, importances, metric against each parameter) as report.md + report.html; with
``--final-seeds K`` the best setting retrained with K seeds (a one-cell study) and its validation
and test accuracy with 95 % t-intervals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from loralab.errors import ConfigError
from loralab.experiments.search import MANAGED_OPTIONS, TuneSpec
from loralab.files import atomic_write_bytes, atomic_write_text, read_json
from loralab.plots.search import search_views
from loralab.study.compare import FINAL_DIR
from loralab.tune import require_optuna
from loralab.tune.runner import STORAGE_ENV, require_budget_file
from loralab.tune.storage import ATTR_RUN_DIR, ATTR_SURPLUS, open_storage, open_study

PLOTS_DIR = "plots"


def open_search(out_dir: Path, storage: str | None = None):
    """The spec and the Optuna study of a search folder."""
    import os

    meta = require_budget_file(out_dir)
    spec = TuneSpec.from_dict(meta["spec"], source=meta.get("source", str(out_dir)))
    url = storage or os.environ.get(STORAGE_ENV) or meta["storage"]
    if "***" in url:
        raise ConfigError(f"{out_dir}: its storage URL has a password; pass it with --storage or ${STORAGE_ENV}")
    return meta, spec, open_study(spec, open_storage(url, heartbeat=None, grace=None), create=False)


def trial_rows(spec: TuneSpec, study, out_dir: Path) -> tuple[list[str], list[list[str]]]:
    names = [p.name for p in spec.params]
    headers = ["trial", "state", f"validation {spec.metric}", *names, "epochs", "seconds", "run directory"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(ATTR_SURPLUS):
            continue
        value = (
            t.value
            if t.value is not None
            else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        )
        run_dir = t.user_attrs.get(ATTR_RUN_DIR, "")
        if run_dir and Path(run_dir).is_relative_to(out_dir):
            run_dir = str(Path(run_dir).relative_to(out_dir))
        rows.append(
            [
                str(t.number),
                t.state.name.lower(),
                "" if value is None else f"{value:.4f}",
                *[_fmt(t.params.get(n)) for n in names],
                str(t.user_attrs.get("epochs", "")),
                str(t.user_attrs.get("seconds", "")),
                f"`{run_dir}`" if run_dir else "",
            ]
        )
    return headers, rows


def final_plan(spec: TuneSpec, params: dict[str, Any], root: Path, seeds: int):
    """A one-cell study: the best setting with ``final`` applied, seeds 1..K."""
    from loralab.config import RunConfig
    from loralab.study.plan import make_plan
    from loralab.study.spec import StudySpec

    flat = spec.trial_config(params).override(spec.final).to_flat()
    defaults = RunConfig().to_flat()
    base = {k: v for k, v in flat.items() if v != defaults[k] and k not in MANAGED_OPTIONS}
    study = StudySpec(
        name=f"{spec.name}-final",
        base=base,
        cells=[{"name": "tuned"}],
        seeds=list(range(1, seeds + 1)),
        source=f"{spec.source} (final)",
        description=f"best setting of search {spec.name}, retrained with {seeds} seeds",
    )
    return make_plan(study, root)


def run_final(
    spec: TuneSpec, params: dict[str, Any], out_dir: Path, seeds: int, threads: int | None, echo: Callable[[str], None]
) -> dict:
    """Train (resumably) the final runs and return their per-split t-intervals."""
    from loralab.evaluation.stats import t_interval
    from loralab.study.runner import run_study

    plan = final_plan(spec, params, out_dir / FINAL_DIR, seeds)
    outcome = run_study(plan, jobs=1, threads=threads, echo=echo)
    files = [Path(r.config.train.output_dir, "results.json") for r in plan.runs]
    results = [read_json(f) for f in files if f.is_file()]
    out = {
        "runs": len(results),
        "failed": len(outcome.failed),
        "folder": str(plan.root),
        "command": plan.runs[0].command(),
    }
    for split in ("validation", "test"):
        values = [r[split]["accuracy"] for r in results if r.get(split)]
        out[split] = t_interval(values).clip(0.0, 1.0) if values else None
    return out


def build(
    out_dir: str | Path,
    storage: str | None = None,
    final_seeds: int = 0,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Path]:
    from loralab.study.report.document import Doc

    optuna = require_optuna()
    TrialState = optuna.trial.TrialState
    out_dir = Path(out_dir).resolve()
    meta, spec, study = open_search(out_dir, storage)
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(ATTR_SURPLUS)]
    count = {
        s: sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    doc = Doc()
    doc.h(1, f"Search {spec.name}")
    if spec.description:
        doc.p(spec.description)
    sampler, _ = spec.sampler_options()
    pruner, _ = spec.pruner_options()
    seconds = sum(float(t.user_attrs.get("seconds", 0)) for t in trials)
    doc.ul(
        [
            f"objective: validation {spec.metric} ({spec.direction}); the test split is never loaded by a trial",
            f"sampler {sampler}, pruner {pruner}; budget {meta['trials']} finished trials",
            f"trials: {count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
            f"{count[TrialState.FAIL]} failed, {count[TrialState.RUNNING]} running",
            f"search cost: {seconds / 60:.1f} min of trial time (sum over trials, all workers)",
            f"fixed options (`base`): {_options(spec.base)}",
        ]
    )
    doc.h(2, "Space")
    doc.table(["option", "distribution"], [[f"`{p.name}`", p.describe()] for p in spec.params])
    final = None
    if complete:
        best = study.best_trial
        doc.h(2, "Best trial")
        run_dir = Path(best.user_attrs.get(ATTR_RUN_DIR, ""))
        shown = run_dir.relative_to(out_dir) if run_dir.is_relative_to(out_dir) else run_dir
        doc.p(f"Trial {best.number}: validation {spec.metric} **{best.value:.4f}**, run `{shown}`.")
        doc.table(["option", "value"], [[f"`{k}`", _fmt(v)] for k, v in best.params.items()])
        from loralab.study.plan import train_flags

        doc.p("Equivalent command: `loralab train " + " ".join(train_flags(spec.trial_config(best.params))) + "`")
        if final_seeds:
            final = run_final(spec, best.params, out_dir, final_seeds, threads, echo)
    else:
        doc.p("No trial has completed yet.")
    if final is not None:
        doc.h(2, f"Best setting retrained with {final_seeds} seeds")
        doc.p(
            f"Options `final` applied: {_options(spec.final)}; "
            f"{final['runs']} of {final_seeds} runs complete; study folder `{final['folder']}` "
            f"(`loralab study report` it for the full statistics). Command of seed 1: `{' '.join(final['command'])}`."
        )
        doc.table(
            ["split", "runs", "accuracy mean ± sd", "95% t-interval"],
            [
                [
                    split,
                    str(iv.n),
                    f"{100 * iv.mean:.1f}% ± {100 * iv.std:.1f}",
                    f"[{100 * iv.low:.1f}, {100 * iv.high:.1f}]",
                ]
                for split in ("validation", "test")
                if (iv := final[split]) is not None
            ],
        )
    doc.h(2, "All trials")
    doc.table(*trial_rows(spec, study, out_dir))
    images = search_views(study, pruned=pruner != "none") if complete else {}
    if images:
        doc.h(2, "Plots")
        for name, (png, caption) in images.items():
            doc.img(name, png, caption)
    plots_dir = out_dir / PLOTS_DIR
    for name, png in doc.images.items():
        atomic_write_bytes(plots_dir / name, png)
    for stale in plots_dir.glob("*.png") if plots_dir.is_dir() else []:  # views an earlier report had
        if stale.name not in doc.images:
            stale.unlink()
    paths = {"md": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write_text(paths["md"], doc.markdown())
    atomic_write_text(paths["html"], doc.html(f"loralab search {spec.name}"))
    return paths


def _options(options: dict[str, Any]) -> str:
    """Run options as `key=value` (an unset option as null), or "none"."""
    return ", ".join(f"`{k}={_fmt(v, 'null')}`" for k, v in options.items()) or "none"


def _fmt(value: Any, none: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return none if value is None else str(value)
