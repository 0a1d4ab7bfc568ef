"""Error analysis over a run's saved predictions: the measures, and the tables they are shown in
(``loralab analyze`` itself, with its files, is :mod:`loralab.evaluation.analysis_files`).

Every function below is a pure function of *prediction rows*: dicts with ``text``, ``label``,
``prediction`` and ``confidence`` (the top softmax probability), as stored in a run's
``predictions_<split>.csv``. What is measured:

* accuracy by sentence length in words (≤5, 6–15, 16–30, >30). A word is a whitespace token
  that contains a letter or a digit, so PTB punctuation tokens (``.``, ``--``, ````) don't count;
* accuracy with / without a negation: a token ``not``, ``no``, ``never``, ``nothing``,
  ``cannot``, or ``n't`` (SST-2 is PTB-tokenized: "do n't"), or a token ending in ``n't``
  (untokenized text: "don't");
* accuracy with / without a contrast word: ``but``, ``yet``, ``though``, ``although``,
  ``however`` (a heuristic: "not yet" counts too);
* with each bucket, the share of its most frequent true label: the accuracy of a constant
  guess, which a bucket's accuracy should be read against (negated sentences are mostly
  negative, so a model that always says "positive" looks bad on them for that reason alone);
* calibration: accuracy and mean confidence in 10 equal-width confidence bins over [0, 1], the
  expected calibration error ECE = Σ_bins (n_bin / n) · |accuracy_bin − confidence_bin|
  (Guo et al., 2017), and a reliability diagram;
* the most confident mistakes;
* with a second run scored on the same examples: how many each gets right that the other gets
  wrong, with examples.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from loralab.errors import LoralabError

LENGTH_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("≤5", 0, 5),
    ("6–15", 6, 15),
    ("16–30", 16, 30),
    (">30", 31, None),
)
NEGATION_WORDS = frozenset({"not", "no", "never", "nothing", "cannot", "n't"})
CONTRAST_WORDS = frozenset({"but", "yet", "though", "although", "however"})
N_BINS = 10
TOP_K = 10
_STRIP = ".,;:!?\"()[]{}`'-"


# ---------------------------------------------------------------------------------------------
# Features of a sentence
# ---------------------------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Lower-cased whitespace tokens with surrounding punctuation removed (empty ones dropped)."""
    out = []
    for raw in text.lower().split():
        tok = raw if raw == "n't" else raw.strip(_STRIP)
        if tok:
            out.append(tok)
    return out


def n_words(text: str) -> int:
    return sum(1 for t in tokens(text) if any(ch.isalnum() for ch in t))


def length_bucket(text: str) -> str:
    n = n_words(text)
    for name, low, high in LENGTH_BUCKETS:
        if n >= low and (high is None or n <= high):
            return name
    return LENGTH_BUCKETS[-1][0]


def has_negation(text: str) -> bool:
    return any(t in NEGATION_WORDS or t.endswith("n't") for t in tokens(text))


def has_contrast(text: str) -> bool:
    return any(t in CONTRAST_WORDS for t in tokens(text))


# ---------------------------------------------------------------------------------------------
# Measures over prediction rows
# ---------------------------------------------------------------------------------------------


def is_correct(row: dict) -> bool:
    return int(row["prediction"]) == int(row["label"])


@dataclass
class Bucket:
    name: str
    n: int
    correct: int
    error_share: float  # fraction of all the errors that fall in this bucket
    majority: float  # share of the bucket's most frequent true label: what a constant guess gets

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else math.nan


def accuracy_by(rows: Sequence[dict], key: Callable[[str], str], order: Sequence[str]) -> list[Bucket]:
    """Accuracy per bucket of ``key(text)``, buckets in ``order`` (empty ones included)."""
    errors = sum(not is_correct(r) for r in rows)
    out = []
    for name in order:
        members = [r for r in rows if key(r["text"]) == name]
        correct = sum(is_correct(r) for r in members)
        counts = Counter(int(r["label"]) for r in members)
        majority = max(counts.values()) / len(members) if members else math.nan
        out.append(Bucket(name, len(members), correct, (len(members) - correct) / errors if errors else 0.0, majority))
    return out


def by_length(rows: Sequence[dict]) -> list[Bucket]:
    return accuracy_by(rows, length_bucket, [b[0] for b in LENGTH_BUCKETS])


def by_negation(rows: Sequence[dict]) -> list[Bucket]:
    return accuracy_by(
        rows,
        lambda t: "with negation" if has_negation(t) else "without negation",
        ["with negation", "without negation"],
    )


def by_contrast(rows: Sequence[dict]) -> list[Bucket]:
    return accuracy_by(
        rows,
        lambda t: "with contrast word" if has_contrast(t) else "without contrast word",
        ["with contrast word", "without contrast word"],
    )


@dataclass
class CalibrationBin:
    low: float
    high: float
    n: int
    accuracy: float
    confidence: float


@dataclass
class Calibration:
    bins: list[CalibrationBin]  # non-empty bins only
    ece: float
    accuracy: float
    mean_confidence: float
    n_bins: int


def calibration(rows: Sequence[dict], n_bins: int = N_BINS) -> Calibration:
    """Equal-width confidence bins over [0, 1] (bin i holds (i/n, (i+1)/n], the first also 0)."""
    groups: list[list[dict]] = [[] for _ in range(n_bins)]
    for r in rows:
        c = float(r["confidence"])
        groups[min(n_bins - 1, max(0, math.ceil(c * n_bins) - 1))].append(r)
    n = len(rows)
    bins, ece = [], 0.0
    for i, g in enumerate(groups):
        if not g:
            continue
        acc = sum(is_correct(r) for r in g) / len(g)
        conf = sum(float(r["confidence"]) for r in g) / len(g)
        bins.append(CalibrationBin(i / n_bins, (i + 1) / n_bins, len(g), acc, conf))
        ece += len(g) / n * abs(acc - conf)
    accuracy = sum(is_correct(r) for r in rows) / n if n else math.nan
    mean_conf = sum(float(r["confidence"]) for r in rows) / n if n else math.nan
    return Calibration(bins, ece if n else math.nan, accuracy, mean_conf, n_bins)


def confident_mistakes(rows: Sequence[dict], k: int = TOP_K) -> list[dict]:
    """The ``k`` wrong predictions with the highest confidence (ties: file order)."""
    wrong = [(i, r) for i, r in enumerate(rows) if not is_correct(r)]
    wrong.sort(key=lambda ir: (-float(ir[1]["confidence"]), ir[0]))
    return [{"index": i, **r} for i, r in wrong[:k]]


@dataclass
class Disagreement:
    """Run A against run B on the same examples."""

    n: int
    both_right: int
    both_wrong: int
    only_a: int  # A right, B wrong
    only_b: int  # A wrong, B right
    examples_only_a: list[dict]  # most confident wrong predictions of B among only_a
    examples_only_b: list[dict]


def disagreements(rows_a: Sequence[dict], rows_b: Sequence[dict], k: int = TOP_K) -> Disagreement:
    if len(rows_a) != len(rows_b) or any(
        a["text"] != b["text"] or int(a["label"]) != int(b["label"]) for a, b in zip(rows_a, rows_b, strict=False)
    ):
        raise LoralabError("analyze --compare: the two runs were scored on different examples")
    only_a, only_b, both_right, both_wrong = [], [], 0, 0
    for i, (a, b) in enumerate(zip(rows_a, rows_b, strict=True)):
        ra, rb = is_correct(a), is_correct(b)
        both_right += ra and rb
        both_wrong += not ra and not rb
        if ra and not rb:
            only_a.append(_pair(i, a, b))
        elif rb and not ra:
            only_b.append(_pair(i, a, b))
    only_a.sort(key=lambda e: (-e["confidence_b"], e["index"]))
    only_b.sort(key=lambda e: (-e["confidence_a"], e["index"]))
    return Disagreement(len(rows_a), both_right, both_wrong, len(only_a), len(only_b), only_a[:k], only_b[:k])


def _pair(i: int, a: dict, b: dict) -> dict:
    return {
        "index": i,
        "text": a["text"],
        "label": int(a["label"]),
        "prediction_a": int(a["prediction"]),
        "confidence_a": float(a["confidence"]),
        "prediction_b": int(b["prediction"]),
        "confidence_b": float(b["confidence"]),
    }


def analyze(rows: Sequence[dict], k: int = TOP_K, compare_rows: Sequence[dict] | None = None) -> dict:
    """Everything above for one run (and a comparison), as a JSON-ready dict."""
    if not rows:
        raise LoralabError("analyze: no predictions")
    cal = calibration(rows)
    out = {
        "examples": len(rows),
        "accuracy": cal.accuracy,
        "length": [_bucket(b) for b in by_length(rows)],
        "negation": [_bucket(b) for b in by_negation(rows)],
        "contrast": [_bucket(b) for b in by_contrast(rows)],
        "calibration": {
            "ece": cal.ece,
            "n_bins": cal.n_bins,
            "mean_confidence": cal.mean_confidence,
            "bins": [asdict(b) for b in cal.bins],
        },
        "confident_mistakes": confident_mistakes(rows, k),
    }
    if compare_rows is not None:
        out["compare"] = asdict(disagreements(rows, compare_rows, k))
    return out


def _bucket(b: Bucket) -> dict:
    return {
        "name": b.name,
        "n": b.n,
        "correct": b.correct,
        "accuracy": b.accuracy,
        "error_share": b.error_share,
        "majority": b.majority,
    }


# ---------------------------------------------------------------------------------------------
# Tables of text (analysis.md and the study report)
# ---------------------------------------------------------------------------------------------


def tables(
    result: dict, label_names: Sequence[str] | None = None, name_a: str = "A", name_b: str = "B", k: int = 5
) -> list[tuple[str, list[str], list[list[str]]]]:
    """The analysis as ``(title, headers, rows)`` tables of text (for analysis.md and the report)."""

    def label(i: int) -> str:
        return label_names[i] if label_names and 0 <= i < len(label_names) else str(i)

    def bucket_rows(buckets: list[dict]) -> list[list[str]]:
        return [
            [b["name"], str(b["n"]), pct(b["accuracy"]), pct(b["majority"]), pct(b["error_share"])] for b in buckets
        ]

    head = ["bucket", "n", "accuracy", "majority label", "share of errors"]
    out = [
        ("Accuracy by sentence length (words)", head, bucket_rows(result["length"])),
        ("Accuracy with and without negation", head, bucket_rows(result["negation"])),
        ("Accuracy with and without a contrast word", head, bucket_rows(result["contrast"])),
    ]
    cal = result["calibration"]
    out.append(
        (
            f"Calibration ({cal['n_bins']} equal-width bins; ECE {cal['ece']:.4f})",
            ["confidence bin", "n", "accuracy", "mean confidence", "gap"],
            [
                [
                    f"({b['low']:.1f}, {b['high']:.1f}]",
                    str(b["n"]),
                    pct(b["accuracy"]),
                    pct(b["confidence"]),
                    f"{100 * (b['accuracy'] - b['confidence']):+.1f} pt",
                ]
                for b in cal["bins"]
            ],
        )
    )
    out.append(
        (
            "Most confident mistakes",
            ["confidence", "label", "predicted", "text"],
            [
                [f"{m['confidence']:.3f}", label(m["label"]), label(m["prediction"]), m["text"].strip()]
                for m in result["confident_mistakes"][:k]
            ],
        )
    )
    if "compare" in result:
        c = result["compare"]
        out.append(
            (
                f"{name_a} against {name_b} ({c['n']} examples)",
                ["", "count", "share"],
                [
                    ["both right", str(c["both_right"]), pct(c["both_right"] / c["n"])],
                    [f"only {name_a} right", str(c["only_a"]), pct(c["only_a"] / c["n"])],
                    [f"only {name_b} right", str(c["only_b"]), pct(c["only_b"] / c["n"])],
                    ["both wrong", str(c["both_wrong"]), pct(c["both_wrong"] / c["n"])],
                ],
            )
        )
        for key, right, wrong in (("examples_only_a", name_a, name_b), ("examples_only_b", name_b, name_a)):
            conf_key = "confidence_b" if key.endswith("_a") else "confidence_a"
            out.append(
                (
                    f"{right} right, {wrong} wrong (most confident {wrong} errors)",
                    ["label", f"{wrong} confidence", "text"],
                    [[label(e["label"]), f"{e[conf_key]:.3f}", e["text"].strip()] for e in c[key][:k]],
                )
            )
    return out


def pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"
