"""How the report is written down: a tiny document model rendered to Markdown and to
self-contained HTML, and the formatting of its numbers (percentages, p-values, intervals, sizes)."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from typing import Any

from loralab.evaluation.table import markdown_table


@dataclass
class Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        if rows:
            self.blocks.append(("table", (headers, rows)))

    def img(self, name: str, png: bytes, caption: str) -> None:
        self.images[name] = png
        self.blocks.append(("img", (name, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                out.append(markdown_table(*value))
            elif kind == "img":
                out.append(f"![{value[1]}](plots/{value[0]})\n\n*{value[1]}*")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{_inline(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{_inline(h)}</th>" for h in headers)
                rows_html = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(self.images[value[0]]).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(value[1])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline(value[1])}</figcaption></figure>"
                )
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title>\n<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
figure{margin:1em 0 2em}img{max-width:100%}figcaption{color:#555;font-size:.9em}h1{font-size:1.6em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}"""


def _inline(text: str) -> str:
    """HTML-escape, then `code` and **bold** spans."""
    s = html.escape(str(text))
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def value_of(v: Any) -> str:
    if v is None:
        return "default"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def csv_cell(x: Any) -> Any:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return round(x, 6) if isinstance(x, float) else x


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    if p < 1e-4:
        return "< 0.0001"
    return f"{p:.4f}" if p < 0.01 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def pct1(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def fmt_iv(iv, pct: bool = False) -> str:
    if iv.n == 0:
        return "–"
    k = 100 if pct else 1
    unit = "%" if pct else ""
    spec = "{:.1f}" if pct else "{:.3f}"
    text = spec.format(k * iv.mean) + unit
    if iv.n > 1:
        text += f" ± {spec.format(k * iv.std)} [{spec.format(k * iv.low)}, {spec.format(k * iv.high)}]"
    return text


def mean_std(iv) -> str:
    return f"{100 * iv.mean:.1f}%" + (f" ± {100 * iv.std:.1f} over {iv.n} seeds" if iv.n > 1 else " (1 seed)")


def pct_ci(iv) -> str:
    return f"[{100 * iv.low:.1f}, {100 * iv.high:.1f}]"


def fmt_num(x: float, spec: str) -> str:
    return "–" if x is None or math.isnan(x) else spec.format(x)


def count(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}k"
    return f"{n:,}"


def fmt_mb(mb: float) -> str:
    if mb is None or math.isnan(mb):
        return "–"
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"
