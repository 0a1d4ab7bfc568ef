"""The ONNX Runtime predictor: scores texts with an ONNX export (``loralab export --format onnx``)
through onnxruntime, behind the interface of :class:`~loralab.inference.predictor.Predictor`
(``logits``, ``predict``, ``warm_up``, ``label_names``, ``max_length``, ``batch_size``).

Texts are tokenised and cut into length-sorted, right-padded batches exactly as the PyTorch
Predictor does, so an fp32 export gives the PyTorch model's logits (within float rounding) and the
same batches wherever the same texts are scored. Also where the ``onnx`` extra is checked
(:func:`require_onnx`: one line naming the extra when a package is missing).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loralab.data import encode, length_sorted_batches
from loralab.errors import ConfigError, LoralabError
from loralab.inference.rows import prediction_rows
from loralab.runs.exported import EXPORT_FILE, ONNX_FILE, ExportError, read_export_meta

#: What installs the ONNX dependencies.
ONNX_EXTRA = "pip install 'loralab[onnx]'"
#: The graph's inputs (int64, ``[batch, sequence]``) and output (float32, ``[batch, labels]``).
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
#: Texts per batch when neither the caller nor the export says.
DEFAULT_BATCH_SIZE = 32


def require_onnx(what: str, modules: Sequence[str] = ("onnxruntime",)) -> None:
    """Raise a one-line :class:`LoralabError` naming the ``onnx`` extra if a module is missing."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise LoralabError(f"{what} needs the onnx extra ({name} is missing): {ONNX_EXTRA}") from None


def providers(device: str) -> tuple[list[str], str]:
    """onnxruntime's execution providers for ``--device`` and the device they run on."""
    import onnxruntime as ort

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            "--device cuda: this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu), "
            "or use --device cpu"
        )
    if device == "cuda" or (device == "auto" and has_cuda):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    return ["CPUExecutionProvider"], "cpu"


def open_session(path: Path, device: str = "auto", threads: int | None = None):
    """``(onnxruntime.InferenceSession, device)`` for the model file ``path``: all graph
    optimisations, ``threads`` intra-op threads (default: torch's, so ``serve --threads`` applies)."""
    require_onnx("reading an ONNX export")
    import onnxruntime as ort

    names, where = providers(device)
    options = ort.SessionOptions()
    if threads is None:
        import torch  # already imported by the tokenizer's transformers; its count follows --threads

        threads = torch.get_num_threads()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no per-node placement warnings
    try:
        session = ort.InferenceSession(str(path), options, providers=names)
    except Exception as e:  # onnxruntime raises its own exception types: a bad or truncated file
        raise ExportError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
    got = [i.name for i in session.get_inputs()]
    if got != list(INPUT_NAMES):
        raise ExportError(f"{path}: inputs {got}, expected {list(INPUT_NAMES)} (not written by loralab export)")
    return session, where


class OnnxPredictor:
    """Scores texts with an ONNX model: length-sorted batches through an onnxruntime session.

    ``precision`` is what the export holds (``fp32``, or ``int8`` for ``--quantize int8``); it is
    reported, not chosen: the model runs as exported. ``compiled`` is always False.
    """

    def __init__(
        self,
        session,
        tokenizer,
        label_names: list[str],
        max_length: int,
        batch_size: int,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.compiled = False
        self.pad_token_id = int(tokenizer.pad_token_id)

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        device: str = "auto",
        batch_size: int | None = None,
        max_length: int | None = None,
        precision: str = "fp32",
        compile: bool = False,
        threads: int | None = None,
    ) -> OnnxPredictor:
        """The predictor of an ONNX export folder (``model.onnx``, ``export.json``, the tokenizer).
        ``precision`` and ``compile`` exist for the Predictor's signature: anything but fp32 and no
        compilation is refused in one line (the model runs as it was exported)."""
        from loralab.models.backbones import saved_tokenizer

        folder = Path(folder)
        if precision != "fp32":
            raise ConfigError(
                f"--precision {precision}: an ONNX export runs as it was exported (fp32, or int8 with "
                "loralab export --quantize int8)"
            )
        if compile:
            raise ConfigError("--compile: an ONNX export is optimised by onnxruntime; --compile does not apply")
        meta = read_export_meta(folder) or {}
        names = meta.get("label_names")
        if not names:
            raise ExportError(f"{folder / EXPORT_FILE}: no label_names")
        session, where = open_session(folder / ONNX_FILE, device)
        tokenizer = saved_tokenizer(folder)
        tokenizer.padding_side = "right"
        quantize = (meta.get("onnx") or {}).get("quantize")
        return cls(
            session,
            tokenizer,
            names,
            int(max_length or meta.get("max_length") or tokenizer.model_max_length),
            batch_size or DEFAULT_BATCH_SIZE,
            where,
            quantize or "fp32",
        )

    @property
    def regression(self) -> bool:
        """Whether the model predicts a number (one output)."""
        return len(self.label_names) == 1

    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """Logits (float32, ``[n, labels]``) in input order; ``pairs``: second texts of a pair task."""
        ids = encode(self.tokenizer, texts, self.max_length, pairs) if len(texts) else []
        out = np.zeros((len(ids), len(self.label_names)), dtype=np.float32)
        for idx in length_sorted_batches([len(x) for x in ids], self.batch_size):
            input_ids, mask = pad(ids, idx, self.pad_token_id)
            out[idx] = self.session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": mask})[0]
        return out

    def warm_up(self) -> None:
        """Pay one-off costs (the first run of each kernel) before the first real caller does."""
        self.logits(["warm-up"])
        self.logits(["warm-up", "a second, somewhat longer warm-up text"])

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
        """One dict per text, in input order (:func:`~loralab.inference.rows.prediction_rows`)."""
        return prediction_rows(texts, self.logits(texts, pairs) if len(texts) else [], self.label_names, pairs)


def pad(ids: Sequence[Sequence[int]], idx: Sequence[int], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64) of the rows ``idx``, padded on the right to the
    longest (as :func:`loralab.data.pad_batch` pads for PyTorch)."""
    width = max(len(ids[i]) for i in idx)
    input_ids = np.full((len(idx), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    for row, i in enumerate(idx):
        input_ids[row, : len(ids[i])] = ids[i]
        mask[row, : len(ids[i])] = 1
    return input_ids, mask
