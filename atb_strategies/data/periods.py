"""What a period's bounds mean, once for every command (download, train, backtest, sweep).

* ``start``: that instant (a bare date: its midnight, UTC).
* ``end``: a bare date (``2026-10-05``) means **the whole day**, up to its last instant; a date
  with a time (``2026-10-05T00:00``) means **exactly that instant**.

Times are UTC; a timezone-aware value is converted to UTC and made naive, like the candles.
"""

from __future__ import annotations

import re

import pandas as pd

from atb_strategies.exceptions import CandleDataError, ConfigurationError

_BARE_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")


def naive_utc(value: str | pd.Timestamp) -> pd.Timestamp:
    """``value`` as a naive UTC timestamp."""
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def period_end(value: str | pd.Timestamp) -> pd.Timestamp:
    """The last instant an ``end`` bound includes (see the module docstring)."""
    stamp = naive_utc(value)
    if isinstance(value, str) and _BARE_DATE.match(value):
        return stamp + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    return stamp


def check_period(
    start: str | pd.Timestamp | None,
    end: str | pd.Timestamp | None,
    *,
    names: tuple[str, str] = ("start", "end"),
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """``start`` as an instant and ``end`` as its last instant (``period_end``), after checking
    that the period is not empty; ``names`` spell the two bounds in the message (parameter
    names in Python, ``("--start-date", "--end-date")`` in the CLI).

    Raises
    ------
    ConfigurationError
        When ``end`` comes before ``start``.
    """
    first = naive_utc(start) if start is not None else None
    last = period_end(end) if end is not None else None
    if first is not None and last is not None and last < first:
        raise ConfigurationError(
            f"{_named(names[1], end)} is before {_named(names[0], start)}: the period is empty. "
            "Swap the two dates or correct one of them."
        )
    return first, last


def check_period_in_data(
    index: pd.DatetimeIndex,
    start: str | pd.Timestamp | None,
    end: str | pd.Timestamp | None,
    *,
    what: str,
    names: tuple[str, str] = ("start", "end"),
) -> None:
    """Refuse a period that holds none of the candles of ``index`` (open times, sorted), naming
    the bound at fault and the range the candles cover.

    Raises
    ------
    ConfigurationError
        When the period is empty (see ``check_period``), ``start`` is after the last candle,
        ``end`` before the first, or no candle lies between them.
    CandleDataError
        When ``index`` is empty.
    """
    first, last = check_period(start, end, names=names)
    if not len(index):
        raise CandleDataError(f"{what} holds no candles.")
    covers = f"{what} covers {index[0]} .. {index[-1]}"
    if first is not None and first > index[-1]:
        raise ConfigurationError(
            f"{_named(names[0], start)} is after the last candle: {covers}. "
            "Give an earlier start or newer candles."
        )
    if last is not None and last < index[0]:
        raise ConfigurationError(
            f"{_named(names[1], end)} is before the first candle: {covers}. "
            "Give a later end or older candles."
        )
    lo = 0 if first is None else int(index.searchsorted(first))
    hi = len(index) if last is None else int(index.searchsorted(last, side="right"))
    if hi <= lo:
        raise ConfigurationError(
            f"No candle between {_named(names[0], start)} and {_named(names[1], end)} "
            f"(a gap in the data): {covers}. Choose a period with candles."
        )


def _named(name: str, value: object) -> str:
    """``--start-date 2024-01-01`` (a flag) or ``start='2024-01-01'`` (a parameter)."""
    return f"{name} {value}" if name.startswith("--") else f"{name}={str(value)!r}"
