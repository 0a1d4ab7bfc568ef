"""The progress of an epoch's steps: a tqdm bar on a terminal, plain log lines anywhere else."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


def progress_bar(total: int, done: int, desc: str, enabled: bool):
    """A tqdm bar on a terminal; elsewhere (a log file, a job scheduler) plain log lines; None
    when ``enabled`` is false."""
    if not enabled:
        return None
    if not sys.stderr.isatty():
        return LineProgress(total, done, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=desc, unit="step", dynamic_ncols=True, leave=False)


class LineProgress:
    """Progress as one log line every ``every`` seconds (and at the end), for output that is not a
    terminal: no carriage returns in log files. The same calls as the tqdm bar it replaces."""

    def __init__(self, total: int, done: int, desc: str, every: float = 30.0) -> None:
        self.total, self.n, self.desc, self.every = total, done, desc, every
        self.start_n, self.t0 = done, time.perf_counter()
        self.last, self.postfix = self.t0, ""

    def set_postfix(self, refresh: bool = False, **values) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)
        left = (self.total - self.n) / rate if rate > 0 else 0.0
        log.info(
            "%s: step %d/%d (%d%%)%s, %.1f steps/s, %d:%02d left",
            self.desc,
            self.n,
            self.total,
            100 * self.n // max(self.total, 1),
            f", {self.postfix}" if self.postfix else "",
            rate,
            int(left) // 60,
            int(left) % 60,
        )

    def close(self) -> None:
        if self.n > self.start_n:  # one closing line per epoch
            self._line(time.perf_counter())
