"""Trading calendars: which bar times a market trades, so a closure is not a gap.

A bar series is consecutive in *trading* time: the bar after a weekend, a holiday or the
overnight close follows the last bar before it with no bar missing. ``TradingCalendar`` maps
bar open times to their *trading-bar ordinal* (the number of bars the calendar's sessions hold
before it), so the number of expected trading bars between two stamps is a difference of
ordinals: 1 for consecutive bars, ``k > 1`` for ``k - 1`` bars missing inside sessions (a real
gap, handled by the gap policy). Everything that counts gaps (``features.candles.find_gaps``
and its callers: training samples, warm-up, purge and embargo, ``MlPrediction``, the engine,
the backtest counts) counts through the calendar it is given.

Calendars, by name (``--calendar`` / ``calendar=``; recorded in ``metadata.json`` as
``calendar``, absent meaning ``"24/7"``):

* ``"24/7"`` (the default, crypto): every bar time trades; today's rule (``step / timeframe``).
* ``"weekdays"``: Monday to Friday, whole UTC days (no dependency).
* an exchange code such as ``"XNYS"``, ``"XLON"``, ``"CMES"``: the sessions of the
  ``exchange_calendars`` library (install ``atb-strategies[calendar]``), with holidays, early
  closes and session times in UTC.
* ``"csv:PATH"``: custom sessions, a CSV file with ``open`` and ``close`` columns (UTC
  timestamps, one row per session).

Bars inside a session: daily (``1d``) bars are one per session, stamped on the session's date;
intraday bars are ``ceil(session length / timeframe)`` per session, stamped ``open + k *
timeframe`` (UTC, as every stamp in this project). A bar outside every session is an error
naming the bar. A lunch break (Hong Kong, Tokyo) is a closure too.

Everything here is vectorised: one ``searchsorted`` over the stamps, no per-bar Python loop.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from atb_strategies.exceptions import CandleDataError, ConfigurationError

ALWAYS_OPEN = "24/7"
WEEKDAYS = "weekdays"
_DAY = 86_400 * 10**9
_HALF_DAY = _DAY // 2
OUTSIDE = -1
OFF_GRID = -2
#: Exchange calendars tried, in order, when gaps look like closures (``suggest_calendar``).
SUGGESTED_EXCHANGES = ("XNYS", "XLON", "XETR", "CMES", "XTKS")


def _timeframe_ns(timeframe: str) -> int:
    from atb_strategies.features.candles import timeframe_to_timedelta

    return int(timeframe_to_timedelta(timeframe).value)


@dataclass(frozen=True)
class Sessions:
    """Sessions as sorted int64 nanosecond arrays (UTC): the session dates (midnight; one per
    session, for daily bars), and the opens and closes of the trading periods (intraday bars;
    a session with a lunch break is two periods)."""

    dates: np.ndarray
    opens: np.ndarray
    closes: np.ndarray


class TradingCalendar:
    """A market's trading sessions, by name (see the module docstring).

    Parameters
    ----------
    name : str
        ``"24/7"``, ``"weekdays"``, an exchange code (``"XNYS"``) or ``"csv:PATH"``.
    """

    def __init__(self, name: str, sessions: Callable[[int, int], Sessions] | None) -> None:
        self.name = name
        self._sessions = sessions

    @property
    def always_open(self) -> bool:
        return self._sessions is None

    def __repr__(self) -> str:
        return f"TradingCalendar({self.name!r})"

    def sessions(self, first_ns: int, last_ns: int) -> Sessions:
        """The sessions from the day before ``first_ns`` to the day after ``last_ns``."""
        assert self._sessions is not None
        lo = (int(first_ns) // _DAY - 1) * _DAY
        hi = (int(last_ns) // _DAY + 1) * _DAY
        return self._sessions(lo, hi)

    def ordinals(self, stamps: np.ndarray, timeframe: str, *, stamped: str = "open") -> np.ndarray:
        """The trading-bar ordinal of each stamp (int64 ns); ``OUTSIDE`` (-1) for a bar outside
        the sessions, ``OFF_GRID`` (-2) for an intraday bar inside one but not ``open + k *
        timeframe``.

        ``stamped="close"``: the stamps are bar close times (backtrader's), open + timeframe.
        Ordinals count from the first session loaded for the stamps' span, so they compare
        within one call only (``bar_steps`` takes their differences).
        """
        stamps = np.asarray(stamps, dtype=np.int64)
        tf = _timeframe_ns(timeframe)
        opens = stamps - tf if stamped == "close" else stamps
        if self._sessions is None:
            return opens // tf
        if not len(stamps):
            return np.zeros(0, dtype=np.int64)
        s = self.sessions(int(opens.min()), int(opens.max()))
        if tf >= _DAY:
            if tf != _DAY:
                raise ConfigurationError(
                    f"Calendar {self.name!r} counts intraday and 1d bars; got timeframe "
                    f"{timeframe!r}. Use calendar='24/7' for weekly bars."
                )
            # a daily bar is its session's date (stamped at midnight, or backtrader's session
            # end of that date: the nearest midnight of open time)
            day = ((opens + _HALF_DAY) // _DAY) * _DAY if stamped == "close" else opens
            day = (day // _DAY) * _DAY
            pos = np.searchsorted(s.dates, day)
            inside = (pos < len(s.dates)) & (s.dates[np.minimum(pos, len(s.dates) - 1)] == day)
            return np.where(inside, pos, OUTSIDE).astype(np.int64)
        per_session = -((s.opens - s.closes) // tf)  # ceil(length / tf)
        before = np.concatenate(([0], np.cumsum(per_session)[:-1]))
        pos = np.searchsorted(s.opens, opens, side="right") - 1
        safe = np.maximum(pos, 0)
        inside = (pos >= 0) & (opens < s.closes[safe])
        offset = opens - s.opens[safe]
        ordinal = np.where(inside, before[safe] + offset // tf, OUTSIDE)
        return np.where(inside & (offset % tf != 0), OFF_GRID, ordinal).astype(np.int64)

    def bar_steps(
        self,
        stamps: np.ndarray,
        timeframe: str,
        *,
        what: str,
        label: Callable[[int], str],
        previous: int | None = None,
        stamped: str = "open",
    ) -> np.ndarray:
        """Expected trading bars between each stamp and the one before (``previous`` for the
        first, when given; else ``len(stamps) - 1`` steps): 1 = consecutive, ``k > 1`` = a gap
        of ``k - 1`` bars inside sessions.

        Raises
        ------
        CandleDataError
            A bar outside the calendar's sessions, naming it, the calendar and the fix.
        """
        stamps = np.asarray(stamps, dtype=np.int64)
        both = stamps if previous is None else np.concatenate(([np.int64(previous)], stamps))
        ordinal = self.ordinals(both, timeframe, stamped=stamped)
        own = ordinal if previous is None else ordinal[1:]
        bad = own < 0
        if bad.any():
            pos = int(np.argmax(bad))
            where = (
                "falls outside the sessions of"
                if own[pos] == OUTSIDE
                else f"is not on the {timeframe} bar grid from the session open of"
            )
            raise CandleDataError(
                f"{what}: {label(pos)} {where} calendar {self.name!r} (timestamps are UTC bar "
                f"{'close times, open + timeframe' if stamped == 'close' else 'open times'}). "
                "Drop bars outside the market's sessions, convert the times to "
                "UTC (tz='America/New_York' reads local times), or train the model with the "
                "feed's own calendar.",
                row=pd.Timestamp(int(stamps[pos])),
            )
        if previous is not None and ordinal[0] < 0:
            ordinal = ordinal.copy()
            ordinal[0] = ordinal[1] - 1  # an unplaceable previous bar: no gap reported for it
        return np.diff(ordinal)


@functools.lru_cache(maxsize=32)
def _weekday_sessions(lo: int, hi: int) -> Sessions:
    dates = pd.bdate_range(pd.Timestamp(lo), pd.Timestamp(hi)).as_unit("ns").asi8
    return Sessions(dates, dates, dates + _DAY)


def _exchange_sessions(code: str) -> Callable[[int, int], Sessions]:
    try:
        import exchange_calendars as xcals
    except ImportError as e:
        raise ConfigurationError(
            f"Calendar {code!r} needs the exchange_calendars library: pip install "
            "'atb-strategies[calendar]' (or use calendar '24/7', 'weekdays' or 'csv:PATH')."
        ) from e
    if code not in xcals.get_calendar_names():
        raise ConfigurationError(
            f"Calendar {code!r} is not known: use '24/7', 'weekdays', 'csv:PATH' or an exchange "
            "code of exchange_calendars such as 'XNYS', 'XLON', 'CMES' "
            "(exchange_calendars.get_calendar_names() lists them)."
        )

    @functools.lru_cache(maxsize=16)
    def by_years(first_year: int, last_year: int) -> Sessions:
        try:
            with warnings.catch_warnings():  # the library's own pandas deprecation notices
                warnings.simplefilter("ignore")
                cal = xcals.get_calendar(
                    code, start=f"{first_year}-01-01", end=f"{last_year}-12-31"
                )
                sched = cal.schedule
        except (ValueError, xcals.errors.CalendarError) as e:
            raise ConfigurationError(
                f"Calendar {code!r} cannot cover {first_year}..{last_year}: {e}"
            ) from e
        opens, closes = _utc_ns(sched["open"]), _utc_ns(sched["close"])
        lunch = sched["break_start"].notna().to_numpy()
        if lunch.any():  # morning and afternoon are two periods; the break is no gap
            morning_close = np.where(lunch, _utc_ns(sched["break_start"]), closes)
            opens = np.concatenate([opens, _utc_ns(sched["break_end"])[lunch]])
            closes = np.concatenate([morning_close, closes[lunch]])
            order = np.argsort(opens, kind="stable")
            opens, closes = opens[order], closes[order]
        return Sessions(sched.index.as_unit("ns").asi8, opens, closes)

    def sessions(lo: int, hi: int) -> Sessions:
        # whole years, so a stream of bars asks for the same few ranges (cached)
        return by_years(pd.Timestamp(lo).year, pd.Timestamp(hi).year)

    return sessions


def _utc_ns(column: pd.Series) -> np.ndarray:
    """A UTC datetime column as int64 nanoseconds (NaT as the int64 minimum)."""
    return column.dt.tz_convert(None).astype("datetime64[ns]").to_numpy().view(np.int64)


def _csv_sessions(path: Path) -> Callable[[int, int], Sessions]:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"Calendar file {path} cannot be read: {e}") from e
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if not {"open", "close"} <= set(frame.columns) or not len(frame):
        raise ConfigurationError(
            f"Calendar file {path} needs 'open' and 'close' columns (UTC session times, one row "
            f"per session); it has {list(frame.columns)}."
        )
    try:
        opens = pd.to_datetime(frame["open"], utc=True).dt.tz_convert(None)
        closes = pd.to_datetime(frame["close"], utc=True).dt.tz_convert(None)
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"Calendar file {path}: session times unreadable: {e}") from e
    o = opens.astype("datetime64[ns]").to_numpy().view(np.int64)
    c = closes.astype("datetime64[ns]").to_numpy().view(np.int64)
    if (c <= o).any() or (np.diff(o) <= 0).any() or (o[1:] < c[:-1]).any():
        raise ConfigurationError(
            f"Calendar file {path}: sessions must be sorted, non-overlapping and close after "
            "they open."
        )
    whole = Sessions((o // _DAY) * _DAY, o, c)
    return lambda lo, hi: whole


@functools.lru_cache(maxsize=32)
def get_calendar(name: str | None) -> TradingCalendar:
    """The calendar called ``name`` (None: ``"24/7"``).

    Raises
    ------
    ConfigurationError
        An unknown name, or an exchange calendar without ``exchange_calendars`` installed.
    """
    if name is None or name == ALWAYS_OPEN:
        return TradingCalendar(ALWAYS_OPEN, None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(
            f"A calendar must be '24/7', 'weekdays', an exchange code such as 'XNYS' or "
            f"'csv:PATH'. Got {name!r} instead."
        )
    if name == WEEKDAYS:
        return TradingCalendar(WEEKDAYS, _weekday_sessions)
    if name.startswith("csv:"):
        path = Path(name[4:]).expanduser().resolve()  # recorded absolute in the bundle
        return TradingCalendar(f"csv:{path}", _csv_sessions(path))
    return TradingCalendar(name, _exchange_sessions(name))


def bundle_calendar(metadata: object) -> TradingCalendar:
    """The calendar a bundle's ``metadata.json`` records (``calendar``; absent: ``"24/7"``)."""
    raw = getattr(metadata, "raw", metadata)
    name = raw.get("calendar") if hasattr(raw, "get") else None
    return get_calendar(name)


def suggest_calendar(stamps: np.ndarray, timeframe: str, *, stamped: str = "open") -> str | None:
    """The ``--calendar`` that explains the gaps of ``stamps`` (bar open times, int64 ns; or
    close times with ``stamped="close"``) as closures, in one line, or None when none does (or
    there are few gaps).

    A candidate fits when every bar lies inside its sessions and it leaves at most a fifth of
    the gaps ``24/7`` sees: ``weekdays`` (no dependency), then the exchanges of
    ``SUGGESTED_EXCHANGES`` when ``exchange_calendars`` is installed; the one leaving the fewest
    gaps is named, ``weekdays`` as the alternative when it fits too.
    """
    stamps = np.asarray(stamps, dtype=np.int64)
    if len(stamps) < 3:
        return None
    tf = _timeframe_ns(timeframe)
    plain = int((np.diff(stamps) > tf).sum())
    if plain < 2:
        return None
    fits: dict[str, int] = {}
    names = [WEEKDAYS]
    try:
        import exchange_calendars  # noqa: F401

        names += list(SUGGESTED_EXCHANGES)
    except ImportError:
        pass
    for name in names:
        try:
            ordinal = get_calendar(name).ordinals(stamps, timeframe, stamped=stamped)
        except ConfigurationError:
            continue
        if (ordinal < 0).any():
            continue
        left = int((np.diff(ordinal) > 1).sum())
        if left <= plain // 5:
            fits[name] = left
    if not fits:
        return None
    best = min(fits, key=lambda n: (fits[n], n != WEEKDAYS))
    kind = "nights, weekends and holidays" if tf < _DAY else "weekends and holidays"
    if best == WEEKDAYS:
        rest = f", which leaves {fits[best]} gap(s)" if fits[best] else ""
        return f"the {plain} gaps are mostly weekends: pass calendar='weekdays'{rest}"
    alt = ""
    if WEEKDAYS in fits:
        alt = f" (or calendar='weekdays', which leaves {fits[WEEKDAYS]} holiday gap(s))"
    return f"the {plain} gaps are the {kind} of {best}: pass calendar='{best}'{alt}"


def silent_warmup_message(
    key: str,
    *,
    bars: int,
    skipped: int,
    gaps: int,
    calendar: str,
    min_bars: int,
    hint: str | None = None,
) -> str:
    """The one warning of an ``MlPrediction`` that made no prediction for ``bars`` bars after
    its warm-up: why, and the fix."""
    if skipped:
        why = (
            f"{skipped} bar(s) skipped because their {min_bars} rows span one of {gaps} gap(s) "
            f"in the feed under calendar {calendar!r}"
        )
        fix = (
            f"{hint} when training the model (atb train model --calendar; the bundle records it)"
            if hint
            else "if the gaps are market closures, train the model with the market's calendar "
            "(atb train model --calendar XNYS, or weekdays; the bundle records it), else fill "
            "the missing candles"
        ) + "; gap_policy='allow' treats the bars either side of a gap as consecutive"
    else:
        why = "the model returned no finite prediction"
        fix = "check the model's outputs and the feed's prices"
    return (
        f"MlPrediction({key}): no prediction in the {bars} bars after the warm-up: {why}. "
        f"Strategies will not trade: {fix}."
    )
