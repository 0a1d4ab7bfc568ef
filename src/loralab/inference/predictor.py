"""One Predictor for ``loralab predict``, evaluation of a saved run, and the HTTP service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from loralab.data import encode, segment_separator
from loralab.errors import ConfigError
from loralab.files import read_json
from loralab.inference.batched import batched_logits
from loralab.inference.rows import prediction_rows
from loralab.models.backbones import length_cap
from loralab.runs.exported import is_model_folder, is_onnx_export, load_export
from loralab.runs.layout import CONFIG_FILE
from loralab.runs.weights import load_model
from loralab.runtime import pick_device

if TYPE_CHECKING:
    from loralab.inference.onnx import OnnxPredictor


class Predictor:
    """Scores texts with a trained model: length-sorted batches under ``torch.inference_mode``."""

    def __init__(
        self,
        model,
        tokenizer,
        label_names: list[str],
        max_length: int,
        batch_size: int,
        device: torch.device,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision must be fp32 or bf16, got {precision!r}")
        self.model = model.to(device).eval()
        if compile:
            # Inductor with freezing: the weights become constants, folded and pre-packed for
            # oneDNN/MKL, and the small operators between the matmuls are fused (the gain and the
            # warm-up: bench/RESULTS.md); dynamic shapes, so new batch shapes rarely recompile. Only
            # for a model that no longer changes: a Predictor's.
            self.model = torch.compile(self.model, dynamic=True, options={"freezing": True})
        # fp32 (default) reproduces a run's prediction files exactly; bf16 autocast is faster on CPUs
        # with AVX-512 BF16/AMX and on GPUs (bench/RESULTS.md), at the cost of rare flips on near-ties.
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.precision = precision
        self.compiled = compile
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        device: str = "auto",
        merge: bool = True,
        batch_size: int | None = None,
        precision: str = "fp32",
        compile: bool = False,
    ) -> Predictor | OnnxPredictor:
        """Load a run directory (complete or being finalised) in this process; an export (merged,
        adapter or ONNX, :mod:`loralab.runs.exported`) loads too."""
        run_dir = Path(run_dir)
        if is_model_folder(run_dir):
            return load_export_predictor(
                run_dir, device=device, batch_size=batch_size, precision=precision, compile=compile
            )
        meta = read_json(run_dir / CONFIG_FILE)
        model, tokenizer = load_model(run_dir, meta, merge=merge)
        cfg = meta["config"]
        return cls(
            model,
            tokenizer,
            meta["label_names"],
            cfg["data"]["max_length"],
            batch_size or cfg["train"]["eval_batch_size"],
            pick_device(device),
            precision,
            compile,
        )

    @property
    def regression(self) -> bool:
        """Whether the model predicts a number (one output, ``problem_type`` regression)."""
        return len(self.label_names) == 1

    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """Outputs (float32, ``[n, labels]``; ``[n, 1]`` for regression) in input order; ``pairs``:
        the second texts of a pair task, tokenised with their texts as pairs."""
        ids = encode(self.tokenizer, texts, self.max_length, pairs) if len(texts) else []
        sep = segment_separator(self.tokenizer, self.model.config, pairs is not None)
        return batched_logits(
            self.model, ids, self.batch_size, self.tokenizer.pad_token_id, self.device, self.autocast_dtype, sep
        )

    def warm_up(self) -> None:
        """Pay one-off costs before the first real caller does: the first forward pass and, when
        compiled, the compilation. Dynamic-shape compilation still specialises a dimension of
        size 1, so one batch of one text and one batch of two texts of different lengths are
        scored: afterwards single texts and batches of any size and length run without compiling."""
        self.logits(["warm-up"])
        self.logits(["warm-up", "a second, somewhat longer warm-up text"])

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
        """One dict per text, in input order: text (text_pair), label (id), label_name, confidence,
        probabilities; for regression text (text_pair) and score (:func:`prediction_rows`)."""
        return prediction_rows(texts, self.logits(texts, pairs) if len(texts) else [], self.label_names, pairs)


def load_export_predictor(
    folder: str | Path,
    device: str = "auto",
    batch_size: int | None = None,
    max_length: int | None = None,
    precision: str = "fp32",
    compile: bool = False,
) -> Predictor | OnnxPredictor:
    """A :class:`Predictor` for a merged export, an adapter export (merged into its base on load),
    or any transformers sequence-classification folder (:func:`loralab.runs.exported.load_export`).
    ``max_length`` defaults to ``export.json``'s, else the tokenizer's (capped at the model's
    positions). An ONNX export (``loralab export --format onnx``) gives an
    :class:`~loralab.inference.onnx.OnnxPredictor` (same interface, run by onnxruntime)."""
    if is_onnx_export(folder):
        from loralab.inference.onnx import OnnxPredictor  # onnxruntime: only for an ONNX export

        return OnnxPredictor.from_folder(
            folder, device=device, batch_size=batch_size, max_length=max_length, precision=precision, compile=compile
        )
    model, tokenizer, names, meta = load_export(folder)
    if max_length is None:
        max_length = meta.get("max_length") or int(tokenizer.model_max_length)
    max_length = length_cap(max_length, model.config)
    return Predictor(model, tokenizer, names, max_length, batch_size or 32, pick_device(device), precision, compile)


def predict_side_by_side(
    runs: Sequence[str | Path],
    texts: Sequence[str],
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "fp32",
) -> list[dict]:
    """Each LoRA run's answer for each text, from one backbone with the runs as adapters (mixed
    batches, see :mod:`loralab.inference.adapters`): ``[{"text", "adapters": {name: {label, label_name,
    confidence}}}]`` in text order, adapters in the order given."""
    from loralab.inference.adapters import MultiAdapterPredictor, adapter_name, expand_runs  # peft: only here

    named = expand_runs([str(r) for r in runs])
    model = MultiAdapterPredictor.from_runs(
        [d for _, d in named],
        [n or adapter_name(d) for n, d in named],
        device=device,
        batch_size=batch_size,
        precision=precision,
    )
    names = model.names
    preds = model.predict([(name, t) for t in texts for name in names])
    keys = ("label", "label_name", "confidence")
    return [
        {
            "text": t,
            "adapters": {p["adapter"]: {k: p[k] for k in keys} for p in preds[i * len(names) : (i + 1) * len(names)]},
        }
        for i, t in enumerate(texts)
    ]
