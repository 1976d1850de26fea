"""Market sentiment: sources and as-of alignment onto candles.

Sources give a ``pd.Series`` named ``sentiment`` indexed by **publication time** (naive UTC):

* ``read_sentiment_csv(path)``: columns ``timestamp`` (publication time) and ``value`` (or
  ``sentiment``);
* ``FearGreedClient``: the Crypto Fear & Greed index (0-100, daily) over HTTP, cached on disk;
* ``generate_sentiment(candles)``: a deterministic synthetic index for offline demos, computed
  from past closes only.

``align_sentiment(candles, sentiment, timeframe)`` adds a ``sentiment`` column as of each bar's
**close** (open time + timeframe, when a prediction is made): a value published at or before the
close is used; a later one never is. Missing sentiment is never filled silently: bars without a
value, or whose latest value is older than ``max_age``, raise ``CandleDataError`` naming the first
such bar, unless ``fill`` is given, in which case the fill value and the bars it covered are
recorded in ``frame.attrs["sentiment_fill"]`` (and a model trained on such data records it in its
bundle lineage).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from atb_strategies.exceptions import (
    CandleDataError,
    ConfigurationError,
    TemporaryExchangeError,
)
from atb_strategies.exchange.retry import call_with_retries
from atb_strategies.features.candles import timeframe_to_timedelta

log = logging.getLogger(__name__)


def _as_series(values: pd.Series, where: str) -> pd.Series:
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
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    value_col = "value" if "value" in frame.columns else "sentiment"
    if "timestamp" not in frame.columns or value_col not in frame.columns:
        raise CandleDataError(
            f"{path}: a sentiment CSV needs columns 'timestamp' and 'value'; it has "
            f"{list(frame.columns)}."
        )
    stamps = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
    return _as_series(
        pd.Series(frame[value_col].to_numpy(), index=pd.DatetimeIndex(stamps)), str(path)
    )


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_file = Path(cache_dir) / "fear_greed.json" if cache_dir else None
        self.max_cache_age = max_cache_age
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

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
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
            raise TemporaryExchangeError(str(e)) from e

    def _get(self) -> dict:
        url = f"{self.base_url}/fng/?limit=0&format=json"
        try:
            return call_with_retries(
                self._get_once,
                url,
                action=f"Fear & Greed request {url}",
                retries=self.retries,
                base_delay=self.backoff,
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
        return _as_series(series[~series.index.duplicated(keep="last")], "Fear & Greed")


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


def align_sentiment(
    candles: pd.DataFrame,
    sentiment: pd.Series,
    timeframe: str,
    *,
    max_age: pd.Timedelta | str | None = "2D",
    fill: float | None = None,
) -> pd.DataFrame:
    """``candles`` plus a ``sentiment`` column, as of each bar's close (see module docstring)."""
    if not isinstance(candles.index, pd.DatetimeIndex):
        raise ConfigurationError("align_sentiment needs candles indexed by time.")
    sentiment = _as_series(sentiment, "sentiment")
    close_time = (candles.index + timeframe_to_timedelta(timeframe)).as_unit("ns")
    published_at = sentiment.index.as_unit("ns")
    pos = published_at.searchsorted(close_time, side="right") - 1
    values = np.where(pos >= 0, sentiment.to_numpy()[np.clip(pos, 0, None)], np.nan)
    published = np.where(pos >= 0, published_at.asi8[np.clip(pos, 0, None)], 0)
    missing = pos < 0
    if max_age is not None:
        age = close_time.asi8 - published
        missing |= age > pd.Timedelta(max_age).value
    out = candles.copy()
    if missing.any():
        first = candles.index[int(np.argmax(missing))]
        if fill is None:
            raise CandleDataError(
                f"No sentiment published before the close of bar {first} (or the latest is "
                f"older than {max_age}); {int(missing.sum())} bar(s) lack sentiment. Start the "
                "candles later, give a longer sentiment history, or pass fill= to use a "
                "declared neutral value.",
                row=first,
            )
        values = np.where(missing, fill, values)
        out.attrs["sentiment_fill"] = {
            "value": fill,
            "bars": int(missing.sum()),
            "first_bar": str(first),
        }
        log.warning(
            "sentiment: %d bar(s) filled with %s (first %s)", int(missing.sum()), fill, first
        )
    out["sentiment"] = values
    return out
