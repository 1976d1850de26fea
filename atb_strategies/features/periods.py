"""How many bars a trading day, a trading week and a trading year hold, per calendar.

Recipes size their windows in bars (``training.recipes``: a day of realised volatility, a week
of volume) and backtests annualise per bar (``backtest.runner``). On a 24/7 market a day of
``1h`` bars is 24 bars; on a market that closes it is a session's bars (``XNYS`` ``5m``: 78),
and a daily bar is one session. Counts come from the calendar's own sessions over one sample
year (2024, or the whole file of a ``csv:`` calendar), so holidays and early closes are in them.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from atb_strategies.features.calendar import TradingCalendar, get_calendar

_DAY = pd.Timedelta(days=1)
_SAMPLE = (pd.Timestamp("2024-01-01"), pd.Timestamp("2025-01-01"))


def _timeframe(timeframe: str) -> pd.Timedelta:
    from atb_strategies.features.candles import timeframe_to_timedelta

    return timeframe_to_timedelta(timeframe)


@functools.lru_cache(maxsize=64)
def _counts(name: str, timeframe: str) -> tuple[float, float]:
    """``(bars per year, sessions per year)`` of calendar ``name`` at ``timeframe``."""
    calendar = get_calendar(name)
    tf = _timeframe(timeframe)
    if calendar.always_open:
        return pd.Timedelta(days=365) / tf, 365.0
    lo, hi = (int(t.value) for t in _SAMPLE)
    sessions = calendar.sessions(lo, hi - 1)
    inside = (sessions.dates >= lo) & (sessions.dates < hi)
    keep = (sessions.opens >= lo) & (sessions.opens < hi)
    years = 1.0
    if inside.sum() < 20:  # a csv: calendar outside the sample year: its whole span
        inside = np.ones(len(sessions.dates), dtype=bool)
        keep = np.ones(len(sessions.opens), dtype=bool)
        span = (sessions.dates[-1] - sessions.dates[0]) / _DAY.value + 1 if inside.any() else 0
        years = max(span / 365.25, 1 / 365.25)
    n_sessions = float(inside.sum()) / years
    if tf >= _DAY:
        return n_sessions * (_DAY / tf), n_sessions
    length = sessions.closes[keep] - sessions.opens[keep]
    bars = float(np.ceil(length / tf.value).sum()) / years
    return bars, n_sessions


def _name(calendar: TradingCalendar | str | None) -> str:
    if isinstance(calendar, TradingCalendar):
        return calendar.name
    return get_calendar(calendar).name


def bars_per_year(calendar: TradingCalendar | str | None, timeframe: str) -> float:
    """Trading bars in a year (24/7: the bars in 365 days, as before calendars existed)."""
    return _counts(_name(calendar), timeframe)[0]


def bars_per_day(calendar: TradingCalendar | str | None, timeframe: str) -> int:
    """Bars in one trading day, at least 1: 24 for ``1h`` on 24/7, 78 for ``5m`` on XNYS."""
    bars, sessions = _counts(_name(calendar), timeframe)
    return max(1, round(bars / sessions))


def sessions_per_week(calendar: TradingCalendar | str | None) -> int:
    """Trading days in a week: 7 on 24/7, 5 for an exchange or ``weekdays``."""
    sessions = _counts(_name(calendar), "1d")[1]
    return max(1, round(sessions * 7 / 365.25))


def bars_per_week(calendar: TradingCalendar | str | None, timeframe: str) -> int:
    """Bars in one trading week: 168 for ``1h`` on 24/7, 390 for ``5m`` on XNYS, 5 for ``1d``."""
    if _timeframe(timeframe) < _DAY:
        return sessions_per_week(calendar) * bars_per_day(calendar, timeframe)
    bars, sessions = _counts(_name(calendar), timeframe)
    return max(1, round(bars / sessions * sessions_per_week(calendar)))
