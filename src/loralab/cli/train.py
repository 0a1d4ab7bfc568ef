"""``loralab train`` and ``loralab inspect``: their flags are generated from the config dataclasses
(one source for names, types, defaults and help), then :func:`loralab.training.run.train` or
:func:`~loralab.training.run.inspect_params` is called."""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields
from typing import get_args

from loralab.config import GROUPS, RunConfig, field_type, read_config_file


def add_parser(sub) -> None:
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


INSPECT_GROUPS = ("model", "method")


def _add_config_flags(parser: argparse.ArgumentParser, groups: tuple[str, ...]) -> None:
    defaults = RunConfig().to_flat()
    for group in groups:
        g = parser.add_argument_group(group)
        for f in fields(GROUPS[group]):
            flag = "--" + f.name.replace("_", "-")
            help_ = f.metadata.get("help", "")
            default = defaults.get(f.name, None if f.default is MISSING else f.default)
            hint = field_type(GROUPS[group], f.name)
            if hint is bool or set(get_args(hint)) == {bool, type(None)}:  # a switch: --dora / --no-dora
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


def config_from_args(args: argparse.Namespace) -> RunConfig:
    owner = {f.name for cls in GROUPS.values() for f in fields(cls)}
    base = RunConfig()
    if getattr(args, "config", None):
        base = read_config_file(args.config)
    return base.override({k: v for k, v in vars(args).items() if k in owner})


def cmd_train(args: argparse.Namespace) -> int:
    from loralab.training.run import train  # transformers: only when a run starts

    config = config_from_args(args)
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
    from loralab.training.run import inspect_params  # transformers: only when asked

    table = inspect_params(config_from_args(args))
    if args.json:
        print(json.dumps(table.to_dict(), indent=2))
    else:
        print(table.format())
    return 0
