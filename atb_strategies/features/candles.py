"""Validate OHLCV candles before any feature is computed from them.

Every error names the offending row (its timestamp and position) and column, and says what to
do. Nothing is repaired silently: NaN is not filled, duplicates are not dropped, unsorted rows
are not sorted.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from atb_strategies.exceptions import CandleDataError, ConfigurationError

OHLCV = ("open", "high", "low", "close", "volume")
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


def _time_index(frame: pd.DataFrame) -> tuple[pd.DatetimeIndex, str | None]:
    """The time index and the column it came from (None for a DatetimeIndex).

    Integer columns are epoch seconds, or milliseconds when the largest exceeds 1e11
    (i.e. later than March 1973 in milliseconds).
    """
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame.index, None
    for col in _TIME_COLUMNS:
        if col in frame.columns:
            values = frame[col]
            try:
                if pd.api.types.is_numeric_dtype(values):
                    unit = "ms" if values.abs().max() > 1e11 else "s"
                    return pd.DatetimeIndex(pd.to_datetime(values, unit=unit)), col
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # dateutil fallback notice
                    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)), col
            except (ValueError, TypeError) as e:
                raise CandleDataError(f"Column {col!r} cannot be read as timestamps: {e}.") from e
    raise CandleDataError(
        f"Candles have no time: give a DatetimeIndex or one of the columns {list(_TIME_COLUMNS)}."
    )


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
    gap_policy : {"raise", "allow"}
        ``"raise"``: a gap raises naming the bar after it. ``"allow"``: gaps pass (bars either
        side are then treated as consecutive by sequence models; choose it knowingly).
    min_rows : int, optional
        Fewest rows required.
    spacing_rows : int, optional
        Check the timeframe spacing and gaps over the newest ``spacing_rows`` rows only (the
        rows a model window and its warm-up see); default all rows.

    Raises
    ------
    CandleDataError
        Naming the row and column at fault.
    """
    if gap_policy not in ("raise", "allow"):
        raise ConfigurationError(
            f"The 'gap_policy' parameter must be 'raise' or 'allow'. Got {gap_policy!r} instead."
        )
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
            tf = timeframe_to_timedelta(timeframe).value
            first = 0 if spacing_rows is None else max(0, n - spacing_rows)
            step = np.where(np.arange(n - 1) >= first, step, tf)
            off = step % tf != 0
            if off.any():
                pos = int(np.argmax(off)) + 1
                raise CandleDataError(
                    f"{what}: {_row(index, pos)} is {pd.Timedelta(int(step[pos - 1]))} after the "
                    f"previous bar, which is not a multiple of the model's timeframe {timeframe}. "
                    "Resample the candles to that timeframe or choose a model for theirs.",
                    row=index[pos],
                )
            gaps = step > tf
            if gaps.any() and gap_policy == "raise":
                pos = int(np.argmax(gaps)) + 1
                raise CandleDataError(
                    f"{what}: gap before {_row(index, pos)}: {pd.Timedelta(int(step[pos - 1]))} "
                    f"since the previous bar ({int(step[pos - 1] // tf) - 1} missing {timeframe} "
                    "bar(s)). Fill the missing candles, or pass gap_policy='allow' to treat the "
                    "bars either side as consecutive.",
                    row=index[pos],
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
