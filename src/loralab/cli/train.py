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
    _add_memory_flags(i)
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


#: The run options the memory estimate of ``inspect`` reads besides the model and method groups.
INSPECT_MEMORY_OPTIONS = {
    "train": ("batch_size", "grad_accum", "precision", "gradient_checkpointing"),
    "data": ("max_length",),
}


def _add_memory_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("memory estimate")
    defaults = RunConfig().to_flat()
    for group, names in INSPECT_MEMORY_OPTIONS.items():
        for f in fields(GROUPS[group]):
            if f.name not in names:
                continue
            flag = "--" + f.name.replace("_", "-")
            help_ = f"{f.metadata.get('help', '')} (default: {defaults[f.name]})"
            if f.name == "gradient_checkpointing":
                g.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
            else:
                choices = f.metadata.get("choices")
                g.add_argument(flag, default=argparse.SUPPRESS, choices=choices, metavar=f.name.upper(), help=help_)
    g.add_argument(
        "--gpu-memory",
        metavar="SIZE",
        default=None,
        help="say whether the run fits a GPU of this size (24GB, 80G, 16GiB); the estimate assumes a GPU "
        "(--precision auto: bf16 autocast)",
    )


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
                if "accuracy" in m:
                    lines.append(f"{split}: accuracy {m['accuracy']:.4f}  f1 {m['f1']:.4f}  loss {m['loss']:.4f}")
                else:  # regression
                    lines.append(
                        f"{split}: pearson {m['pearson']:.4f}  spearman {m['spearman']:.4f}  mse {m['mse']:.4f}"
                    )
        p = r["params"]
        lines.append(f"trainable: {p['trainable']:,} / {p['total']:,} ({p['trainable_percent']:.4f}%)")
        spe = r["timing"]["seconds_per_epoch"]
        if spe:
            lines.append(f"seconds/epoch: {spe:.1f}  samples/s: {r['timing']['train_samples_per_second']:.1f}")
        print("\n".join(lines))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from loralab.models.memory import memory_of, parse_size
    from loralab.training.run import inspect_params  # transformers: only when asked

    config = config_from_args(args)
    gpu_bytes = parse_size(args.gpu_memory) if args.gpu_memory else None
    table = inspect_params(config)
    memory = memory_of(config, table.total, table.trainable, gpu=True)
    backbone = table.backbone
    if args.json:
        fit = {"gpu_memory": gpu_bytes, "fits": memory.total <= gpu_bytes} if gpu_bytes else {}
        out = {**table.to_dict(), "backbone": backbone.to_dict() if backbone else None}
        print(json.dumps({**out, "memory": {**memory.to_dict(), **fit}}, indent=2))
    else:
        print(table.format() + (f"\n\n{backbone.format()}" if backbone else ""))
        print(memory.format(gpu_bytes))
    return 0
