"""Many LoRA adapters over one backbone: loading them from run directories and scoring mixed batches.

The backbone is loaded once; each adapter adds only its low-rank matrices and its own
classification head (with its own label names, so heads of different widths can share a batch).
One forward pass serves a batch whose rows belong to different adapters: the rows are grouped by
adapter, every adapted linear layer computes ``W x`` for the whole batch once and adds each
adapter's ``(alpha/r) B A x`` to its own contiguous slice of rows, and each head scores its slice.

Used by ``loralab serve`` with several runs and by ``loralab predict --run A --run B``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from loralab.errors import ConfigError, LoralabError
from loralab.inference.multilora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    MultiHead,
    MultiLoRALinear,
    Routing,
    head_copy,
    load_adapter_tensors,
)


class UnknownAdapterError(LoralabError):
    """A request named an adapter that is not loaded."""


# ---------------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------------


@dataclass
class Adapter:
    """One served adapter: where it came from and what it answers with."""

    name: str
    run_dir: Path
    uid: int
    label_names: list[str]
    max_length: int
    info: dict  # run metadata shown by GET /adapters (method, rank, accuracies, params...)
    layers: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(repr=False, default_factory=dict)
    heads: dict[str, nn.Module] = field(repr=False, default_factory=dict)


def run_metadata(run_dir: Path, meta: dict, results: dict) -> dict:
    """What ``GET /adapters`` shows about a run."""
    method = meta["config"]["method"]
    acc = {split: (results.get(split) or {}).get("accuracy") for split in ("validation", "test")}
    return {
        "run": str(run_dir),
        "base_model": meta["config"]["model"]["model"],
        "method": method["method"],
        "impl": method.get("impl"),
        "rank": method.get("rank"),
        "alpha": method.get("alpha"),
        "target_modules": method.get("target_modules"),
        "layers": method.get("layers"),
        "label_names": list(meta["label_names"]),
        "validation_accuracy": acc["validation"],
        "test_accuracy": acc["test"],
        "trainable_params": (results.get("params") or {}).get("trainable"),
    }


def read_lora_run(run_dir: str | Path) -> tuple[Path, dict, dict]:
    """``(run_dir, config.json, results.json)`` of a complete LoRA run with safetensors weights."""
    from loralab.files import read_json
    from loralab.runs.layout import ADAPTER_DIR, CONFIG_FILE, RESULTS_FILE, check_run_dir

    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    meta = read_json(run_dir / CONFIG_FILE)
    method = meta["config"]["method"]["method"]
    if method != "lora":
        raise AdapterError(f"{run_dir}: a {method} run, not LoRA: only LoRA runs share a backbone as adapters")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (run_dir / ADAPTER_DIR / name).is_file():
            raise AdapterError(f"{run_dir / ADAPTER_DIR / name}: not found (adapters are read from safetensors only)")
    return run_dir, meta, read_json(run_dir / RESULTS_FILE)


# ---------------------------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------------------------


class MultiAdapterPredictor:
    """Scores ``(adapter, text)`` items with many adapters over one backbone.

    ``mixed=True`` (default) scores items of different adapters in the same forward pass;
    ``mixed=False`` runs one forward pass per adapter (the comparison in bench/serve_adapters.py).
    Adding and removing adapters is safe while another thread predicts: model changes happen
    under one lock, and ``adapters`` is replaced, never changed in place, so the event loop reads
    it without waiting for a batch.
    """

    def __init__(
        self,
        backbone: str,
        model: nn.Module,
        tokenizer,
        device: torch.device,
        batch_size: int = 32,
        precision: str = "fp32",
        mixed: bool = True,
    ) -> None:
        from loralab.models.backbones import head_module_names

        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision must be fp32 or bf16, got {precision!r}")
        self.backbone = backbone
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.compiled = False
        self.mixed = mixed
        self.routing = Routing()
        self.head_names = head_module_names(model)
        self.heads = {}
        for name in self.head_names:
            parent, _, child = name.rpartition(".")
            wrapper = MultiHead(self.model.get_submodule(name), self.routing)
            setattr(self.model.get_submodule(parent) if parent else self.model, child, wrapper)
            self.heads[name] = wrapper
        self.adapters: dict[str, Adapter] = {}
        self._next_uid = 0
        self._lock = threading.RLock()

    @classmethod
    def from_runs(
        cls,
        run_dirs: Sequence[str | Path],
        names: Sequence[str] | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        precision: str = "fp32",
        mixed: bool = True,
    ) -> MultiAdapterPredictor:
        """Load the backbone of the first run once, then every run as an adapter."""
        from loralab.models.backbones import build_model, saved_tokenizer
        from loralab.runs.layout import TOKENIZER_DIR
        from loralab.runtime import pick_device

        if not run_dirs:
            raise AdapterError("no LoRA runs to serve")
        runs = [read_lora_run(d) for d in run_dirs]
        names = list(names) if names is not None else [adapter_name(d) for d, _, _ in runs]
        seen: dict[str, Path] = {}
        for (d, _, _), name in zip(runs, names, strict=True):
            if name in seen:
                raise AdapterError(
                    f"{d}: adapter name {name!r} is already taken by {seen[name]} "
                    "(two runs with the same folder name; give them names as NAME=RUN)"
                )
            seen[name] = d
        first_dir, first_meta, _ = runs[0]
        tokenizer = saved_tokenizer(first_dir / TOKENIZER_DIR)
        backbone = first_meta["config"]["model"]["model"]
        for d, meta, _ in runs[1:]:  # checked before the backbone is loaded
            _check_backbone(backbone, first_dir, d, meta)
        model = build_model(backbone, first_meta["label_names"], tokenizer.pad_token_id)
        self = cls(
            backbone,
            model,
            tokenizer,
            pick_device(device),
            batch_size or first_meta["config"]["train"]["eval_batch_size"],
            precision,
            mixed,
        )
        for (d, meta, results), name in zip(runs, names, strict=True):
            self._add(d, meta, results, name)
        return self

    # ---- adapters --------------------------------------------------------------------------
    def add(self, run_dir: str | Path, name: str | None = None) -> Adapter:
        """Load one more LoRA run over the same backbone (while serving, too)."""
        run_dir, meta, results = read_lora_run(run_dir)
        _check_backbone(self.backbone, None, run_dir, meta)
        return self._add(run_dir, meta, results, name or adapter_name(run_dir))

    def _add(self, run_dir: Path, meta: dict, results: dict, name: str) -> Adapter:
        from loralab.models.backbones import length_cap
        from loralab.runs.layout import ADAPTER_DIR

        check_adapter_name(name)
        if name in self.adapters:
            raise AdapterError(
                f"{run_dir}: an adapter named {name!r} is already served ({self.adapters[name].run_dir})"
            )
        labels = list(meta["label_names"])
        max_length = length_cap(meta["config"]["data"]["max_length"], self.model.config)
        with self._lock:  # the model's modules are read and changed: no batch runs meanwhile
            layers, head_states = load_adapter_tensors(run_dir / ADAPTER_DIR, self.model, self.head_names)
            where = run_dir / ADAPTER_DIR / ADAPTER_WEIGHTS
            heads = {
                h: head_copy(self.heads[h].template, head_states[h], where).to(self.device) for h in self.head_names
            }
            uid, self._next_uid = self._next_uid, self._next_uid + 1
            adapter = Adapter(
                name,
                run_dir.resolve(),
                uid,
                labels,
                max_length,
                run_metadata(run_dir.resolve(), meta, results),
                {k: (a.to(self.device), b.to(self.device), s) for k, (a, b, s) in layers.items()},
                heads,
            )
            for target, update in adapter.layers.items():
                self._lora_layer(target).updates[uid] = update
            for h, module in heads.items():
                self.heads[h].heads[uid] = module
            self.adapters = {**self.adapters, name: adapter}  # a new dict: readers never see one change
        return adapter

    def _lora_layer(self, target: str) -> MultiLoRALinear:
        layer = self.model.get_submodule(target)
        if not isinstance(layer, MultiLoRALinear):
            parent, _, child = target.rpartition(".")
            layer = MultiLoRALinear(layer, self.routing)
            setattr(self.model.get_submodule(parent), child, layer)
        return layer

    def remove(self, name: str) -> Adapter:
        with self._lock:
            adapter = self.adapters.get(name)
            if adapter is None:
                raise UnknownAdapterError(f"no adapter named {name!r}")
            self.adapters = {k: v for k, v in self.adapters.items() if k != name}
            for target in adapter.layers:
                self.model.get_submodule(target).updates.pop(adapter.uid, None)
            for h in self.head_names:
                self.heads[h].heads.pop(adapter.uid, None)
        return adapter

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    @property
    def label_names(self) -> list[str]:
        return next(iter(self.adapters.values())).label_names if self.adapters else []

    # ---- scoring ---------------------------------------------------------------------------
    def logits(self, items: Sequence[tuple[str, str]]) -> list[np.ndarray | None]:
        """One logits vector per ``(adapter name, text)`` item, in order (each of its adapter's
        label count); ``None`` for an adapter that is not (or no longer) loaded."""
        from loralab.data import encode, length_sorted_batches
        from loralab.runtime import autocast

        out: list[np.ndarray | None] = [None] * len(items)
        with self._lock, torch.inference_mode():
            adapters = [self.adapters.get(name) for name, _ in items]
            ids: list[list[int] | None] = [None] * len(items)
            by_adapter: dict[int, list[int]] = {}
            for i, a in enumerate(adapters):
                if a is not None:
                    by_adapter.setdefault(a.uid, []).append(i)
            for idx in by_adapter.values():  # each adapter truncates to its own run's max length
                a = adapters[idx[0]]
                for i, x in zip(idx, encode(self.tokenizer, [items[i][1] for i in idx], a.max_length), strict=True):
                    ids[i] = x
            live = [i for i in range(len(items)) if ids[i] is not None]
            groups = [live] if self.mixed else list(by_adapter.values())
            for group in groups:
                for chunk in length_sorted_batches([len(ids[i]) for i in group], self.batch_size):
                    rows = sorted((group[j] for j in chunk), key=lambda i: adapters[i].uid)  # stable: by length within
                    self._forward(rows, ids, adapters, out, autocast)
        return out

    def _forward(self, rows, ids, adapters, out, autocast) -> None:
        from loralab.data import pad_batch

        input_ids, mask = pad_batch([ids[i] for i in rows], self.tokenizer.pad_token_id)
        segments, start = [], 0
        for k in range(1, len(rows) + 1):
            if k == len(rows) or adapters[rows[k]].uid != adapters[rows[start]].uid:
                segments.append((adapters[rows[start]].uid, start, k))
                start = k
        self.routing.segments = segments
        try:
            with autocast(self.device, self.autocast_dtype):
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
        finally:
            self.routing.segments = []
        logits = logits.float().cpu().numpy()
        for row, i in enumerate(rows):
            out[i] = logits[row, : len(adapters[i].label_names)].copy()

    def predict(self, items: Sequence[tuple[str, str]]) -> list[dict | None]:
        """One dict per item, in order: adapter, text, label, label_name, confidence, probabilities;
        ``None`` for an adapter that is not loaded."""
        from loralab.evaluation.metrics import softmax

        res: list[dict | None] = []
        for (name, text), z in zip(items, self.logits(items), strict=True):
            if z is None:
                res.append(None)
                continue
            p = softmax(z[None].astype(np.float64))[0]
            k = int(p.argmax())
            res.append(
                {
                    "adapter": name,
                    "text": text,
                    "label": k,
                    "label_name": self.adapters_label(name, k),
                    "confidence": float(p[k]),
                    "probabilities": [float(x) for x in p],
                }
            )
        return res

    def adapters_label(self, name: str, k: int) -> str:
        a = self.adapters.get(name)
        return a.label_names[k] if a is not None else str(k)

    def warm_up(self) -> None:
        if self.adapters:
            names = self.names
            self.logits([(names[0], "warm-up"), (names[-1], "a second, somewhat longer warm-up text")])


# ---------------------------------------------------------------------------------------------
# Names, backbones, study folders
# ---------------------------------------------------------------------------------------------

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-=+")


def adapter_name(run_dir: str | Path) -> str:
    """An adapter's default name: its run folder's name."""
    return Path(os.path.abspath(run_dir)).name  # the name as given: a symbolic link keeps its own


def check_adapter_name(name: str) -> None:
    if not name or len(name) > 200 or not set(name) <= _NAME_CHARS or name.startswith("."):
        raise AdapterError(f"adapter name {name!r}: use letters, digits and . _ - = + (at most 200 characters)")


def _check_backbone(backbone: str, first: Path | None, run_dir: Path, meta: dict) -> None:
    from loralab.models.backbones import resolve_model

    other = meta["config"]["model"]["model"]
    if other != backbone and resolve_model(other) != resolve_model(backbone):
        against = f" ({first})" if first is not None else ""
        raise AdapterError(
            f"{run_dir}: trained on backbone {other}, not {backbone}{against}: adapters served together "
            "share one backbone"
        )


def expand_runs(paths: Sequence[str]) -> list[tuple[str | None, Path]]:
    """``(name or None, run_dir)`` for each argument: a run directory, ``NAME=RUN``, or a study
    folder (all its complete LoRA runs, in run-id order)."""
    from loralab.files import read_json
    from loralab.runs.layout import CONFIG_FILE, RESULTS_FILE, RUNS_DIR, STUDY_FILE

    out: list[tuple[str | None, Path]] = []
    for arg in paths:
        name, path = None, Path(arg)
        if not path.exists() and "=" in arg:
            name, _, rest = arg.partition("=")
            path = Path(rest)
        if (path / STUDY_FILE).is_file() and (path / RUNS_DIR).is_dir():
            runs = [
                d
                for d in sorted((path / RUNS_DIR).iterdir())
                if d.is_dir()
                and not d.name.startswith(".")
                and (d / RESULTS_FILE).is_file()
                and read_json(d / CONFIG_FILE)["config"]["method"]["method"] == "lora"
            ]
            if not runs:
                raise AdapterError(f"{path}: a study folder without a complete LoRA run")
            if name is not None:
                raise AdapterError(f"{arg}: a study folder cannot be given a name (its runs are named by run id)")
            out += [(None, d) for d in runs]
        else:
            out.append((name, path))
    return out
