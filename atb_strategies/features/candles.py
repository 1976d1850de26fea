"""The candle rules every layer shares: columns, timeframes, bar spacing and gaps.

``validate_candles`` checks a frame before any feature is computed from it. Every error names
the offending row (its timestamp and position) and column, and says what to do. Nothing is
repaired silently: NaN is not filled, duplicates are not dropped, unsorted rows are not sorted.

Spacing and gaps have one implementation, ``find_gaps`` + ``apply_gap_policy``, used by
``validate_candles``, the prediction engine and ``MlPrediction`` (batch and streaming) alike,
with one vocabulary (``GAP_POLICIES``) and one error type (``CandleDataError``; a bad policy
value is a ``ConfigurationError``). What a policy means for predictions:

* ``"skip"``: a prediction whose own rows (warm-up + window) span a gap is not made (NaN; a
  strategy holds) and is counted; the candles are otherwise used;
* ``"raise"``: a gap raises, naming the bar after it (the strict mode);
* ``"warn"``: log each gap and treat the bars either side as consecutive;
* ``"allow"``: the same, silently (choose it knowingly).

A ``calendar`` (``features.calendar.TradingCalendar``; None = ``"24/7"``) says which bar times
the market trades: with one, bars are consecutive in trading time, so a closure (night,
weekend, holiday) is not a gap while a bar missing inside a session still is.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from atb_strategies.exceptions import CandleDataError, ConfigurationError

if TYPE_CHECKING:
    from atb_strategies.features.calendar import TradingCalendar

log = logging.getLogger(__name__)

OHLCV = ("open", "high", "low", "close", "volume")
GAP_POLICIES = ("skip", "raise", "warn", "allow")
_TIME_COLUMNS = ("timestamp", "datetime", "date", "time", "open_time")
_UNITS = {"m": "min", "h": "h", "d": "D", "w": "W"}


def timeframe_to_timedelta(timeframe: str) -> pd.Timedelta:
    """``"1h"`` -> ``Timedelta(hours=1)``; accepts ``<n>m|h|d|w``."""
    m = re.fullmatch(r"(\d+)([mhdw])", str(timeframe).strip())
    if not m or int(m.group(1)) == 0:
        raise ConfigurationError(
            f"Timeframe {timeframe!r} is not understood; use <n>m, <n>h, <n>d or <n>w "
            "(for example 1m, 15m, 1h, 4h, 1d)."
        )
    return pd.Timedelta(int(m.group(1)), unit=_UNITS[m.group(2)])


def check_gap_policy(policy: object, owner: str) -> str:
    """Return ``policy`` if it is one of ``GAP_POLICIES``; else raise ``ConfigurationError``."""
    if policy not in GAP_POLICIES:
        allowed = ", ".join(repr(g) for g in GAP_POLICIES)
        raise ConfigurationError(
            f"The 'gap_policy' parameter of {owner} must be one of {allowed}. "
            f"Got {policy!r} instead."
        )
    return str(policy)


def find_gaps(
    stamps: np.ndarray,
    timeframe: str,
    *,
    what: str,
    label: Callable[[int], str],
    previous: int | None = None,
    calendar: TradingCalendar | None = None,
    stamped: str = "open",
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of bars that follow a gap, and how many bars are missing before each.

    Parameters
    ----------
    stamps : ndarray of int64
        Bar times in nanoseconds, sorted and unique.
    timeframe : str
        Expected spacing (``"1h"``).
    what : str
        What the bars are, for messages (``"candles for BTCUSDT/basic@v1"``).
    label : callable
        ``label(i)`` names bar ``i`` in messages (``"row 12 (2024-01-01 12:00:00)"``).
    previous : int, optional
        Time of the bar before ``stamps[0]`` (streaming), so the first step is checked too.
    calendar : TradingCalendar, optional
        The market's sessions: bars missing while it is closed are no gap (default ``24/7``).
    stamped : {"open", "close"}
        What the stamps are, for a calendar: bar open times, or close times (backtrader's).

    Raises
    ------
    CandleDataError
        A spacing that is not a whole number of bars (for example bars closer than the
        timeframe), or a bar outside the calendar's sessions, naming the bar.
    """
    tf = timeframe_to_timedelta(timeframe).value
    stamps = np.asarray(stamps, dtype=np.int64)
    if calendar is not None and not calendar.always_open:
        bars = calendar.bar_steps(
            stamps, timeframe, what=what, label=label, previous=previous, stamped=stamped
        )
        gaps = np.flatnonzero(bars > 1)
        return gaps + (1 if previous is None else 0), bars[gaps] - 1
    if previous is None:
        step, offset = np.diff(stamps), 1
    else:
        step, offset = np.diff(stamps, prepend=np.int64(previous)), 0
    off = step % tf != 0
    if off.any():
        pos = int(np.argmax(off)) + offset
        raise CandleDataError(
            f"{what}: {label(pos)} is {pd.Timedelta(int(step[pos - offset]))} after the "
            f"previous bar, which is not a multiple of the model's timeframe {timeframe}. "
            "Resample the candles to that timeframe or choose a model for theirs.",
            row=pd.Timestamp(int(stamps[pos])),
        )
    gaps = np.flatnonzero(step > tf)
    return gaps + offset, step[gaps] // tf - 1


def apply_gap_policy(
    gaps: np.ndarray,
    missing: np.ndarray,
    policy: str,
    *,
    what: str,
    timeframe: str,
    label: Callable[[int], str],
    stamps: np.ndarray,
) -> None:
    """Raise on the first gap (``"raise"``), log every gap (``"warn"``), or pass."""
    if not len(gaps) or policy in ("skip", "allow"):
        return
    if policy == "raise":
        pos = int(gaps[0])
        since = (  # the time elapsed (with a calendar, closures included)
            pd.Timedelta(int(stamps[pos] - stamps[pos - 1]))
            if pos > 0
            else timeframe_to_timedelta(timeframe) * int(missing[0] + 1)
        )
        raise CandleDataError(
            f"{what}: gap before {label(pos)}: {since} "
            f"since the previous bar ({int(missing[0])} missing {timeframe} bar(s)). "
            "Fill the missing candles, or pass gap_policy='skip' to make no prediction from "
            "rows that span a gap (or gap_policy='warn' to treat the bars either side as "
            "consecutive).",
            row=pd.Timestamp(int(stamps[pos])),
        )
    for pos, n in zip(gaps[:_GAPS_LOGGED], missing, strict=False):
        log.warning(
            "%s: gap before %s (%d missing %s bar(s)) treated as consecutive",
            what,
            label(int(pos)),
            int(n),
            timeframe,
        )
    if len(gaps) > _GAPS_LOGGED:  # one line for the rest, not one per gap
        log.warning(
            "%s: %d more gap(s) (%d missing %s bar(s)) treated as consecutive, the last before %s",
            what,
            len(gaps) - _GAPS_LOGGED,
            int(missing[_GAPS_LOGGED:].sum()),
            timeframe,
            label(int(gaps[-1])),
        )


#: ``gap_policy="warn"`` logs this many gaps one by one, then one line for the rest.
_GAPS_LOGGED = 5


def rows_span_gap(end_index: np.ndarray, gaps: np.ndarray, rows: int) -> np.ndarray:
    """For each window ending at bar ``end_index[k]`` and covering ``rows`` bars, whether a gap
    lies between two of its bars (a gap before bar ``g`` with ``end - rows + 1 < g <= end``)."""
    end_index = np.asarray(end_index, dtype=np.int64)
    if not len(gaps):
        return np.zeros(len(end_index), dtype=bool)
    gaps = np.sort(np.asarray(gaps, dtype=np.int64))
    upto_end = np.searchsorted(gaps, end_index, side="right")
    upto_first = np.searchsorted(gaps, end_index - rows + 1, side="right")
    return upto_end > upto_first


def _time_index(frame: pd.DataFrame) -> tuple[pd.DatetimeIndex, str | None]:
    """The time index and the column it came from (None for a DatetimeIndex).

    Integer columns are epoch seconds, milliseconds, microseconds or nanoseconds, told apart by
    the largest value's magnitude (below 1e11, 1e14, 1e17 or above: any date from March 1973
    to the year 5138 reads right in each unit).
    """
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame.index, None
    for col in _TIME_COLUMNS:
        if col in frame.columns:
            values = frame[col]
            try:
                if pd.api.types.is_numeric_dtype(values):
                    unit = _epoch_unit(float(values.abs().max()))
                    return pd.DatetimeIndex(pd.to_datetime(values, unit=unit)), col
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # dateutil fallback notice
                    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)), col
            except (ValueError, TypeError) as e:
                raise CandleDataError(f"Column {col!r} cannot be read as timestamps: {e}.") from e
    raise CandleDataError(
        f"Candles have no time: give a DatetimeIndex or one of the columns {list(_TIME_COLUMNS)}."
    )


def _epoch_unit(largest: float) -> str:
    for unit, limit in (("s", 1e11), ("ms", 1e14), ("us", 1e17)):
        if largest < limit:
            return unit
    return "ns"


def _row(index: pd.DatetimeIndex, pos: int) -> str:
    return f"row {pos} ({index[pos]})"


def validate_candles(
    frame: pd.DataFrame,
    *,
    columns: Sequence[str] = OHLCV,
    timeframe: str | None = None,
    gap_policy: str = "raise",
    min_rows: int | None = None,
    spacing_rows: int | None = None,
    what: str = "candles",
    calendar: TradingCalendar | None = None,
) -> pd.DataFrame:
    """Check candles and return them indexed by a sorted, unique ``DatetimeIndex``.

    Parameters
    ----------
    frame : DataFrame
        OHLCV (plus any extra columns), indexed by time or with a time column.
    columns : sequence of str
        Columns that must be present and finite. Price columns must be > 0 and volume >= 0.
    timeframe : str, optional
        Expected bar spacing (e.g. ``"1h"``). A spacing that is not a whole multiple of it
        raises; a whole multiple > 1 is a gap, handled by ``gap_policy``.
    gap_policy : {"skip", "raise", "warn", "allow"}
        ``"raise"``: a gap raises naming the bar after it; ``"warn"``: each gap is logged;
        ``"skip"`` and ``"allow"``: gaps pass (what a prediction then does with them is the
        caller's business: see the module docstring).
    min_rows : int, optional
        Fewest rows required.
    spacing_rows : int, optional
        Check the timeframe spacing and gaps over the newest ``spacing_rows`` rows only (the
        rows a model window and its warm-up see); default all rows.
    calendar : TradingCalendar, optional
        The market's sessions (default ``24/7``): a closure is not a gap; a bar outside the
        sessions raises.

    Raises
    ------
    CandleDataError
        Naming the row and column at fault.
    """
    check_gap_policy(gap_policy, "validate_candles")
    if not isinstance(frame, pd.DataFrame):
        raise CandleDataError(f"{what} must be a pandas DataFrame; got {type(frame).__name__}.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CandleDataError(
            f"{what} lack column(s) {missing}; they have {list(frame.columns)}. "
            "Rename the columns to lowercase open, high, low, close, volume."
        )
    index, time_column = _time_index(frame)
    n = len(frame)
    if min_rows is not None and n < min_rows:
        raise CandleDataError(
            f"{what} have {n} row(s); at least {min_rows} are needed "
            "(warm-up bars plus the model's window)."
        )
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    if index.hasnans:
        pos = int(np.argmax(index.isna()))
        raise CandleDataError(f"{what}: row {pos} has no timestamp.", row=pos)
    index = index.as_unit("ns")
    stamps = index.asi8
    if n > 1:
        step = np.diff(stamps)
        if (step == 0).any():
            pos = int(np.argmax(step == 0)) + 1
            raise CandleDataError(
                f"{what}: duplicate timestamp at {_row(index, pos)}, same as the row before. "
                "Drop duplicates (keep the last closed candle) before predicting.",
                row=index[pos],
            )
        if (step < 0).any():
            pos = int(np.argmax(step < 0)) + 1
            raise CandleDataError(
                f"{what}: timestamps are not sorted: {_row(index, pos)} comes after "
                f"{index[pos - 1]}. Sort the candles by time.",
                row=index[pos],
            )
        if timeframe is not None:
            first = 0 if spacing_rows is None else max(0, n - spacing_rows)
            gaps, missing = find_gaps(
                stamps[first:],
                timeframe,
                what=what,
                label=lambda i: _row(index, i + first),
                calendar=calendar,
            )
            apply_gap_policy(
                gaps,
                missing,
                gap_policy,
                what=what,
                timeframe=timeframe,
                label=lambda i: _row(index, i + first),
                stamps=stamps[first:],
            )
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            pos = int(np.argmax(bad))
            raise CandleDataError(
                f"{what}: column {col!r} is {frame[col].iloc[pos]} at {_row(index, pos)}. "
                "Candles must be complete numbers; drop or repair that bar.",
                row=index[pos],
            )
        limit_bad = values < 0 if col == "volume" else values <= 0
        if col in OHLCV and limit_bad.any():
            pos = int(np.argmax(limit_bad))
            need = ">= 0" if col == "volume" else "> 0"
            raise CandleDataError(
                f"{what}: column {col!r} is {float(values[pos])!r} at {_row(index, pos)}; "
                f"it must be {need}.",
                row=index[pos],
            )
    if "high" in frame.columns and "low" in frame.columns:
        hi = pd.to_numeric(frame["high"], errors="coerce").to_numpy(dtype=np.float64)
        lo = pd.to_numeric(frame["low"], errors="coerce").to_numpy(dtype=np.float64)
        bad = hi < lo
        if bad.any():
            pos = int(np.argmax(bad))
            raise CandleDataError(
                f"{what}: high {float(hi[pos])!r} < low {float(lo[pos])!r} at {_row(index, pos)}.",
                row=index[pos],
            )
        for col in ("open", "close"):
            if col not in frame.columns:
                continue
            v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
            bad = (v > hi) | (v < lo)
            if bad.any():
                pos = int(np.argmax(bad))
                raise CandleDataError(
                    f"{what}: {col} {float(v[pos])!r} lies outside low..high "
                    f"{float(lo[pos])!r}..{float(hi[pos])!r} at {_row(index, pos)}.",
                    row=index[pos],
                )
    out = frame.drop(columns=[time_column]) if time_column is not None else frame.copy()
    out.index = index
    out.index.name = "timestamp"
    return out


_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_NAT = np.iinfo(np.int64).min
_INT64_MAX = int(np.iinfo(np.int64).max)
_FLOAT64 = np.dtype(np.float64)


def candle_arrays(
    frame: pd.DataFrame,
    *,
    columns: Sequence[str] = OHLCV,
    timeframe: str | None = None,
    gap_policy: str = "raise",
    rows: int | None = None,
    spacing_rows: int | None = None,
    what: str = "candles",
    calendar: TradingCalendar | None = None,
) -> dict[str, np.ndarray]:
    """Validate the newest ``rows`` rows of ``frame`` and return ``columns`` as float64 arrays.

    Exactly ``validate_candles(frame.iloc[-rows:], ...)`` (all rows when ``rows`` is None)
    followed by ``out[c].to_numpy(dtype=np.float64)`` for each column, made cheap for the
    common case of one prediction from a long frame: the same checks run with numpy on the
    rows used only, and no frame is copied. Frames this path cannot read directly (a time
    column instead of a ``DatetimeIndex``, non-numeric or extension-typed columns, duplicate
    column names) and frames that fail any check, or have a gap the policy reports, go through
    ``validate_candles`` itself, so errors, messages, row naming and warnings are its own.

    Parameters
    ----------
    frame : DataFrame
        Candles, oldest first.
    columns, timeframe, gap_policy, spacing_rows, what, calendar
        As for ``validate_candles``.
    rows : int, optional
        Validate and return the newest ``rows`` rows only (default all).

    Returns
    -------
    dict of str to ndarray
        One float64 array per column of ``columns``, the rows used oldest first.

    Raises
    ------
    CandleDataError
        As ``validate_candles``, naming the row and column at fault.
    """
    check_gap_policy(gap_policy, "validate_candles")
    closed = calendar is not None and not calendar.always_open
    fast = (
        None if closed else _fast_arrays(frame, columns, timeframe, gap_policy, rows, spacing_rows)
    )
    if fast is not None:
        return fast
    used = frame if rows is None or not isinstance(frame, pd.DataFrame) else frame.iloc[-rows:]
    out = validate_candles(
        used,
        columns=columns,
        timeframe=timeframe,
        gap_policy=gap_policy,
        spacing_rows=spacing_rows,
        what=what,
        calendar=calendar,
    )
    return {c: out[c].to_numpy(dtype=np.float64) for c in columns}


def _fast_arrays(
    frame: pd.DataFrame,
    columns: Sequence[str],
    timeframe: str | None,
    gap_policy: str,
    rows: int | None,
    spacing_rows: int | None,
) -> dict[str, np.ndarray] | None:
    """``candle_arrays`` when every check passes on plain numpy data; None to defer to
    ``validate_candles`` (which then raises, warns or reads what this path cannot)."""
    if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex):
        return None
    names = frame.columns
    if not names.is_unique or any(c not in names for c in columns):
        return None
    index = frame.index
    unit = _NS_PER_UNIT.get(index.unit)
    if unit is None:
        return None
    stamps = index.asi8 if rows is None else index.asi8[-rows:]
    n = len(stamps)
    if n and (stamps == _NAT).any():
        return None
    if n > 1:
        step = np.diff(stamps)
        if timeframe is None:
            if step.min() <= 0:
                return None  # unsorted or duplicate
        else:
            tf = _timeframe_ns(timeframe)
            if tf % unit:  # a timeframe finer than the index's unit: let the full check decide
                return None
            tf //= unit
            first = 0 if spacing_rows is None else max(0, n - spacing_rows)
            head, spacing = step[:first], step[first:]
            if len(head) and head.min() <= 0:
                return None  # unsorted or duplicate before the rows whose spacing is checked
            if gap_policy in ("raise", "warn"):
                # a gap would raise or warn: each step in the spacing rows is exactly one bar
                if (spacing != tf).any():
                    return None
            elif len(spacing) and (spacing.min() <= 0 or (spacing % tf).any()):
                return None
    # sorted from here on: the extremes are the first and last stamps
    if n and unit > 1 and max(-int(stamps[0]), int(stamps[-1])) > _INT64_MAX // unit:
        return None  # beyond what nanoseconds hold: validate_candles says so
    # One (k, n) float64 block of every column the checks read (the model's, then the OHLC
    # ones the high/low consistency checks use): each check is one numpy call.
    ohlc = [c for c in ("open", "high", "low", "close") if c in names]
    checked = list(dict.fromkeys([*columns, *ohlc]))
    k = len(columns)
    if checked[:k] != list(columns):
        return None  # a column named twice
    table = None
    if len(names) == len(checked):
        # only the columns checked (plain candles): one table, a view of a float64 frame
        table = frame.to_numpy()
        if table.dtype != _FLOAT64:  # other dtypes: column by column below
            table = None
    elif set(frame.dtypes.tolist()) == {_FLOAT64}:
        table = frame.to_numpy()  # extra columns, all float64: a view as well
    if table is not None:
        table = table if rows is None else table[-rows:]
        block = table.T[[names.get_loc(c) for c in checked]]
    else:
        arrays = []
        for col in checked:
            series = frame[col]
            dtype = series.dtype
            if not isinstance(dtype, np.dtype) or dtype.kind not in "fiub":
                return None
            values = series.to_numpy()
            arrays.append(values if rows is None else values[-rows:])
        block = np.array(arrays, dtype=np.float64)
    floor, inside, high, low = _check_plan(tuple(checked), k)
    # finite, then prices > 0 and volume >= 0 (``v <= floor``: see _check_plan), in two calls
    if not np.isfinite(block[:k]).all() or (block[:k] <= floor).any():
        return None
    if high is not None:
        # low, open, close <= high and open, close >= low
        hi, lo = block[high], block[low]
        if (block[[*inside, low]] > hi).any() or (inside and (block[inside] < lo).any()):
            return None
    return {c: block[i] for i, c in enumerate(columns)}


@functools.lru_cache(maxsize=64)
def _check_plan(
    checked: tuple[str, ...], k: int
) -> tuple[np.ndarray, list[int], int | None, int | None]:
    """For a block of ``checked`` columns (the first ``k`` the model's): the floor each of those
    must exceed, as a ``(k, 1)`` column (``v <= floor`` is bad: 0 for prices; minus the smallest
    subnormal for volume, as a finite ``v < 0`` iff ``v <= -5e-324``; -inf for other columns),
    and the rows of open/close, high and low (None without high and low). Where subnormals are
    flushed to zero, a volume of 0 fails this check too: that only sends it to the full one."""
    tiny = float(np.finfo(np.float64).smallest_subnormal)
    floor = np.array(
        [(-tiny if c == "volume" else 0.0) if c in OHLCV else -np.inf for c in checked[:k]]
    )[:, None]
    floor.flags.writeable = False  # cached and shared
    if "high" not in checked or "low" not in checked:
        return floor, [], None, None
    inside = [checked.index(c) for c in ("open", "close") if c in checked]
    return floor, inside, checked.index("high"), checked.index("low")


@functools.lru_cache(maxsize=64)
def _timeframe_ns(timeframe: str) -> int:
    return int(timeframe_to_timedelta(timeframe).value)
