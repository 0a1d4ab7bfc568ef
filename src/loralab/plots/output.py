"""How a figure leaves the plotting code: PNG bytes, an atomically written file, and the one scoped
use of pyplot (for libraries, like Optuna, that draw only through it)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from matplotlib.figure import Figure

from loralab.files import atomic_write_bytes


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 110) -> bytes:
    """The figure rendered to ``fmt`` (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path: Path, fmt: str, dpi: int = 120) -> None:
    """The figure written to ``path`` atomically (a reader never sees half a file)."""
    atomic_write_bytes(path, figure_bytes(fig, fmt, dpi))


@contextlib.contextmanager
def pyplot_scope() -> Iterator[ModuleType]:
    """pyplot on the Agg backend (no window, no display needed) for the duration of the block.

    On exit the figures opened inside the block are closed (also those of a view that failed half
    way), the previous backend is switched back, and the rcParams are restored (Optuna's
    ``plt.style.use("ggplot")`` does not leak into the caller's figures). The caller's own pyplot
    figures stay open. Inside the block, matplotlib's INFO line for every categorical axis whose
    values look numeric (Optuna's slice plot of a choice such as alpha 8, 16, ...) is not logged.
    """
    import matplotlib
    import matplotlib.pyplot as plt

    previous = matplotlib.get_backend()
    switch = previous.lower() != "agg"
    theirs = set(plt.get_fignums())
    category_log = logging.getLogger("matplotlib.category")
    level = category_log.level
    with matplotlib.rc_context():
        if switch:
            plt.switch_backend("agg")
        category_log.setLevel(max(level, logging.WARNING))
        try:
            yield plt
        finally:
            category_log.setLevel(level)
            for num in set(plt.get_fignums()) - theirs:
                plt.close(num)
            if switch:
                plt.switch_backend(previous)
