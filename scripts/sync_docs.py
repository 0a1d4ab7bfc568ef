"""Regenerate the study excerpts in Markdown docs from study folders' reports.

Study results in the Markdown files are never typed by hand: a block between

    <!-- study-excerpt: NAME sections=cells,baseline plot=accuracy_vs_params -->
    <!-- /study-excerpt -->

is rewritten from ``STUDIES/NAME/report.md`` (written by ``loralab study report``): the chosen
sections' tables (or the findings list) as the report has them, the report's own count of
finished runs, and the chosen figure copied from the study's ``plots/`` to ``docs/img/NAME-PLOT.png``.
Sections: ``findings``, ``cells`` (accuracy and F1 per cell), ``costs`` (loss, parameters, time,
memory per cell), ``baseline`` (every cell against the baseline), ``pairs`` (cells that differ in
one option). A block whose study has no report yet is left as it is and named on stderr
(``--strict`` makes that an error), so the docs can be refreshed while studies still run.

    python scripts/sync_docs.py --studies /path/to/study/folders docs/reference-studies.md

A study kept as an archive of ``loralab study pack`` (``STUDIES/NAME.tar.xz``, as under
``studies/results/`` in this repository) is unpacked into a temporary folder and reported there when
``STUDIES/NAME/report.md`` does not exist, so the docs are rebuilt without retraining:

    python scripts/sync_docs.py --studies studies/results docs/tasks.md README.md

Written by hand because it is a few lines of text surgery on loralab's own report format; a
templating engine would add a dependency and the same amount of code.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(?P<open><!-- study-excerpt: (?P<name>[\w.-]+)(?P<opts>[^>]*?) -->\n)(?P<body>.*?)(?P<close><!-- /study-excerpt -->)",
    re.S,
)
HEADINGS = {
    "findings": "Findings",
    "cells": "Cells",
    "costs": "Cells",
    "baseline": "Against the baseline",
    "pairs": "Cells that differ in one option",
}


class SyncError(Exception):
    """A marker or report that cannot be used: one line naming the file and the problem."""


def sections(report: str) -> dict[str, list[str]]:
    """The ``## `` sections of a report.md, by heading (text up to a parenthesis), as lines."""
    out: dict[str, list[str]] = {}
    current = None
    for line in report.splitlines():
        if line.startswith("## "):
            current = line[3:].split(" (")[0].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def blocks_of(lines: list[str], prefix: str) -> list[list[str]]:
    """Runs of consecutive lines that start with ``prefix`` (tables: ``|``, lists: ``- ``)."""
    found: list[list[str]] = []
    run: list[str] = []
    for line in [*lines, ""]:
        if line.startswith(prefix):
            run.append(line)
        elif run:
            found.append(run)
            run = []
    return found


def excerpt(report_md: Path, name: str, wanted: list[str], plot: str | None, doc: Path, img_dir: Path) -> str:
    """The generated body of one block."""
    text = report_md.read_text(encoding="utf-8")
    found = sections(text)
    status = re.search(r"(\d+) of (\d+) runs finished", text)
    hours = re.search(r"([\d.]+) h of run time", text)
    generated = re.search(r"generated (\S+)", text)
    machines = re.search(r"^Machines: (.*?)\.?$", text, re.M)
    parts = [
        f"*From `{name}/report.md` (`loralab study report`): "
        f"{status.group(0) if status else 'runs finished: unknown'}"
        f"{f', {hours.group(1)} h of run time' if hours else ''}, "
        f"report generated {generated.group(1) if generated else 'at an unknown time'}."
        f"{f' Machines: {machines.group(1)}.' if machines else ''}*"
    ]
    for section in wanted:
        if section not in HEADINGS:
            raise SyncError(f"{doc}: unknown section {section!r} for {name} (choose from {', '.join(HEADINGS)})")
        lines = found.get(HEADINGS[section])
        if lines is None:
            continue  # e.g. no pairs that differ in one option
        if section == "findings":
            chunk = blocks_of(lines, "- ")
        else:
            tables = blocks_of(lines, "|")
            index = 1 if section == "costs" else 0
            chunk = tables[index : index + 1]
        if chunk:
            parts.append("\n".join(chunk[0]))
    if plot:
        src = report_md.parent / "plots" / f"{plot}.png"
        if not src.is_file():
            raise SyncError(f"{report_md}: no figure plots/{plot}.png")
        img_dir.mkdir(parents=True, exist_ok=True)
        dest = img_dir / f"{name}-{plot.replace('_', '-')}.png"
        shutil.copyfile(src, dest)
        rel = Path(os.path.relpath(dest.resolve(), doc.parent.resolve())).as_posix()
        parts.append(f"![{name}: {plot.replace('_', ' ')}]({rel})")
    return "\n\n".join(parts) + "\n"


def report_of(studies: Path, name: str, scratch: Path | None) -> Path:
    """``STUDIES/NAME/report.md``; else, with ``STUDIES/NAME.tar.xz`` and a ``scratch`` folder, the
    report built from the unpacked archive (``loralab study unpack`` + ``study report``)."""
    report_md = studies / name / "report.md"
    archive = studies / f"{name}.tar.xz"
    if report_md.is_file() or scratch is None or not archive.is_file():
        return report_md
    from loralab.study.pack import unpack_study
    from loralab.study.report import build

    folder = scratch / name
    if not (folder / "report.md").is_file():
        build(unpack_study(archive, folder))
    return folder / "report.md"


def sync(
    doc: Path, studies: Path, img_dir: Path, strict: bool = False, scratch: Path | None = None
) -> tuple[int, list[str]]:
    """Rewrite every block of ``doc``; returns (blocks rewritten, study names without a report).
    ``scratch``: where archived studies are unpacked (:func:`report_of`)."""
    text = doc.read_text(encoding="utf-8")
    missing: list[str] = []
    count = 0

    def replace(m: re.Match) -> str:
        nonlocal count
        name, opts = m.group("name"), dict(re.findall(r"(\w+)=(\S+)", m.group("opts")))
        unknown = set(opts) - {"sections", "plot"}
        if unknown:
            raise SyncError(f"{doc}: unknown option {sorted(unknown)[0]!r} in the {name} marker")
        report_md = report_of(studies, name, scratch)
        if not report_md.is_file():
            missing.append(name)
            return m.group(0)
        count += 1
        wanted = opts.get("sections", "cells,baseline").split(",")
        body = excerpt(report_md, name, wanted, opts.get("plot"), doc, img_dir)
        return m.group("open") + body + m.group("close")

    new = BLOCK.sub(replace, text)
    if missing and strict:
        raise SyncError(f"{doc}: no report.md under {studies} for {', '.join(missing)}")
    if new != text:
        tmp = doc.with_name(doc.name + ".tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(doc)  # atomic: a killed sync leaves the old file, never half of one
    return count, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("docs", nargs="+", type=Path, help="Markdown files with study-excerpt blocks")
    parser.add_argument("--studies", type=Path, required=True, help="the folder holding the study folders")
    parser.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img", help="where figures are copied")
    parser.add_argument("--strict", action="store_true", help="fail when a block's study has no report")
    args = parser.parse_args(argv)
    import tempfile

    from loralab.errors import LoralabError

    try:
        with tempfile.TemporaryDirectory(prefix="sync-docs-") as scratch:
            for doc in args.docs:
                if not doc.is_file():
                    raise SyncError(f"{doc}: no such file")
                n, missing = sync(doc, args.studies, args.img_dir, args.strict, Path(scratch))
                note = f"; left as they were (no report yet): {', '.join(missing)}" if missing else ""
                print(f"{doc}: {n} block(s) rewritten{note}", file=sys.stderr if missing else sys.stdout)
    except (SyncError, LoralabError) as exc:
        print(f"sync_docs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
