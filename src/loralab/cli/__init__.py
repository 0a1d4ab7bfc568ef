"""``loralab`` command line: a thin map from sub-commands to the Python API.

Each sub-command has its own module here (flags and a handler that calls the Python API); this
one builds the parser and runs a handler. User errors print one line and exit with code 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import logging
import re
import signal
import sys
import threading
import warnings

from loralab.errors import LoralabError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a mistyped choice or flag gets "did you mean" (among the flags
    of the sub-command it was given to) and a pointer to that sub-command's ``--help``."""

    argv: list[str] | None = None  #: the arguments being parsed (set by :func:`main`)

    def error(self, message: str):  # type: ignore[override]
        hint, target = "", self
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = [c.strip(" '\"") for c in m.group(2).split(",")]
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
        m = re.search(r"unrecognized arguments: (\S+)", message)
        if m:
            # argparse reports a sub-command's unknown flags from the top parser: find the sub-command
            target = self.command_parser(self.argv or [])
            flags = [o for a in target._actions for o in a.option_strings]
            close = difflib.get_close_matches(m.group(1).split("=")[0], flags, n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"loralab: error: {message}{hint}; see `{target.prog} --help`", file=sys.stderr)
        sys.exit(2)

    def command_parser(self, argv: list[str]) -> argparse.ArgumentParser:
        """The parser of the deepest sub-command named in ``argv`` (``loralab study run``: run's)."""
        parser = self
        for token in argv:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if subs and token in subs[0].choices:
                parser = subs[0].choices[token]
        return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``loralab`` parser: one module per sub-command (``loralab.cli.NAME``), each defining
    ``add_parser(subparsers)``, which registers its sub-command(s) and sets ``func`` to a handler
    ``(args) -> int``."""
    p = Parser(prog="loralab", description="LoRA and baseline fine-tuning of text classifiers.")
    p.add_argument("--version", action="version", version=f"loralab {importlib.metadata.version('loralab')}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # imported here, not at the top: `python -m loralab.cli.worker` must start without them
    from loralab.cli import analyze, evaluate, export, predict, serve, study, table, train, tune

    for command in (train, predict, evaluate, study, analyze, export, serve, tune, table):
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.argv = list(sys.argv[1:] if argv is None else argv)
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
