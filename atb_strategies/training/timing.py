"""Seconds spent in the timed training stages (``metrics.json`` ``timings``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Stage durations in ``timings`` (insertion order), plus the total since creation."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def measure(self, key: str) -> Iterator[None]:
        """Record the seconds spent in the ``with`` block as ``timings[key]`` (if it succeeds)."""
        t0 = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - t0

    def finish(self) -> dict[str, float]:
        """Record ``total_seconds`` (since creation) and return ``timings``."""
        self.timings["total_seconds"] = time.perf_counter() - self._start
        return self.timings
