"""Many LoRA adapters over one backbone: loading them from run directories and scoring mixed batches.

The backbone is loaded once; each adapter adds only its low-rank matrices and its own
classification head (with its own label names, so heads of different widths can share a batch).
One forward pass serves a batch whose rows belong to different adapters: the rows are grouped by
adapter, every adapted linear layer computes ``W x`` for the whole batch once and adds each
adapter's ``(alpha/r) B A x`` to its own contiguous slice of rows, and each head scores its slice.

Used by ``loralab serve`` with several runs and by ``loralab predict --run A --run B``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from loralab.errors import ConfigError
from loralab.inference.multilora import (
    ADAPTER_WEIGHTS,
    AdapterError,
    MultiHead,
    MultiLoRALinear,
    Routing,
    head_copy,
    load_adapter_tensors,
)
from loralab.inference.registry import (
    AdapterRegistry,
    UnknownAdapterError,  # noqa: F401 (imported from here by callers)
    adapter_name,
    check_adapter_name,
    read_lora_run,
)

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


# ---------------------------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------------------------


class MultiAdapterPredictor:
    """Scores ``(adapter, text)`` items with many adapters over one backbone.

    ``mixed=True`` (default) scores items of different adapters in the same forward pass;
    ``mixed=False`` runs one forward pass per adapter (the comparison in bench/serve_adapters.py).
    Adding and removing adapters is safe while another thread predicts: the rules (names, runs,
    the default, the last adapter, ``max_adapters``) are the :class:`AdapterRegistry`'s; weights
    are read with no lock held, and the model's lock is held for one batch, or to swap one
    adapter's weights in or out, at a time. ``adapters`` is replaced, never changed in place, so
    the event loop reads it without waiting for a batch.
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
        max_adapters: int | None = None,
    ) -> None:
        from loralab.models.description import describe

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
        self.head_names = list(describe(model).heads)
        self._base_modules = dict(self.model.named_modules())  # before any is wrapped: what adapters fit
        self.heads = {}
        for name in self.head_names:
            parent, _, child = name.rpartition(".")
            wrapper = MultiHead(self.model.get_submodule(name), self.routing)
            setattr(self.model.get_submodule(parent) if parent else self.model, child, wrapper)
            self.heads[name] = wrapper
        self.registry = AdapterRegistry(max_adapters)
        self._uids = itertools.count()
        self._lock = threading.RLock()  # the model: one batch, or one adapter swapped in or out
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def from_runs(
        cls,
        run_dirs: Sequence[str | Path],
        names: Sequence[str] | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        precision: str = "fp32",
        mixed: bool = True,
        max_adapters: int | None = None,
    ) -> MultiAdapterPredictor:
        """Load the backbone of the first run once, then every run as an adapter (at most
        ``max_adapters``; none is served twice)."""
        from loralab.models.backbones import build_model, saved_tokenizer
        from loralab.models.pooling import apply_pooling
        from loralab.runs.layout import TOKENIZER_DIR
        from loralab.runtime import pick_device

        if not run_dirs:
            raise AdapterError("no LoRA runs to serve")
        if max_adapters is not None and len(run_dirs) > max_adapters:
            raise AdapterError(f"{len(run_dirs)} runs to serve, more than --max-adapters {max_adapters}")
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
        apply_pooling(model, first_meta["config"]["model"].get("pooling"))  # one backbone, one pooling
        self = cls(
            backbone,
            model,
            tokenizer,
            pick_device(device),
            batch_size or first_meta["config"]["train"]["eval_batch_size"],
            precision,
            mixed,
            max_adapters,
        )
        for (d, meta, results), name in zip(runs, names, strict=True):
            self._register(d, name, lambda d=d, meta=meta, results=results: (d, meta, results))
        return self

    # ---- adapters --------------------------------------------------------------------------
    def add(self, run_dir: str | Path, name: str | None = None, roots: Sequence[Path] = ()) -> Adapter:
        """Load one more LoRA run over the same backbone (while serving, too). With ``roots``
        (resolved folders), every file read must lie under one of them (see :func:`read_lora_run`)."""
        run_dir = Path(run_dir)
        return self._register(run_dir, name or adapter_name(run_dir), lambda: read_lora_run(run_dir, roots))

    def _register(self, run_dir: Path, name: str, read) -> Adapter:
        """Reserve the name and the run, read the weights (no lock held: batches go on), then
        swap them in between two batches; a failure releases the reservation."""
        check_adapter_name(name)
        key = run_dir.resolve()
        self.registry.reserve(name, key)
        try:
            run_dir, meta, results = read()
            _check_backbone(self.backbone, None, run_dir, meta)
            _check_pooling(self.model, run_dir, meta)
            adapter = self._load(run_dir, key, meta, results, name)
            with self._lock:  # the model's modules change: no batch runs meanwhile
                self._install(adapter)
                self.registry.publish(adapter)
        except BaseException:
            self.registry.release(name)
            raise
        return adapter

    def _load(self, run_dir: Path, key: Path, meta: dict, results: dict, name: str) -> Adapter:
        from loralab.models.backbones import length_cap
        from loralab.runs.layout import ADAPTER_DIR

        layers, head_states = load_adapter_tensors(run_dir / ADAPTER_DIR, self._base_modules, self.head_names)
        where = run_dir / ADAPTER_DIR / ADAPTER_WEIGHTS
        heads = {h: head_copy(self.heads[h].template, head_states[h], where).to(self.device) for h in self.head_names}
        return Adapter(
            name,
            key,
            next(self._uids),
            list(meta["label_names"]),
            length_cap(meta["config"]["data"]["max_length"], self.model.config),
            run_metadata(key, meta, results),
            {k: (a.to(self.device), b.to(self.device), s) for k, (a, b, s) in layers.items()},
            heads,
        )

    def _install(self, adapter: Adapter) -> None:
        for target, update in adapter.layers.items():
            self._lora_layer(target).updates[adapter.uid] = update
        for h, module in adapter.heads.items():
            self.heads[h].heads[adapter.uid] = module

    def _lora_layer(self, target: str) -> MultiLoRALinear:
        layer = self.model.get_submodule(target)
        if not isinstance(layer, MultiLoRALinear):
            parent, _, child = target.rpartition(".")
            layer = MultiLoRALinear(layer, self.routing)
            setattr(self.model.get_submodule(parent), child, layer)
        return layer

    def remove(self, name: str, new_default: str | None = None) -> Adapter:
        """Stop serving ``name``: never the last adapter, the default one only with ``new_default``
        (:meth:`AdapterRegistry.withdraw`); its weights leave the model between two batches."""
        adapter = self.registry.withdraw(name, new_default)
        with self._lock:
            for target in adapter.layers:
                self.model.get_submodule(target).updates.pop(adapter.uid, None)
            for h in self.head_names:
                self.heads[h].heads.pop(adapter.uid, None)
        return adapter

    @property
    def adapters(self) -> dict[str, Adapter]:
        return self.registry.adapters

    @property
    def default(self) -> str | None:
        """The adapter of requests that name none."""
        return self.registry.default

    def set_default(self, name: str) -> None:
        self.registry.set_default(name)

    @property
    def names(self) -> list[str]:
        return list(self.adapters)

    @property
    def label_names(self) -> list[str]:
        default = self.adapters.get(self.default or "")
        return default.label_names if default is not None else []

    # ---- scoring ---------------------------------------------------------------------------
    def logits(self, items: Sequence[tuple[str, str]]) -> list[np.ndarray | None]:
        """One logits vector per ``(adapter name, text)`` item, in order (each of its adapter's
        label count); ``None`` for an adapter that is not (or no longer) loaded."""
        return self._logits(items, [self.adapters.get(name) for name, _ in items])

    def _logits(self, items, adapters: list[Adapter | None]) -> list[np.ndarray | None]:
        from loralab.data import encode, length_sorted_batches
        from loralab.runtime import autocast

        out: list[np.ndarray | None] = [None] * len(items)
        ids: list[list[int] | None] = [None] * len(items)
        by_adapter: dict[int, list[int]] = {}
        for i, a in enumerate(adapters):
            if a is not None:
                by_adapter.setdefault(a.uid, []).append(i)
        with self._tokenizer_lock:
            for idx in by_adapter.values():  # each adapter truncates to its own run's max length
                a = adapters[idx[0]]
                for i, x in zip(idx, encode(self.tokenizer, [items[i][1] for i in idx], a.max_length), strict=True):
                    ids[i] = x
        live = [i for i in range(len(items)) if ids[i] is not None]
        groups = [live] if self.mixed else list(by_adapter.values())
        for group in groups:
            for chunk in length_sorted_batches([len(ids[i]) for i in group], self.batch_size):
                # the model's lock is held for one batch: adapters are added and removed in between,
                # and the rows of one removed meanwhile stay None
                with self._lock, torch.inference_mode():
                    served = self.adapters
                    rows = [group[j] for j in chunk if served.get(adapters[group[j]].name) is adapters[group[j]]]
                    if rows:  # stable: by length within each adapter
                        self._forward(sorted(rows, key=lambda i: adapters[i].uid), ids, adapters, out, autocast)
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

        adapters = [self.adapters.get(name) for name, _ in items]
        res: list[dict | None] = []
        for (name, text), a, z in zip(items, adapters, self._logits(items, adapters), strict=True):
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
                    "label_name": a.label_names[k],
                    "confidence": float(p[k]),
                    "probabilities": [float(x) for x in p],
                }
            )
        return res

    def warm_up(self) -> None:
        if self.adapters:
            names = self.names
            self.logits([(names[0], "warm-up"), (names[-1], "a second, somewhat longer warm-up text")])


# ---------------------------------------------------------------------------------------------
# Backbones, study folders
# ---------------------------------------------------------------------------------------------


def _check_backbone(backbone: str, first: Path | None, run_dir: Path, meta: dict) -> None:
    from loralab.models.backbones import resolve_model

    other = meta["config"]["model"]["model"]
    if other != backbone and resolve_model(other) != resolve_model(backbone):
        against = f" ({first})" if first is not None else ""
        raise AdapterError(
            f"{run_dir}: trained on backbone {other}, not {backbone}{against}: adapters served together "
            "share one backbone"
        )


def _check_pooling(model, run_dir: Path, meta: dict) -> None:
    from loralab.models.pooling import effective_pooling, native_pooling

    wanted = meta["config"]["model"].get("pooling") or native_pooling(model)
    if wanted != effective_pooling(model):
        raise AdapterError(
            f"{run_dir}: pools with {wanted}, the served backbone with {effective_pooling(model)}: adapters "
            "served together share one --pooling"
        )


def servable(method: dict) -> bool:
    """A run's method (config.json's ``method`` group) whose update these layers compute: plain
    LoRA (a PiSSA/OLoRA run is saved as plain LoRA deltas); not DoRA, whose magnitude rescales
    the whole weight."""
    return method["method"] == "lora" and not method.get("dora")


def expand_runs(paths: Sequence[str]) -> list[tuple[str | None, Path]]:
    """``(name or None, run_dir)`` for each argument: a run directory, ``NAME=RUN``, or a study
    folder (all its complete runs that can be served as adapters, :func:`servable`, in run-id order)."""
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
                and servable(read_json(d / CONFIG_FILE)["config"]["method"])
            ]
            if not runs:
                raise AdapterError(f"{path}: a study folder without a complete LoRA run")
            if name is not None:
                raise AdapterError(f"{arg}: a study folder cannot be given a name (its runs are named by run id)")
            out += [(None, d) for d in runs]
        else:
            out.append((name, path))
    return out
