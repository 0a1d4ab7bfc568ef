"""Read a study folder back (``study.json`` + the run directories) and summarise each cell.

Everything here reads files written by ``loralab study run`` and ``loralab train``; nothing is
recomputed from a model. Runs that are not complete are listed, never guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loralab.errors import LoralabError
from loralab.evaluation.metrics import metric_value
from loralab.evaluation.stats import Interval, t_interval
from loralab.experiments.folder import StudyError, StudyFolder
from loralab.training.run import Run, load_run

SPLITS = ("validation", "test")
METRICS = ("accuracy", "f1", "loss")
#: The range each metric can take: t-intervals are clipped to it (with 2 seeds, t = 12.7).
METRIC_RANGE = {
    "accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "f1_macro": (0.0, 1.0),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "mcc": (-1.0, 1.0),
    "pearson": (-1.0, 1.0),
    "spearman": (-1.0, 1.0),
    "mse": (0.0, math.inf),
    "loss": (0.0, math.inf),
}


@dataclass
class RunData:
    id: str
    cell: str
    seed: int
    run: Run | None = None  # None unless complete
    error: str | None = None  # from failures.json, or why it could not be read

    @property
    def status(self) -> str:
        return "done" if self.run is not None else ("failed" if self.error else "missing")


@dataclass
class CellData:
    name: str
    options: dict[str, Any]  # as written in the study (grid values + cell options)
    config: dict[str, Any]  # resolved flat options (no seed)
    runs: list[RunData] = field(default_factory=list)

    @property
    def done(self) -> list[RunData]:
        return [r for r in self.runs if r.run is not None]

    @property
    def method(self) -> str:
        return str(self.config.get("method"))


@dataclass
class CellSummary:
    name: str
    method: str
    n_planned: int
    seeds: list[int]
    metrics: dict[tuple[str, str], Interval]  # (split, metric) -> over seeds
    trainable: int | None
    total: int | None
    trainable_percent: float | None
    seconds_per_epoch: Interval
    train_seconds: Interval
    peak_memory_mb: Interval
    train_examples: int | None

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class StudyData:
    root: Path
    name: str
    description: str
    baseline: str
    cells: list[CellData]
    meta: dict

    def cell(self, name: str) -> CellData:
        return next(c for c in self.cells if c.name == name)

    @property
    def runs(self) -> list[RunData]:
        return [r for c in self.cells for r in c.runs]

    @property
    def metric(self) -> str:
        """The metric the study chooses on: its runs' selection metric (``--metric``, the ``--glue``
        preset's, the task's default), or accuracy when the runs do not agree."""
        names = {r.run.results.get("metric") or "accuracy" for r in self.runs if r.run is not None}
        return names.pop() if len(names) == 1 else "accuracy"

    @property
    def split(self) -> str:
        """The split comparisons use: test if every finished run has test results."""
        done = [r.run for r in self.runs if r.run is not None]
        return "test" if done and all(run.results.get("test") for run in done) else "validation"


def load_study(root: str | Path) -> StudyData:
    folder = StudyFolder(Path(root))
    meta = folder.read_study()
    failures = folder.read_failures()
    cells = {c["name"]: CellData(c["name"], c.get("options", {}), c.get("config", {})) for c in meta["cells"]}
    for r in meta["runs"]:
        data = RunData(r["id"], r["cell"], int(r["seed"]))
        if folder.is_complete(r["id"]):
            try:
                data.run = load_run(folder.root / r["dir"])
            except LoralabError as e:
                data.error = f"unreadable: {e}"
        elif r["id"] in failures:
            data.error = failures[r["id"]].get("error") or "failed"
        cells[r["cell"]].runs.append(data)
    if meta.get("baseline") not in cells:
        raise StudyError(f"{root}/study.json: baseline {meta.get('baseline')!r} is not a cell")
    return StudyData(
        folder.root,
        meta["name"],
        meta.get("spec", {}).get("description") or "",
        meta["baseline"],
        list(cells.values()),
        meta,
    )


def summarize(cell: CellData, extra: tuple[str, ...] = ()) -> CellSummary:
    """The cell's metrics over seeds (:data:`METRICS` and the ``extra`` ones, e.g. the study's
    selection metric), its size and its cost."""
    runs = [r.run for r in cell.done]
    metrics = {}
    for split in SPLITS:
        for metric in dict.fromkeys((*METRICS, *extra)):
            values = [metric_value(run.results[split], metric) for run in runs if run.results.get(split)]
            values = [v for v in values if not math.isnan(v)]
            metrics[(split, metric)] = t_interval(values).clip(*METRIC_RANGE.get(metric, (-math.inf, math.inf)))
    first = runs[0].results if runs else None
    params = first["params"] if first else {}
    spe = [run.results["timing"].get("seconds_per_epoch") for run in runs]
    train_s = [run.results["timing"].get("train_seconds") for run in runs]
    mem = [run.results.get("memory", {}).get("peak_bytes") for run in runs]
    return CellSummary(
        name=cell.name,
        method=cell.method,
        n_planned=len(cell.runs),
        seeds=[r.seed for r in cell.done],
        metrics=metrics,
        trainable=params.get("trainable"),
        total=params.get("total"),
        trainable_percent=params.get("trainable_percent"),
        seconds_per_epoch=t_interval([v for v in spe if v is not None]),
        train_seconds=t_interval([v for v in train_s if v is not None]),
        peak_memory_mb=t_interval([v / 2**20 for v in mem if v is not None]),
        train_examples=first["data"]["train_examples"] if first else None,
    )


@dataclass
class Predictions:
    """Per-seed correctness of one cell on one split, with the examples they refer to."""

    correct: dict[int, np.ndarray]
    texts: list[str]
    labels: list[int]
    rows: dict[int, list[dict]]


def predictions(cell: CellData, split: str) -> Predictions | None:
    """The cell's predictions on ``split``; None if no finished run has them. Raises
    :class:`StudyError` if its runs were scored on different examples."""
    correct, rows = {}, {}
    texts: list[str] | None = None
    labels: list[int] | None = None
    for r in cell.done:
        path = r.run.run_dir / f"predictions_{split}.csv"
        if not path.is_file():
            continue
        preds = r.run.predictions(split)
        if preds and (preds[0]["confidence"] is None or preds[0]["label"] is None):
            return None  # regression scores or a file without labels: no per-example correctness to compare
        t, y = [p["text"] for p in preds], [p["label"] for p in preds]
        if texts is None:
            texts, labels = t, y
        elif t != texts or y != labels:
            raise StudyError(f"cell {cell.name!r}: its runs were scored on different {split} examples")
        correct[r.seed] = np.array([p["prediction"] == p["label"] for p in preds], dtype=bool)
        rows[r.seed] = preds
    if not correct:
        return None
    return Predictions(correct, texts or [], labels or [], rows)


def scored_predictions(cell: CellData, split: str) -> tuple[list, dict[int, list]] | None:
    """``(labels, {seed: per-example predictions})`` of the cell's finished runs on ``split``: label
    ids for a classifier, numbers for a regression run; None if no run has labelled predictions.
    What :mod:`loralab.evaluation.metric_test` compares for metrics that are not accuracy."""
    labels, preds = None, {}
    for r in cell.done:
        path = r.run.run_dir / f"predictions_{split}.csv"
        if not path.is_file():
            continue
        rows = r.run.predictions(split)
        if not rows or rows[0]["label"] is None:
            return None
        y = [p["label"] for p in rows]
        if labels is None:
            labels = y
        elif y != labels:
            raise StudyError(f"cell {cell.name!r}: its runs were scored on different {split} examples")
        preds[r.seed] = [p["prediction"] for p in rows]
    return (labels, preds) if preds else None


def epoch_curves(cell: CellData) -> dict[int, list[tuple[float, float]]]:
    """Validation accuracy per epoch, per seed, from each run's ``metrics.csv``."""
    out = {}
    for r in cell.done:
        try:
            rows = r.run.metrics()
        except OSError:
            continue
        pts = [
            (row["epoch"], row["val_accuracy"])
            for row in rows
            if row.get("kind") == "epoch" and row.get("val_accuracy") is not None
        ]
        if pts:
            out[r.seed] = pts
    return out


def mean_curve(curves: dict[int, list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """Mean over seeds at each epoch that every seed reached."""
    if not curves:
        return []
    epochs = sorted(set.intersection(*({e for e, _ in pts} for pts in curves.values())))
    return [(e, float(np.mean([dict(pts)[e] for pts in curves.values()]))) for e in epochs]


#: What a run's numbers depend on besides its options: a study resumed after an upgrade can mix them.
VERSION_KEYS = ("loralab", "torch", "transformers", "peft", "device")


def mixed_versions(study: StudyData) -> list[str]:
    """One line per entry of :data:`VERSION_KEYS` whose value (from each finished run's
    ``config.json``) differs between runs, e.g. ``loralab 0.1.0 (3 runs), 0.2.0 (6 runs)``."""
    out = []
    for key in VERSION_KEYS:
        counts: dict[str, int] = {}
        for r in study.runs:
            if r.run is not None:
                value = str((r.run.meta.get("versions") or {}).get(key, "unrecorded"))
                counts[value] = counts.get(value, 0) + 1
        if len(counts) > 1:
            out.append(f"{key} " + ", ".join(_tally(sorted(counts.items()))))
    return out


def _tally(counts: list[tuple[str, int]]) -> list[str]:
    """``value (n runs)`` for each (value, count)."""
    return [f"{v} ({n} run{'s' if n > 1 else ''})" for v, n in counts]


def machines(study: StudyData) -> str:
    """Where and how the finished runs ran, from each run's ``config.json``, e.g. ``AMD EPYC, 2 CPUs,
    2 torch threads, bf16 (6 runs); unrecorded (3 runs)``: timings are comparable within one machine
    and precision (``--precision auto`` resolves per machine)."""
    counts: dict[str, int] = {}
    for r in study.runs:
        if r.run is None:
            continue
        v = r.run.meta.get("versions") or {}
        gpu = v.get("device") if v.get("device") not in (None, "", "cpu") else None
        if "cpu" not in v:
            key = "unrecorded"
        else:
            key = f"{v['cpu']}, {v.get('cpu_count', '?')} CPUs, {v.get('torch_threads', '?')} torch threads"
            key += f", GPU {gpu}" if gpu else ""
            key += f", {precision}" if (precision := _precision(r.run.meta)) else ""
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(_tally(sorted(counts.items(), key=lambda kv: -kv[1])))


def _precision(meta: dict) -> str | None:
    """The precision a run trained in: what ``--precision`` resolved to, or for a run written before
    ``config.json`` recorded that, the precision it asked for unless it asked for ``auto``."""
    asked = ((meta.get("config") or {}).get("train") or {}).get("precision")
    found = meta.get("precision") or asked
    return found if found not in (None, "", "auto") else None


def varying_options(cells: list[CellData]) -> list[str]:
    """Options whose resolved value differs between cells, in option order."""
    keys: list[str] = []
    for c in cells:
        keys += [k for k in c.config if k not in keys]
    return [k for k in keys if len({_key(c.config.get(k)) for c in cells}) > 1]


def _key(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value)
