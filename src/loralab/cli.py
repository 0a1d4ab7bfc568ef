"""``loralab`` command line: a thin map from sub-commands to the Python API.

Flags of ``train`` are generated from the config dataclasses (one source for names, types,
defaults and help). User errors print one line and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import logging
import re
import signal
import sys
import threading
import warnings
from dataclasses import MISSING, fields

from .config import GROUPS, RunConfig, field_type
from .errors import LoralabError

INSPECT_GROUPS = ("model", "method")

#: Sub-commands that live beside their feature: each module defines ``add_parser(subparsers)``,
#: which registers its sub-command(s) and sets ``func`` to a handler ``(args) -> int``.
FEATURE_COMMANDS = (
    "loralab.study.cli",
    "loralab.analyze",
    "loralab.export",
    "loralab.serve",
    "loralab.tune.cli",
    "loralab.table",
)


def _add_config_flags(parser: argparse.ArgumentParser, groups: tuple[str, ...]) -> None:
    defaults = RunConfig().to_flat()
    for group in groups:
        g = parser.add_argument_group(group)
        for f in fields(GROUPS[group]):
            flag = "--" + f.name.replace("_", "-")
            help_ = f.metadata.get("help", "")
            default = defaults.get(f.name, None if f.default is MISSING else f.default)
            if field_type(GROUPS[group], f.name) is bool:
                g.add_argument(
                    flag,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=f"{help_} (default: {default})",
                )
                continue
            choices = f.metadata.get("choices")
            if isinstance(default, list):  # as the flag takes it: comma-separated
                default = ",".join(map(str, default))
            shown = "" if default is None else f" (default: {default})"
            g.add_argument(flag, default=argparse.SUPPRESS, choices=choices, metavar=f.name.upper(), help=help_ + shown)


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    owner = {f.name for cls in GROUPS.values() for f in fields(cls)}
    base = RunConfig()
    if getattr(args, "config", None):
        from .config import read_config_file

        base = read_config_file(args.config)
    return base.override({k: v for k, v in vars(args).items() if k in owner})


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a mistyped choice or flag gets "did you mean", not the usage."""

    def error(self, message: str):  # type: ignore[override]
        hint = ""
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = [c.strip(" '\"") for c in m.group(2).split(",")]
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
        m = re.search(r"unrecognized arguments: (\S+)", message)
        if m:
            flags = [o for a in self._actions for o in a.option_strings]
            for sub in (a for a in self._actions if isinstance(a, argparse._SubParsersAction)):
                flags += [o for parser in sub.choices.values() for a in parser._actions for o in a.option_strings]
            close = difflib.get_close_matches(m.group(1).split("=")[0], flags, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"loralab: error: {message}{hint}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = Parser(prog="loralab", description="LoRA and baseline fine-tuning of text classifiers.")
    p.add_argument("--version", action="version", version=f"loralab {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train and evaluate one run; writes a run directory",
        description="Train and evaluate one run and write its run directory.",
    )
    t.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="run options from a YAML file (the keys of a study's base) or a run's config.json "
        "(replays that run); flags given here override the file",
    )
    _add_config_flags(t, tuple(GROUPS))
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("inspect", help="parameter table of a model + method (no weights loaded)")
    _add_config_flags(i, INSPECT_GROUPS)
    i.add_argument("--json", action="store_true", help="print a JSON object")
    i.set_defaults(func=cmd_inspect)

    from .predict import add_inference_flags  # torch: only when the parser is built

    pr = sub.add_parser(
        "predict",
        help="predict labels with a trained run (or several LoRA runs side by side)",
        usage="loralab predict RUN [TEXT ...] [--file F|-] [options]\n"
        "       loralab predict --run A --run B [TEXT ...] [options]",
    )
    pr.add_argument(
        "texts", nargs="*", metavar="RUN_AND_TEXTS", help="the run directory (or export), then texts to classify"
    )
    pr.add_argument(
        "--run",
        action="append",
        metavar="RUN",
        default=None,
        help="the run as a flag (then every positional is a text); repeat it for several LoRA runs "
        "over one backbone, answered side by side (NAME=RUN names one)",
    )
    pr.add_argument("--file", help="file with one text per line (blank lines skipped); - reads standard input")
    pr.add_argument("--json", action="store_true", help="print a JSON list")
    pr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    pr.add_argument("--batch-size", type=int, default=None, help="default: the run's eval batch size")
    add_inference_flags(pr)
    pr.set_defaults(func=cmd_predict)

    for module_name in FEATURE_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name.startswith(e.name):
                continue  # feature not present in this build
            raise
        module.add_parser(sub)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    from .api import train

    config = _config_from_args(args)
    result = train(config, command=["loralab", *args.argv])
    r = result.results
    if r:
        lines = [f"run: {result.run_dir}"]
        for split in ("validation", "test"):
            m = r.get(split)
            if m:
                lines.append(f"{split}: accuracy {m['accuracy']:.4f}  f1 {m['f1']:.4f}  loss {m['loss']:.4f}")
        p = r["params"]
        lines.append(f"trainable: {p['trainable']:,} / {p['total']:,} ({p['trainable_percent']:.4f}%)")
        spe = r["timing"]["seconds_per_epoch"]
        if spe:
            lines.append(f"seconds/epoch: {spe:.1f}  samples/s: {r['timing']['train_samples_per_second']:.1f}")
        print("\n".join(lines))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .api import inspect_params

    table = inspect_params(_config_from_args(args))
    if args.json:
        print(json.dumps(table.to_dict(), indent=2))
    else:
        print(table.format())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .api import load_run
    from .data import read_text_lines

    texts = list(args.texts)
    if not args.run:
        if not texts:
            raise LoralabError("predict: give the run directory: loralab predict RUN [TEXT ...]")
        args.run = [texts.pop(0)]
    if args.file:
        texts += read_text_lines(args.file)
    if not texts:
        raise LoralabError("predict: give texts as arguments or --file (- for standard input)")
    if any(not t.strip() for t in texts):
        raise LoralabError("predict: empty text")
    if len(args.run) > 1:
        from .predict import predict_side_by_side

        if args.compile:
            raise LoralabError("predict: --compile serves one run; it does not apply to several --run")
        rows = predict_side_by_side(
            args.run, texts, device=args.device, batch_size=args.batch_size, precision=args.precision
        )
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=1))
        else:
            for row in rows:
                for name, p in row["adapters"].items():
                    print(f"{name}\t{p['label_name']}\t{p['confidence']:.4f}\t{row['text']}")
        return 0
    from .exported import is_model_folder
    from .predict import Predictor

    run = args.run[0]
    run_dir = run if is_model_folder(run) else load_run(run).run_dir  # an export, or a run
    preds = Predictor.from_run(
        run_dir, device=args.device, batch_size=args.batch_size, precision=args.precision, compile=args.compile
    ).predict(texts)
    if args.json:
        keys = ("text", "label", "label_name", "confidence")
        print(json.dumps([{k: p[k] for k in keys} for p in preds], ensure_ascii=False, indent=1))
    else:
        for p in preds:
            print(f"{p['label_name']}\t{p['confidence']:.4f}\t{p['text']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not the user's
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("huggingface_hub").propagate = False  # it has its own handler: else every line twice
    previous = (
        signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        return args.func(args)
    except LoralabError as e:
        print(f"loralab: error: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("loralab: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("loralab: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what job schedulers send) unwinds like Ctrl-C: staging folders are removed and a
    run's last checkpoint stays for ``--resume``."""


def _terminate(signum, frame) -> None:
    raise Terminated


if __name__ == "__main__":
    sys.exit(main())
