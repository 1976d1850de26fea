"""Load OHLCV candles from CSV, parquet or feather into a validated DataFrame.

``load_ohlcv`` raises on anything that would change results (an unreadable or malformed file,
NaN, non-positive prices, prices stored as text, high < low, unsorted or duplicate stamps, a
spacing that is not a whole number of bars, candles of another timeframe than asked) and
*reports* what is legal but worth knowing: gaps (missing bars) and zero-volume bars. The report is
logged and kept in ``frame.attrs["report"]``.

Timestamps are read as UTC and stored naive; by the convention of exchange data they are the
candle's **open** time.

The layouts backtrader users have are read as they are: separate ``Date`` and ``Time`` columns
(backtrader's generic CSV, session files) are joined into one timestamp; a Yahoo CSV's
``Adj Close`` is kept aside (``close`` stays the raw close) unless ``adjusted=True``, which
scales open, high and low by the same ratio ``adj close / close`` and uses the adjusted close,
as backtrader's ``YahooFinanceCSVData(adjclose=True)`` does (volume is left as it is). The load
report says which close is used.
"""

from __future__ import annotations

import codecs
import decimal
import gzip
import itertools
import logging
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from atb_strategies.exceptions import CandleDataError
from atb_strategies.features.calendar import ALWAYS_OPEN, get_calendar, suggest_calendar
from atb_strategies.features.candles import (
    _TIME_COLUMNS,
    OHLCV,
    find_gaps,
    timeframe_to_timedelta,
    validate_candles,
)

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
    #: The calendar the gaps were counted in (closures are no gaps).
    calendar: str = ALWAYS_OPEN
    #: No calendar given and the gaps look like closures: which ``--calendar`` fits, one line.
    calendar_hint: str | None = None

    def lines(self) -> list[str]:
        """Human-readable findings, one per line; many gaps make one summary line."""
        out = [f"{self.rows} bars from {self.first} to {self.last}"]
        if len(self.gaps) <= _GAPS_LISTED:
            for g in self.gaps:
                out.append(f"gap: {g.missing_bars} missing bar(s) between {g.after} and {g.before}")
        else:
            out.append(summarize_gaps(self.gaps, self.timeframe))
        if self.calendar_hint:
            out.append(self.calendar_hint)
        if self.zero_volume:
            shown = ", ".join(str(t) for t in self.zero_volume[:5])
            more = f" and {len(self.zero_volume) - 5} more" if len(self.zero_volume) > 5 else ""
            out.append(f"zero volume at {len(self.zero_volume)} bar(s): {shown}{more}")
        return out


#: Up to this many gaps are listed one per line; more make one summary line.
_GAPS_LISTED = 5


def summarize_gaps(gaps: list[Gap], timeframe: str | None) -> str:
    """One line for many gaps: how many, the bars missing in all, the first few, and whether
    they follow a regular pattern (the same length recurring at the same interval, as markets
    closed overnight or at weekends)."""
    missing = sum(g.missing_bars for g in gaps)
    first = ", ".join(f"{g.after} .. {g.before}" for g in gaps[:3])
    line = (
        f"{len(gaps)} gaps, {missing} missing {timeframe or ''} bar(s) in all; the first: {first}"
    )
    regular = _regular(gaps)
    if regular is not None:
        share, length, period = regular
        line += (
            f". Regular: {100 * share:.0f} % of them are {length} "
            f"missing bar(s) recurring every {_span(period)} (like a market closed overnight or "
            "at weekends)"
        )
    return line


def _regular(gaps: list[Gap]) -> tuple[float, int, pd.Timedelta] | None:
    """``(share, missing bars, period)`` when >= 80 % of the gaps are of one length recurring
    at one interval (a market's closures), else None."""
    if len(gaps) < 2:
        return None
    lengths = pd.Series([g.missing_bars for g in gaps])
    every = pd.Series([b.after - a.after for a, b in itertools.pairwise(gaps)])
    length, share_length = lengths.mode()[0], float((lengths == lengths.mode()[0]).mean())
    period = every.mode()[0]
    share_period = float((every == period).mean())
    if share_length >= 0.8 and share_period >= 0.8:
        return min(share_length, share_period), int(length), period
    return None


def _span(step: pd.Timedelta) -> str:
    """``Timedelta("2 days 13:00:00")`` -> ``"2d 13h"``."""
    c = step.components
    parts = [f"{c.days}d" if c.days else "", f"{c.hours}h" if c.hours else ""]
    parts.append(f"{c.minutes}m" if c.minutes else "")
    return " ".join(p for p in parts if p) or str(step)


def infer_timeframe(index: pd.DatetimeIndex, *, what: str = "candles") -> str:
    """The data's own bar size as ``<n>m|h|d``: the median spacing between consecutive stamps
    (the most common one whenever at least half the bars are consecutive)."""
    if len(index) < 2:
        raise CandleDataError(
            f"{what} hold {len(index)} bar(s): a timeframe cannot be inferred from fewer than 2; "
            "pass timeframe='1h' (or the candles' own)."
        )
    step = pd.Timedelta(int(np.median(np.diff(index.as_unit("ns").asi8))))
    minutes = step / pd.Timedelta(minutes=1)
    if minutes >= 1440 and minutes % 1440 == 0:
        return f"{int(minutes // 1440)}d"
    if minutes >= 60 and minutes % 60 == 0:
        return f"{int(minutes // 60)}h"
    if minutes >= 1 and minutes == int(minutes):
        return f"{int(minutes)}m"
    raise CandleDataError(f"{what}: bar spacing {step} is not a whole number of minutes.")


def inspect_candles(
    frame: pd.DataFrame, timeframe: str, *, calendar: str | None = None
) -> CandleReport:
    """Gaps and zero-volume bars of validated candles (indexed by time), gaps counted in the
    trading time of ``calendar`` (default ``24/7``). Without a calendar, many gaps in a regular
    pattern get a one-line hint naming the ``--calendar`` that fits (``suggest_calendar``)."""
    idx = frame.index.as_unit("ns")
    cal = get_calendar(calendar)
    gaps = []
    if len(idx) > 1:
        after, missing = find_gaps(
            idx.asi8, timeframe, what="candles", label=lambda i: str(idx[i]), calendar=cal
        )
        gaps = [Gap(idx[p - 1], idx[p], int(m)) for p, m in zip(after, missing, strict=True)]
    hint = None
    if cal.always_open and len(gaps) > _GAPS_LISTED and _regular(gaps) is not None:
        hint = suggest_calendar(idx.asi8, timeframe)
    zero = list(frame.index[frame["volume"].to_numpy() == 0]) if "volume" in frame else []
    return CandleReport(
        len(frame),
        timeframe,
        frame.index[0] if len(frame) else None,
        frame.index[-1] if len(frame) else None,
        gaps,
        zero,
        cal.name,
        hint,
    )


_CSV_DELIMITERS = (",", ";", "\t", "|")
_SNIFF_BYTES = 64 * 1024


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".txt", ".csv.gz", ".txt.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".feather", ".arrow")):
        return "feather"
    raise CandleDataError(
        f"Candle file {path} has an unknown type {path.suffix.lower()!r}; use .csv (or .csv.gz), "
        ".parquet or .feather."
    )


def _csv_head(path: Path) -> bytes:
    """The first bytes of a CSV file (decompressed for ``.gz``)."""
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read(_SNIFF_BYTES)
    with path.open("rb") as fh:
        return fh.read(_SNIFF_BYTES)


def _csv_dialect(path: Path) -> dict[str, str]:
    """``read_csv`` arguments for the file's delimiter (the candidate most frequent in its
    header line) and decimal mark (a comma in semicolon files that write ``1,5``); refuses
    what is no UTF-8 text, naming the file."""
    head = _csv_head(path)
    if not head.strip():
        raise CandleDataError(
            f"Candle file {path} is empty; expected a header line (timestamp, open, high, low, "
            "close, volume) and one line per candle."
        )
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CandleDataError(
            f'Candle file {path} is UTF-16 text; save it as UTF-8 ("CSV UTF-8") and try again.'
        )
    if b"\x00" in head:
        raise CandleDataError(
            f"Candle file {path} holds binary data, not CSV text; give a CSV, parquet or feather "
            "file of candles."
        )
    lines = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()
    header = lines[0]
    sep = max(_CSV_DELIMITERS, key=header.count)
    if not header.count(sep):
        sep = ","
    dialect = {"sep": sep}
    if sep == ";" and len(lines) > 1 and "," in lines[1] and "." not in lines[1]:
        dialect["decimal"] = ","
    return dialect


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **_csv_dialect(path))
    except UnicodeDecodeError as e:
        raise CandleDataError(
            f"Candle file {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start}, Latin-1 or another encoding?); save it as UTF-8 and try again."
        ) from e
    except pd.errors.EmptyDataError as e:
        raise CandleDataError(
            f"Candle file {path} has no header line; expected timestamp, open, high, low, close, "
            "volume and one line per candle."
        ) from e
    except pd.errors.ParserError as e:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        detail = (
            f"line {found.group(2)} has {found.group(3)} fields where the header has "
            f"{found.group(1)}"
            if found
            else str(e).strip().splitlines()[0]
        )
        raise CandleDataError(
            f"Candle file {path} is not a well-formed CSV: {detail}. Fix or remove that line."
        ) from e
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise CandleDataError(
            f"Candle file {path} is truncated or not valid gzip ({e}); download or compress it "
            "again."
        ) from e


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV (``.gz`` too; delimiter detected), parquet or feather file as it is (no
    validation).

    Raises
    ------
    CandleDataError
        Naming the file, when it is missing, of an unknown type, empty, not UTF-8 text, a
        malformed CSV, a truncated gzip or not a readable parquet/feather file.
    """
    path = Path(path)
    kind = _file_kind(path)
    if not path.is_file():
        raise CandleDataError(f"Candle file {path} does not exist.")
    try:
        if kind == "csv":
            return _read_csv(path)
        reader = pd.read_parquet if kind == "parquet" else pd.read_feather
        return reader(path)
    except ImportError as e:
        raise CandleDataError(
            f"Reading {path} needs pyarrow: pip install pyarrow (or convert it to CSV)."
        ) from e
    except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid and ArrowIOError among them
        if isinstance(e, CandleDataError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CandleDataError(f"Candle file {path} is not a readable {kind} file: {first}") from e


def load_ohlcv(
    path: Path | str,
    *,
    timeframe: str | None = None,
    columns: tuple[str, ...] = OHLCV,
    calendar: str | None = None,
    adjusted: bool = False,
    tz: str | None = None,
) -> pd.DataFrame:
    """Load, validate and report candles from ``path``.

    ``calendar`` (``features.calendar``; default ``"24/7"``) counts the reported gaps in the
    market's trading time; ``adjusted`` uses a Yahoo file's ``Adj Close`` (see the module
    docstring); ``tz`` (``"America/New_York"``) reads times without an offset as local times of
    that zone (session files often are), converted to UTC like every stamp here.

    Column names are lower-cased; CSV delimiters (``,``, ``;``, tab, ``|``) are detected;
    Decimal prices become float64. The candles' own timeframe is their median spacing; a given
    ``timeframe`` that differs from it, when at least half the bars are spaced by it (daily
    candles for ``timeframe="1h"``), is refused; otherwise the extra spacing is reported as
    gaps. Returns a DataFrame indexed by naive-UTC open time, sorted, with
    ``attrs["timeframe"]`` and ``attrs["report"]`` (a ``CandleReport``; many gaps are logged as
    one summary line).

    Raises
    ------
    CandleDataError
        Naming the file, and the row and column at fault: an unreadable, empty or malformed
        file, no candles, prices stored as text, another timeframe, invalid values.
    """
    raw = read_table(path)
    what = str(path)
    if not len(raw):
        raise CandleDataError(
            f"{what} has a header but no candles; expected one line (row) per candle."
        )
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    raw, close_note = _adjust_close(_join_date_time(raw), adjusted, what)
    raw = _localize(raw, tz, what)
    probe = validate_candles(raw, columns=columns, gap_policy="allow", what=what)
    probe = _numeric_columns(probe, columns, what)
    own = infer_timeframe(probe.index, what=what) if timeframe is None or len(probe) > 2 else None
    if (
        timeframe is not None
        and own is not None
        and not _same_size(own, timeframe)
        and _share_spaced(probe.index, own) >= 0.5
    ):  # mostly spaced by another timeframe: not candles of this one with gaps
        raise CandleDataError(
            f"{what} holds {own} candles (its most common spacing), not timeframe={timeframe!r}: "
            f"pass timeframe={own!r} (for a {own} model) or resample the candles to {timeframe}."
        )
    tf = timeframe or own
    cal = get_calendar(calendar)
    frame = validate_candles(
        probe, columns=columns, timeframe=tf, gap_policy="allow", what=what, calendar=cal
    )
    report = inspect_candles(frame, tf, calendar=cal.name)
    for line in report.lines():
        log.info("%s: %s", Path(path).name, line)
    if close_note:
        log.info("%s: %s", Path(path).name, close_note)
    frame.attrs["close"] = close_note
    frame.attrs["timeframe"] = tf
    frame.attrs["report"] = report
    return frame


def _join_date_time(raw: pd.DataFrame) -> pd.DataFrame:
    """Separate ``date`` and ``time`` columns (and no ``timestamp``/``datetime``) joined into
    one ``datetime`` column: ``2006-01-02`` + ``09:35:00`` (or ``093500``) -> one stamp."""
    cols = set(raw.columns)
    if not {"date", "time"} <= cols or cols & {"timestamp", "datetime", "open_time"}:
        return raw
    time = raw["time"].astype(str).str.strip()
    digits = time.str.fullmatch(r"\d{3,6}")
    time = time.where(
        ~digits, time.str.zfill(6).str.replace(r"(\d\d)(\d\d)(\d\d)", r"\1:\2:\3", regex=True)
    )
    out = raw.drop(columns=["date", "time"])
    out.insert(0, "datetime", raw["date"].astype(str).str.strip() + " " + time)
    return out


def _localize(raw: pd.DataFrame, tz: str | None, what: str) -> pd.DataFrame:
    """The time column read as local times of ``tz`` (None: as they are, UTC)."""
    col = next((c for c in _TIME_COLUMNS if c in raw.columns), None)
    if tz is None or col is None:
        return raw
    if pd.api.types.is_numeric_dtype(raw[col]):
        raise CandleDataError(
            f"{what}: column {col!r} holds epoch numbers, which are UTC already; drop tz={tz!r}."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # dateutil fallback notice
            values = pd.to_datetime(raw[col])
        if values.dt.tz is not None:
            raise CandleDataError(
                f"{what}: column {col!r} already carries UTC offsets; drop tz={tz!r}."
            )
        local = values.dt.tz_localize(tz, ambiguous="raise", nonexistent="raise")
    except CandleDataError:
        raise
    except Exception as e:  # unknown zone, unreadable or DST-ambiguous times
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CandleDataError(
            f"{what}: column {col!r} cannot be read as local times of tz={tz!r}: {first}"
        ) from e
    out = raw.copy()
    out[col] = local
    return out


def _adjust_close(raw: pd.DataFrame, adjusted: bool, what: str) -> tuple[pd.DataFrame, str | None]:
    """The candles with the close asked for, and the line saying which close it is (None when
    the file has no ``adj close``)."""
    name = next((c for c in ("adj close", "adj_close", "adjclose") if c in raw.columns), None)
    if name is None:
        if adjusted:
            raise CandleDataError(
                f"{what} has no 'Adj Close' column, so adjusted=True (--adjusted) cannot be "
                f"applied; its columns are {list(raw.columns)}. Drop --adjusted."
            )
        return raw, None
    if not adjusted:
        return raw.drop(columns=[name]), (
            "close: the raw Close column ('Adj Close' is present and not used; pass "
            "adjusted=True / --adjusted to use it)"
        )
    out = raw.drop(columns=[name])
    adj = pd.to_numeric(raw[name], errors="coerce")
    ratio = adj / pd.to_numeric(raw["close"], errors="coerce")
    for col in ("open", "high", "low"):
        if col in out.columns:
            out[col] = pd.to_numeric(out[col], errors="coerce") * ratio
    out["close"] = adj
    return out, (
        "close: the Adj Close column, open/high/low scaled by the same ratio adj close / close "
        "(as backtrader's adjclose=True; volume unchanged)"
    )


def _share_spaced(index: pd.DatetimeIndex, timeframe: str) -> float:
    """The share of consecutive stamps exactly ``timeframe`` apart."""
    step = np.diff(index.as_unit("ns").asi8)
    return float(np.mean(step == timeframe_to_timedelta(timeframe).value)) if len(step) else 0.0


def _same_size(a: str, b: str) -> bool:
    return timeframe_to_timedelta(a) == timeframe_to_timedelta(b)


def _numeric_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    """``frame`` with Decimal columns as float64; refuses columns of text (a parquet file can
    store prices as strings, which pass the checks but no arithmetic)."""
    for col in columns:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            continue
        sample = series.iloc[0] if len(series) else None
        if isinstance(sample, decimal.Decimal) or (
            hasattr(series.dtype, "pyarrow_dtype") and "decimal" in str(series.dtype)
        ):
            frame[col] = series.astype(np.float64)
            continue
        raise CandleDataError(
            f"{what}: column {col!r} holds {series.dtype} values such as {sample!r}, not "
            "numbers. Store open, high, low, close and volume as numbers (float64).",
        )
    return frame
