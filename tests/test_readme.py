"""The README's commands: every ``loralab`` line in its bash blocks parses with today's CLI (no
stale flag or sub-command survives a change), and the short ones run for real."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loralab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def bash_commands(text: str) -> list[str]:
    """Each command line of the ```bash blocks, continuation lines joined, comments dropped."""
    return [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) for line in command_lines(block)]


def command_lines(block: str) -> list[str]:
    """The command lines of one bash block's body."""
    out = []
    for line in re.sub(r"\\\n\s*", " ", block).splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def loralab_argv(line: str) -> list[str] | None:
    """The argv of the ``loralab`` invocation in ``line`` (after env assignments, ``.venv/bin/``,
    ``python -m``, ``torchrun ... -m`` or ``accelerate launch ... -m``), or None."""
    words = shlex.split(line.rsplit("&&", maxsplit=1)[-1].split("|", maxsplit=1)[0])
    for i, w in enumerate(words):
        if w.endswith("loralab") and (w == "loralab" or w.endswith("/loralab")) and (i == 0 or words[i - 1] != "-m"):
            return words[i + 1 :]
        if w == "loralab" and i > 0 and words[i - 1] == "-m":
            return words[i + 1 :]
    return None


COMMANDS = [argv for line in bash_commands(README.read_text(encoding="utf-8")) if (argv := loralab_argv(line))]


def test_the_readme_has_commands():
    assert len(COMMANDS) >= 8


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_every_readme_command_parses(argv):
    args = build_parser().parse_args([a for a in argv if a != "-q"])  # argparse exits 2 on a stale flag
    assert callable(args.func)


SHORT = ("inspect", "table", "--help")


def test_the_short_readme_commands_run(tmp_path):
    """The cheap ones (parameter tables, help, dry runs) run as written, from the repository root."""
    ran = 0
    env = dict(os.environ, LORALAB_DATA_DIR=os.environ.get("LORALAB_DATA_DIR", str(ROOT.parent / "shared/data/sst2")))
    for argv in COMMANDS:
        if argv[0] == "inspect" or "--dry-run" in argv or "--help" in argv:
            done = subprocess.run(
                [sys.executable, "-m", "loralab", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"{argv}: {done.stderr[-500:]}"
            ran += 1
    assert ran >= 2


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    """The five-minute tour on MiniLM, command by command (``serve`` aside: it does not return)."""
    block = re.search(r"## A five-minute tour\n\n```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    env = dict(
        os.environ,
        LORALAB_DATA_DIR=os.environ.get("LORALAB_DATA_DIR", str(ROOT.parent / "shared/data/sst2")),
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    )
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    ran = 0
    for line in command_lines(block):
        if line.startswith((". ", "export ")) or " serve " in f" {line} ":
            continue
        done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{line}: {done.stderr[-800:]}"
        ran += 1
    assert ran >= 6
    assert (tmp_path / "studies_out" / "smoke" / "report.md").is_file()
    # the smoke study shows what the tool is for: every run clearly above the majority class (50.9 %)
    import json

    runs = sorted((tmp_path / "studies_out" / "smoke" / "runs").glob("*/results.json"))
    assert len(runs) == 4
    for r in runs:
        assert json.loads(r.read_text())["validation"]["accuracy"] >= 0.60, r.parent.name
