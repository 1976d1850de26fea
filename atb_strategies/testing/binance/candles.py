"""Candles: Binance intervals, seeded synthetic candles and the book the server serves them from.

:class:`CandleBook` keeps the base candles as numpy arrays. Inside each base candle the price
follows a deterministic path through four points at 0, 1/3, 2/3 and 1 of the candle: open, low,
high, close for a rising candle and open, high, low, close for a falling one. The candle
containing "now" is revealed partially, and ``/klines`` intervals that are multiples of the base
timeframe are aggregated (aligned to the UTC epoch, weeks to Monday).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.testing.binance.protocol import fmt

__all__ = [
    "PATH_FRACTIONS",
    "CandleBook",
    "interval_open",
    "interval_to_ms",
    "next_close",
    "synthetic_candles",
]

_VALID_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_WEEK_MS = _UNIT_MS["w"]
_MONDAY_OFFSET_MS = 4 * _UNIT_MS["d"]  # 1970-01-01 was a Thursday; Binance weeks start Monday

#: Where the four points of the intra-candle price path sit, as fractions of the candle.
PATH_FRACTIONS = np.array([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0])


def interval_to_ms(interval: str) -> int | None:
    """Length of a Binance kline interval in milliseconds.

    Parameters
    ----------
    interval : str
        A Binance interval such as ``"1m"``, ``"4h"`` or ``"1w"``.

    Returns
    -------
    int or None
        The length, or None for ``"1M"`` (months have no fixed length) and for strings that
        are not Binance intervals.
    """
    if interval not in _VALID_INTERVALS or interval == "1M":
        return None
    return int(interval[:-1]) * _UNIT_MS[interval[-1]]


def interval_open(t_ms: int, interval_ms: int) -> int:
    """Open time of the ``interval_ms`` candle containing ``t_ms`` (UTC epoch, weeks Monday)."""
    offset = _MONDAY_OFFSET_MS if interval_ms % _WEEK_MS == 0 else 0
    return (t_ms - offset) // interval_ms * interval_ms + offset


def next_close(t_ms: int, interval_ms: int) -> int:
    """The first ``interval_ms`` candle close strictly after ``t_ms``."""
    return interval_open(t_ms, interval_ms) + interval_ms


def synthetic_candles(
    periods: int = 2880,
    *,
    timeframe: str = "1m",
    start: str = "2024-01-01",
    seed: int = 0,
    price: float = 30000.0,
) -> pd.DataFrame:
    """Seeded synthetic OHLCV candles indexed by (tz-naive UTC) open time.

    A thin wrapper over :func:`atb_strategies.data.synthetic.generate_ohlcv`, the project's one
    synthetic candle generator, with the server's defaults (one-minute candles).

    Parameters
    ----------
    periods : int
        Number of candles.
    timeframe : str
        Binance interval of each candle, one minute or longer.
    start : str
        Open time of the first candle.
    seed : int
        Random seed; the same arguments always give the same frame.
    price : float
        First open price.

    Returns
    -------
    pandas.DataFrame
        Columns ``open, high, low, close, volume``.
    """
    step = interval_to_ms(timeframe)
    if step is None:
        raise ValueError(f"timeframe must be a fixed-length Binance interval. Got {timeframe!r}.")
    if step % _UNIT_MS["m"]:
        raise ValueError(f"timeframe must be one minute or longer. Got {timeframe!r}.")
    frame = generate_ohlcv(
        max(periods, 2), timeframe=timeframe, seed=seed, start=start, start_price=price
    )
    return frame.iloc[:periods] if periods < 2 else frame


class CandleBook:
    """Base candles as numpy arrays, the intra-candle price path, and kline aggregation.

    Parameters
    ----------
    frame : pandas.DataFrame
        OHLCV candles indexed by open time (naive = UTC), strictly increasing, no NaN.
    timeframe : str, optional
        Base interval; inferred from the smallest index step when None.

    Attributes
    ----------
    tf : int
        Base interval in milliseconds.
    ts : numpy.ndarray
        Candle open times in epoch milliseconds.
    o, h, l, c, v : numpy.ndarray
        Open, high, low, close and volume.
    tick : float
        Forming-candle prices are snapped to this tick when non-zero.
    """

    def __init__(self, frame: pd.DataFrame, timeframe: str | None) -> None:
        if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex):
            raise ValueError(
                "candles must be a pandas DataFrame with a DatetimeIndex of candle open times."
            )
        if frame.empty:
            raise ValueError("candles is empty; pass at least one candle or None.")
        columns = {str(c).lower(): c for c in frame.columns}
        missing = [c for c in ("open", "high", "low", "close", "volume") if c not in columns]
        if missing:
            raise ValueError(
                f"candles lacks columns {missing}; expected open, high, low, close, "
                f"volume. Got {list(frame.columns)}."
            )
        index = frame.index
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        ts = ((index - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1)).to_numpy(np.int64)
        if len(ts) > 1 and not bool(np.all(np.diff(ts) > 0)):
            raise ValueError("candles index must be strictly increasing (no duplicates).")
        if timeframe is not None:
            step = interval_to_ms(timeframe)
            if step is None:
                raise ValueError(
                    f"timeframe must be a fixed-length Binance interval such as "
                    f"'1m' or '1h'. Got {timeframe!r} instead."
                )
        elif len(ts) > 1:
            step = int(np.diff(ts).min())
        else:
            raise ValueError("A single candle does not reveal its timeframe; pass timeframe=.")
        self.tf = step
        self.ts = ts
        self.tick = 0.0  # forming-candle prices are snapped to this tick when set
        values = {
            name: frame[columns[name]].to_numpy(np.float64)
            for name in ("open", "high", "low", "close", "volume")
        }
        if any(bool(np.isnan(v).any()) for v in values.values()):
            raise ValueError("candles contain NaN values.")
        self.o, self.h, self.l, self.c, self.v = (
            values["open"],
            values["high"],
            values["low"],
            values["close"],
            values["volume"],
        )

    @property
    def first_open(self) -> int:
        """Open time of the first candle (epoch ms)."""
        return int(self.ts[0])

    @property
    def end(self) -> int:
        """Close time of the last candle (epoch ms)."""
        return int(self.ts[-1]) + self.tf

    def _path(self, i: int) -> np.ndarray:
        o, h, lo, c = self.o[i], self.h[i], self.l[i], self.c[i]
        return np.array([o, lo, h, c] if c >= o else [o, h, lo, c])

    def _snap(self, price: float) -> float:
        return round(round(price / self.tick) * self.tick, 10) if self.tick else price

    def _partial(self, i: int, now: int) -> tuple[float, float, float, float, float]:
        progress = min(max((now - int(self.ts[i])) / self.tf, 0.0), 1.0)
        path = self._path(i)
        close = self._snap(float(np.interp(progress, PATH_FRACTIONS, path)))
        seen = path[progress >= PATH_FRACTIONS]
        high = max(float(seen.max()), close)
        low = min(float(seen.min()), close)
        return float(self.o[i]), high, low, close, float(self.v[i]) * progress

    def has_open_in(self, start: int, stop: int) -> bool:
        """Whether a base candle opens in ``[start, stop)`` (epoch ms)."""
        first, end = np.searchsorted(self.ts, [start, stop], side="left")
        return bool(first < end)

    def price_at(self, now: int) -> float | None:
        """Path price at ``now``; the last close after the data, None before it."""
        i = int(np.searchsorted(self.ts, now, side="right")) - 1
        if i < 0:
            return None
        if now < int(self.ts[i]) + self.tf:
            return self._partial(i, now)[3]
        return float(self.c[i])

    def segments(self, t_a: int, t_b: int) -> Iterator[tuple[float, float, float, float]]:
        """Linear pieces ``(t0, p0, t1, p1)`` of the price path over ``(t_a, t_b]``."""
        first = max(int(np.searchsorted(self.ts, t_a, side="right")) - 1, 0)
        last = int(np.searchsorted(self.ts, t_b, side="right")) - 1
        for i in range(first, last + 1):
            start = int(self.ts[i])
            if start > t_a and i > 0:
                yield float(start), float(self.c[i - 1]), float(start), float(self.o[i])
            path = self._path(i)
            times = start + PATH_FRACTIONS * self.tf
            for k in range(3):
                lo, hi = max(times[k], t_a), min(times[k + 1], t_b)
                if hi > lo:
                    span = times[k + 1] - times[k]
                    p_lo = path[k] + (path[k + 1] - path[k]) * (lo - times[k]) / span
                    p_hi = path[k] + (path[k + 1] - path[k]) * (hi - times[k]) / span
                    yield float(lo), float(p_lo), float(hi), float(p_hi)

    def klines(
        self, now: int, interval: int, start: int | None, end: int | None, limit: int
    ) -> list[list[Any]]:
        """Binance ``/klines`` rows of ``interval`` ms visible at ``now``.

        Parameters
        ----------
        now : int
            Market time; later candles are hidden and the one containing it is partial.
        interval : int
            Kline length in ms, a multiple of :attr:`tf`.
        start, end : int, optional
            ``startTime`` and ``endTime`` in epoch ms.
        limit : int
            Maximum number of rows (the first ones with ``start``, else the last ones).

        Returns
        -------
        list of list
            Binance's twelve-field kline rows, numbers as strings.
        """
        offset = _MONDAY_OFFSET_MS if interval % _WEEK_MS == 0 else 0

        def bucket(t: int) -> int:
            return interval_open(t, interval)

        n_visible = int(np.searchsorted(self.ts, now, side="right"))
        i0, i1 = 0, n_visible
        if end is not None:
            i1 = min(i1, int(np.searchsorted(self.ts, bucket(end) + interval, side="left")))
        if start is not None:
            first_bucket = bucket(start) if bucket(start) == start else bucket(start) + interval
            i0 = int(np.searchsorted(self.ts, first_bucket, side="left"))
            if i0 < i1:
                stop_t = bucket(int(self.ts[i0])) + limit * interval
                i1 = min(i1, int(np.searchsorted(self.ts, stop_t, side="left")))
        elif i1 > 0:
            lowest = bucket(int(self.ts[i1 - 1])) - (limit - 1) * interval
            i0 = max(i0, int(np.searchsorted(self.ts, lowest, side="left")))
        if i0 >= i1:
            return []
        ts = self.ts[i0:i1]
        o, h, lo, c, v = (a[i0:i1].copy() for a in (self.o, self.h, self.l, self.c, self.v))
        if int(ts[-1]) + self.tf > now:  # the base candle containing "now" is still forming
            o[-1], h[-1], lo[-1], c[-1], v[-1] = self._partial(i1 - 1, now)
        keys = (ts - offset) // interval * interval + offset
        starts = np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1))
        ends = np.concatenate((starts[1:], [len(ts)])) - 1
        typical = (h + lo + c) / 3.0
        rows = zip(
            keys[starts],
            o[starts],
            np.maximum.reduceat(h, starts),
            np.minimum.reduceat(lo, starts),
            c[ends],
            np.add.reduceat(v, starts),
            np.add.reduceat(v * typical, starts),
            ends - starts + 1,
            strict=True,
        )
        out = [
            [
                int(k),
                fmt(float(bo)),
                fmt(float(bh)),
                fmt(float(bl)),
                fmt(float(bc)),
                fmt(float(bv)),
                int(k) + interval - 1,
                fmt(float(qv)),
                int(n),
                fmt(float(bv) / 2.0),
                fmt(float(qv) / 2.0),
                "0",
            ]
            for k, bo, bh, bl, bc, bv, qv, n in rows
        ]
        return out[:limit] if start is not None else out[-limit:]
