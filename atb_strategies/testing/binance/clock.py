"""The exchange's controllable market clock (epoch milliseconds, UTC)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = ["MarketClock", "to_ms"]


class MarketClock:
    """The exchange's controllable clock, in epoch milliseconds (UTC).

    Frozen by default: time moves only through :meth:`set_time` and :meth:`advance`. After
    ``set_speed(factor)`` it also runs at ``factor`` times wall-clock speed ("fast" mode; 1.0 is
    real time, 0.0 freezes it again).

    Parameters
    ----------
    start_ms : int
        Initial market time.
    speed : float
        Initial speed factor; 0.0 means frozen.

    Attributes
    ----------
    skew_ms : int
        Added to what ``GET /api/v3/time`` reports, but not to the clock the server validates
        signed ``timestamp`` values against. A client that syncs with the server
        (``adjustForTimeDifference``) while ``skew_ms`` exceeds its ``recvWindow`` (or 1000 ms
        ahead) gets ``-1021`` (ccxt ``InvalidNonce``).
    """

    def __init__(self, start_ms: int, speed: float = 0.0) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0. Got {speed!r} instead.")
        self._lock = threading.Lock()
        self._anchor_ms = int(start_ms)
        self._anchor_wall = time.monotonic()
        self._speed = float(speed)
        self._listeners: list[Callable[[], None]] = []
        self.skew_ms = 0

    @property
    def now_ms(self) -> int:
        """Current market time in epoch milliseconds."""
        with self._lock:
            return self._now_locked()

    @property
    def speed(self) -> float:
        """Market milliseconds per wall millisecond (0.0 when frozen)."""
        return self._speed

    def now(self) -> pd.Timestamp:
        """Current market time as a tz-aware UTC timestamp."""
        return pd.Timestamp(self.now_ms, unit="ms", tz="UTC")

    def set_time(self, ms: int | pd.Timestamp | str) -> None:
        """Jump to ``ms`` (epoch ms, or anything ``pandas.Timestamp`` accepts, naive = UTC)."""
        target = to_ms(ms)
        with self._lock:
            self._anchor_ms = target
            self._anchor_wall = time.monotonic()
        self._notify()

    def advance(self, ms: int | pd.Timedelta) -> int:
        """Move forward by ``ms`` milliseconds (or a Timedelta) and return the new time."""
        step = int(ms / pd.Timedelta(milliseconds=1)) if isinstance(ms, pd.Timedelta) else int(ms)
        if step < 0:
            raise ValueError(f"advance() moves forward only; use set_time(). Got {step} ms.")
        with self._lock:
            self._anchor_ms = self._now_locked() + step
            self._anchor_wall = time.monotonic()
            now = self._anchor_ms
        self._notify()
        return now

    def set_speed(self, factor: float) -> None:
        """Run at ``factor`` times wall speed from now on (0.0 freezes the clock)."""
        if factor < 0:
            raise ValueError(f"factor must be >= 0. Got {factor!r} instead.")
        with self._lock:
            self._anchor_ms = self._now_locked()
            self._anchor_wall = time.monotonic()
            self._speed = float(factor)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every :meth:`set_time` and :meth:`advance`."""
        self._listeners.append(callback)

    def _now_locked(self) -> int:
        if self._speed == 0.0:
            return self._anchor_ms
        return self._anchor_ms + int((time.monotonic() - self._anchor_wall) * 1000 * self._speed)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()


def to_ms(value: int | float | pd.Timestamp | str) -> int:
    """Epoch milliseconds of a number (taken as ms) or a timestamp (naive = UTC)."""
    if isinstance(value, int | float | np.integer):
        return int(value)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int((stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1))
