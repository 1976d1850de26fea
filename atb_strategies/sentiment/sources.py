"""Sentiment sources: each gives a ``pd.Series`` named ``sentiment`` indexed by publication
time (a CSV, the Fear & Greed index over HTTP, the synthetic demo index, and the live variants
that ``SentimentPoller`` polls)."""

from __future__ import annotations

import http.client
import io
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from atb_strategies.exceptions import (
    AtbError,
    CandleDataError,
    ConfigurationError,
    TemporaryExchangeError,
)
from atb_strategies.exchange.retry import call_with_retries

log = logging.getLogger("atb_strategies.sentiment")  # one logger for the package


def as_sentiment_series(values: pd.Series, where: str) -> pd.Series:
    """``values`` as float64 named ``sentiment``; raises naming ``where`` and the row on a
    non-number or unsorted or duplicated publication times."""
    series = pd.to_numeric(values, errors="coerce").astype(np.float64)
    bad = ~np.isfinite(series.to_numpy())
    if bad.any():
        pos = int(np.argmax(bad))
        raise CandleDataError(
            f"{where}: sentiment value {values.iloc[pos]!r} at {series.index[pos]} is not a "
            "number; repair or drop that row.",
            row=series.index[pos],
        )
    if not series.index.is_monotonic_increasing or series.index.has_duplicates:
        raise CandleDataError(f"{where}: publication times must be sorted and unique.")
    series.name = "sentiment"
    return series


def read_sentiment_csv(path: Path | str) -> pd.Series:
    """Sentiment values from a CSV with ``timestamp`` and ``value`` (or ``sentiment``)."""
    return _parse_sentiment_csv(path, str(path))


def _parse_sentiment_csv(source: Path | str | io.StringIO, where: str) -> pd.Series:
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    value_col = "value" if "value" in frame.columns else "sentiment"
    if "timestamp" not in frame.columns or value_col not in frame.columns:
        raise CandleDataError(
            f"{where}: a sentiment CSV needs columns 'timestamp' and 'value'; it has "
            f"{list(frame.columns)}."
        )
    # ISO 8601 row by row, so that one odd row is named instead of failing the whole column
    stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601", errors="coerce")
    if stamps.isna().any():
        row = int(stamps.isna().to_numpy().argmax())
        raise CandleDataError(
            f"{where}: timestamp {frame['timestamp'].iloc[row]!r} on line {row + 2} is not a "
            "date and time (ISO 8601, e.g. 2025-01-20 00:00:00); repair or drop that line."
        )
    stamps = stamps.dt.tz_localize(None)
    values = pd.Series(frame[value_col].to_numpy(), index=pd.DatetimeIndex(stamps))
    return as_sentiment_series(values, where)


class FearGreedClient:
    """The Crypto Fear & Greed index over HTTP, cached on disk.

    Parameters
    ----------
    base_url : str
        Service root; ``GET {base_url}/fng/?limit=0&format=json`` returns
        ``{"data": [{"value": "40", "timestamp": "1717200000", ...}, ...]}``.
    cache_dir : Path or None
        Where the last answer is kept (``fear_greed.json``); None disables the cache.
    max_cache_age : float
        Seconds a cached answer is reused without asking again (default 6 hours; the index
        changes daily).
    timeout : float
        HTTP timeout in seconds.
    retries : int
        Extra attempts on network errors and HTTP 429/5xx, with exponential backoff.
    backoff : float
        First backoff delay in seconds (doubles each retry).
    log_failures : bool
        Log each retry and the giving up (default). ``SentimentPoller`` turns it off: it
        reports an outage itself, once.
    """

    def __init__(
        self,
        base_url: str = "https://api.alternative.me",
        *,
        cache_dir: Path | str | None = None,
        max_cache_age: float = 6 * 3600,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        log_failures: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_file = Path(cache_dir) / "fear_greed.json" if cache_dir else None
        self.max_cache_age = max_cache_age
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.log_failures = log_failures

    @property
    def description(self) -> str:
        """How messages name this source."""
        return f"Fear & Greed index at {self.base_url}"

    def _get_once(self, url: str) -> dict:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            e.close()  # the error holds the response's socket
            if e.code == 429 or e.code >= 500:
                raise TemporaryExchangeError(f"HTTP {e.code}") from e
            raise ConfigurationError(
                f"Fear & Greed request {url} failed with HTTP {e.code}. "
                "Use a cached or CSV sentiment source, or try later."
            ) from e
        except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
            # URLError and timeouts, but also a connection dropped before or while answering
            # (RemoteDisconnected, IncompleteRead), which urlopen does not wrap in URLError
            raise TemporaryExchangeError(f"{type(e).__name__}: {e}") from e

    def _get(self) -> dict:
        url = f"{self.base_url}/fng/?limit=0&format=json"
        try:
            return call_with_retries(
                self._get_once,
                url,
                action=f"Fear & Greed request {url}",
                retries=self.retries,
                base_delay=self.backoff,
                quiet=not self.log_failures,
            )
        except TemporaryExchangeError as e:
            last = e.__cause__ or e  # call_with_retries chains the last attempt's error
            raise ConfigurationError(
                f"Fear & Greed request {url} failed with {last} after {self.retries + 1} "
                "attempts. Use a cached or CSV sentiment source, or try later."
            ) from e

    def fetch(self) -> pd.Series:
        """All daily values, indexed by publication time (cached for ``max_cache_age``)."""
        payload = None
        if self.cache_file is not None and self.cache_file.is_file():
            age = time.time() - self.cache_file.stat().st_mtime
            if age <= self.max_cache_age:
                payload = json.loads(self.cache_file.read_text(encoding="utf-8"))
                log.debug("Fear & Greed from cache %s (%.0f s old)", self.cache_file, age)
        if payload is None:
            payload = self._get()
            if self.cache_file is not None:
                self.cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(payload), encoding="utf-8")
                tmp.replace(self.cache_file)
        rows = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(rows, list) or not rows:
            raise ConfigurationError(
                f"Fear & Greed answer from {self.base_url} has no 'data' list; got "
                f"{str(payload)[:200]!r}."
            )
        try:
            stamps = pd.to_datetime([int(r["timestamp"]) for r in rows], unit="s")
            values = [float(r["value"]) for r in rows]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigurationError(f"Fear & Greed answer has a malformed row: {e}.") from e
        series = pd.Series(values, index=pd.DatetimeIndex(stamps)).sort_index()
        return as_sentiment_series(series[~series.index.duplicated(keep="last")], "Fear & Greed")


def generate_sentiment(candles: pd.DataFrame, *, seed: int = 0) -> pd.Series:
    """A synthetic daily 0-100 index for offline demos, published at 00:00 UTC each day.

    The value published at day ``D`` depends only on closes before ``D`` (the 30-day return,
    squashed, plus noise), so aligning it as of each bar never looks ahead. It is not real
    sentiment and says nothing about any market.
    """
    closes = candles["close"]
    days = pd.date_range(
        closes.index[0].normalize() + pd.Timedelta(days=1),
        closes.index[-1].normalize() + pd.Timedelta(days=1),
        freq="D",
    )
    rng = np.random.default_rng(seed)
    past = closes.reindex(days - pd.Timedelta(microseconds=1), method="ffill")
    month_ago = closes.reindex(days - pd.Timedelta(days=30), method="ffill").bfill()
    momentum = np.log(past.to_numpy() / month_ago.to_numpy())
    noise = rng.normal(0.0, 8.0, len(days))
    values = np.clip(50 + 100 * np.tanh(3 * momentum) * 0.4 + noise, 0, 100).round()
    return pd.Series(values, index=days, name="sentiment")


class CsvSentimentSource:
    """A sentiment CSV (``timestamp``, ``value``) read again whenever the file changes.

    For live sessions fed by another process that appends rows (or replaces the file). The file
    is re-read when its modification time or size changes; otherwise the last reading is
    returned without touching the disk. A last line without a newline that changed within
    ``settle`` seconds is taken for a row still being written and left for the next poll.

    Parameters
    ----------
    path : Path or str
        The CSV (see :func:`read_sentiment_csv`).
    settle : float
        Seconds after which an unterminated last line counts as complete.
    """

    def __init__(self, path: Path | str, *, settle: float = 2.0) -> None:
        self.path = Path(path)
        self.settle = settle
        #: How many times the file was actually read (not served from the last reading).
        self.reads = 0
        self._signature: tuple[int, int] | None = None
        self._series: pd.Series | None = None

    @property
    def description(self) -> str:
        """How messages name this source."""
        return f"sentiment CSV {self.path}"

    def fetch(self) -> pd.Series:
        """The file's values, indexed by publication time (re-read only when it changed)."""
        try:
            stat = self.path.stat()
            signature = (stat.st_mtime_ns, stat.st_size)
            if signature == self._signature and self._series is not None:
                return self._series
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError as e:
            raise ConfigurationError(
                f"{self.description} does not exist; give an existing file (columns timestamp, "
                "value)."
            ) from e
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigurationError(f"{self.description} cannot be read: {e}.") from e
        self.reads += 1
        complete = text.endswith("\n") or time.time() - stat.st_mtime >= self.settle
        if not complete:
            text = text[: text.rfind("\n") + 1]  # the last row may still be being written
        try:
            series = _parse_sentiment_csv(io.StringIO(text), str(self.path))
        except AtbError:
            raise
        except ValueError as e:  # pandas' EmptyDataError/ParserError, unparseable timestamps
            raise CandleDataError(f"{self.description} cannot be parsed: {e}.") from e
        self._signature = signature if complete else None
        self._series = series
        return series


class FixedSentimentSource:
    """A series known in advance (tests, replays); ``fetch`` returns it unchanged.

    The poller still uses each value only from its publication time on, so a series that
    reaches into the future never leaks into earlier bars.
    """

    def __init__(self, series: pd.Series, *, description: str = "fixed sentiment series") -> None:
        self.series = as_sentiment_series(series, description)
        self.description = description
        #: How many times ``fetch`` was called.
        self.fetches = 0

    def fetch(self) -> pd.Series:
        """The series given at construction."""
        self.fetches += 1
        return self.series


class SyntheticSentimentSource:
    """The synthetic demo index (:func:`generate_sentiment`) over the candles seen so far.

    A live feed hands it its candles (``observe_candles``, called by the feed through
    ``SentimentPoller.observe_candles`` before each poll). The value published at day ``D``
    uses only closes before ``D``, so it equals what a backtest computes on the same candles.
    The index compares closes 30 days apart: it has values once 31 days of candles were seen
    (a live session must backfill that much). It is not real sentiment and says nothing about
    any market.

    Parameters
    ----------
    seed : int
        The noise seed (``atb backtest --seed``; 0 by default there too).
    """

    description = "synthetic demo sentiment index"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed
        self._closes: pd.Series | None = None

    def observe_candles(self, candles: pd.DataFrame) -> None:
        """Remember ``candles`` (indexed by open time, with a ``close`` column)."""
        closes = candles["close"].astype(np.float64)
        if self._closes is not None:
            closes = pd.concat([self._closes, closes])
            closes = closes[~closes.index.duplicated(keep="last")].sort_index()
        self._closes = closes

    def fetch(self) -> pd.Series:
        """The index over every candle observed so far (from 31 days of candles on)."""
        if self._closes is None or self._closes.empty:
            raise ConfigurationError(
                f"The {self.description} has seen no candles yet; a live feed passes them "
                "before polling (SentimentPoller.observe_candles)."
            )
        series = generate_sentiment(self._closes.to_frame("close"), seed=self.seed)
        series = series[np.isfinite(series.to_numpy())]
        if series.empty:
            span = self._closes.index[-1] - self._closes.index[0]
            raise ConfigurationError(
                f"The {self.description} compares each close with the one 30 days earlier, so "
                f"it needs 31 days of candles; it has {span}. Backfill more bars (for 1h "
                "candles, --backfill-bars 800 or more)."
            )
        return series
