"""What a period's bounds mean, once for every command (download, train, backtest, sweep).

* ``start``: that instant (a bare date: its midnight, UTC).
* ``end``: a bare date (``2026-10-05``) means **the whole day**, up to its last instant; a date
  with a time (``2026-10-05T00:00``) means **exactly that instant**.

Times are UTC; a timezone-aware value is converted to UTC and made naive, like the candles.
"""

from __future__ import annotations

import re

import pandas as pd

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
