"""Progress for terminals and for job logs.

A progress bar redraws itself with carriage returns: right in a terminal, but in a cluster job's log (a
file, not a TTY) every redraw is kept, and a log becomes thousands of ``\\r`` frames. So where stderr
is not a terminal, :func:`progress_bar` logs one plain line every ``every`` units (and at the end)
instead, with the same calls as the bar.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("splitbench.progress")


def is_terminal() -> bool:
    return sys.stderr.isatty()


class LineProgress:
    """tqdm's ``update``/``set_postfix``/``close``, written as one log line per ``every`` units."""

    def __init__(self, total: int | None, desc: str, every: int, initial: int = 0, unit: str = "it") -> None:
        self.total, self.desc, self.every, self.unit = total, desc, max(1, every), unit
        self.n = self.logged = initial
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n - self.logged >= self.every:
            self._line()

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = False, **more: Any) -> None:
        self.postfix = {**(values or {}), **more}

    def close(self) -> None:
        if self.n > self.logged:
            self._line()

    def _line(self) -> None:
        self.logged = self.n
        of = f"/{self.total}" if self.total else ""
        rate = self.n / max(time.perf_counter() - self.start, 1e-9)
        values = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
        log.info("%s %d%s %s (%.1f %s/s)  %s", self.desc, self.n, of, self.unit, rate, self.unit, values)


def progress_bar(total: int | None, desc: str, *, enabled: bool, every: int, initial: int = 0,
                 unit: str = "it") -> Any:
    """A tqdm bar in a terminal, :class:`LineProgress` elsewhere, a silent bar when not ``enabled``."""
    if enabled and not is_terminal():
        return LineProgress(total, desc, every, initial, unit)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, unit=unit,
                dynamic_ncols=True)
