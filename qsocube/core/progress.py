"""Progress lines on stderr: rates for long work, so a user sees it move."""

from __future__ import annotations

import sys
import time


def say(message: str) -> None:
    """One progress line on stderr, flushed."""
    print(message, file=sys.stderr, flush=True)


class Rate:
    """Reports 'done/total items, N/s' at most every ``every`` seconds."""

    def __init__(self, label: str, total: int, unit: str = "spectra", every: float = 2.0,
                 report=say) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.every, self.report = every, report
        self.start = self.last = time.perf_counter()
        self.done = 0

    def update(self, count: int, extra: str = "") -> None:
        self.done += count
        now = time.perf_counter()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            tail = f", {extra}" if extra else ""
            self.report(f"{self.label}: {self.done}/{self.total} {self.unit}, "
                        f"{rate:,.0f} {self.unit}/s{tail}")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
