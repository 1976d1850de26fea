"""Load OHLCV candles from CSV, parquet or feather into a validated DataFrame.

``load_ohlcv`` raises on anything that would change results (NaN, non-positive prices,
high < low, unsorted or duplicate stamps, a spacing that is not a whole number of bars) and
*reports* what is legal but worth knowing: gaps (missing bars) and zero-volume bars. The report is
logged and kept in ``frame.attrs["report"]``.

Timestamps are read as UTC and stored naive; by the convention of exchange data they are the
candle's **open** time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from atb_strategies.exceptions import CandleDataError
from atb_strategies.features.candles import OHLCV, timeframe_to_timedelta, validate_candles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gap:
    """Missing bars between ``after`` and ``before`` (both present)."""

    after: pd.Timestamp
    before: pd.Timestamp
    missing_bars: int


@dataclass(frozen=True)
class CandleReport:
    """What ``inspect_candles`` found: gaps and zero-volume bars (neither is an error)."""

    rows: int
    timeframe: str | None
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    gaps: list[Gap] = field(default_factory=list)
    zero_volume: list[pd.Timestamp] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable findings, one per line."""
        out = [f"{self.rows} bars from {self.first} to {self.last}"]
        for g in self.gaps:
            out.append(f"gap: {g.missing_bars} missing bar(s) between {g.after} and {g.before}")
        if self.zero_volume:
            shown = ", ".join(str(t) for t in self.zero_volume[:5])
            more = f" and {len(self.zero_volume) - 5} more" if len(self.zero_volume) > 5 else ""
            out.append(f"zero volume at {len(self.zero_volume)} bar(s): {shown}{more}")
        return out


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """The most common bar spacing as ``<n>m|h|d``."""
    if len(index) < 2:
        raise CandleDataError("Cannot infer a timeframe from fewer than 2 bars; pass timeframe=.")
    step = pd.Timedelta(int(np.median(np.diff(index.as_unit("ns").asi8))))
    minutes = step / pd.Timedelta(minutes=1)
    if minutes >= 1440 and minutes % 1440 == 0:
        return f"{int(minutes // 1440)}d"
    if minutes >= 60 and minutes % 60 == 0:
        return f"{int(minutes // 60)}h"
    if minutes >= 1 and minutes == int(minutes):
        return f"{int(minutes)}m"
    raise CandleDataError(f"Bar spacing {step} is not a whole number of minutes.")


def inspect_candles(frame: pd.DataFrame, timeframe: str) -> CandleReport:
    """Gaps and zero-volume bars of validated candles (indexed by time)."""
    idx = frame.index.as_unit("ns")
    tf = timeframe_to_timedelta(timeframe).value
    gaps = []
    if len(idx) > 1:
        step = np.diff(idx.asi8)
        for pos in np.flatnonzero(step > tf):
            gaps.append(Gap(idx[pos], idx[pos + 1], int(step[pos] // tf) - 1))
    zero = list(frame.index[frame["volume"].to_numpy() == 0]) if "volume" in frame else []
    return CandleReport(
        len(frame),
        timeframe,
        frame.index[0] if len(frame) else None,
        frame.index[-1] if len(frame) else None,
        gaps,
        zero,
    )


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV, parquet or feather file as it is (no validation)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".feather", ".arrow"):
            return pd.read_feather(path)
    except FileNotFoundError as e:
        raise CandleDataError(f"Candle file {path} does not exist.") from e
    except ImportError as e:
        raise CandleDataError(
            f"Reading {path} needs pyarrow: pip install pyarrow (or convert it to CSV)."
        ) from e
    raise CandleDataError(
        f"Candle file {path} has an unknown type {suffix!r}; use .csv, .parquet or .feather."
    )


def load_ohlcv(
    path: Path | str,
    *,
    timeframe: str | None = None,
    columns: tuple[str, ...] = OHLCV,
) -> pd.DataFrame:
    """Load, validate and report candles from ``path``.

    Column names are lower-cased. The timeframe is inferred from the most common spacing
    unless given. Returns a DataFrame indexed by naive-UTC open time, sorted, with
    ``attrs["timeframe"]`` and ``attrs["report"]`` (a ``CandleReport``).

    Raises
    ------
    CandleDataError
        Naming the row and column at fault.
    """
    raw = read_table(path)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    probe = validate_candles(raw, columns=columns, gap_policy="allow", what=str(path))
    tf = timeframe or infer_timeframe(probe.index)
    frame = validate_candles(
        probe, columns=columns, timeframe=tf, gap_policy="allow", what=str(path)
    )
    report = inspect_candles(frame, tf)
    for line in report.lines():
        log.info("%s: %s", Path(path).name, line)
    frame.attrs["timeframe"] = tf
    frame.attrs["report"] = report
    return frame
