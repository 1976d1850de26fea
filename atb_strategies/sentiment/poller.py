"""``SentimentPoller``: sentiment as of each live bar's close, polled once per bar, kept through
outages; ``build_sentiment_poller`` and the staleness rule."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.exceptions import (
    AtbError,
    CandleDataError,
    ConfigurationError,
)
from atb_strategies.features.candles import timeframe_to_timedelta
from atb_strategies.sentiment.sources import (
    CsvSentimentSource,
    FearGreedClient,
    SyntheticSentimentSource,
    as_sentiment_series,
)

log = logging.getLogger("atb_strategies.sentiment")  # one logger for the package


def _utc_naive(when: pd.Timestamp | str | object) -> pd.Timestamp:
    stamp = pd.Timestamp(when)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class SentimentPoller:
    """Sentiment as of each bar's close for a live feed: polled once per bar, kept in outages.

    ``as_of(close)`` is the latest value published at or before ``close`` (never a later one)
    and its publication time. The source is asked at most once per bar: when a bar closing
    after every bar asked for so far comes in; otherwise the last answer is reused. When a
    poll fails (``AtbError`` such as the ``ConfigurationError`` a ``FearGreedClient`` raises after
    its own retries, or ``OSError``), the last good series is kept, so the value in use simply
    gets older (a strategy reads the age and stops entering when it exceeds its limit, see
    :func:`sentiment_staleness`); one warning is logged when the outage starts and one info line
    when the source answers again, never one per bar. The poller only raises when the source
    cannot give any value at its first poll: that is a one-line ``ConfigurationError``.

    Parameters
    ----------
    source : object
        Anything with ``fetch() -> pandas.Series`` of values indexed by publication time (naive
        UTC): :class:`FearGreedClient`, :class:`CsvSentimentSource`,
        :class:`FixedSentimentSource`, :class:`SyntheticSentimentSource`. An optional
        ``description`` names it in messages; an optional ``observe_candles(frame)`` receives
        the feed's candles before each poll.
    max_cache_age : float or None
        Set on sources with a disk cache (``FearGreedClient.max_cache_age``), in seconds.
        Default 30: shorter than any bar, so each per-bar poll asks the service and a new
        value is used from the first bar closing after its publication, as in a backtest
        (``align_sentiment``); the 6-hour default of the client suits offline runs, but live it
        would hold yesterday's index for up to 6 hours after the daily update. 30 s still lets
        a restart, or several sessions sharing one cache directory, ask once per close. None
        leaves the source's setting.

    The poller also turns off the source's own failure logging (``log_failures``), since it
    reports outages itself.

    Attributes
    ----------
    series_ : pandas.Series or None
        The last good answer.
    polls : int
        Polls of the source (successful or not).
    failures : int
        Failed polls.
    outage_since : pandas.Timestamp or None
        Close of the first bar whose poll failed in the current outage; None when answering.
    """

    def __init__(self, source: Any, *, max_cache_age: float | None = 30.0) -> None:
        if not callable(getattr(source, "fetch", None)):
            raise ConfigurationError(
                "SentimentPoller needs a source with fetch() -> pandas.Series (FearGreedClient, "
                f"CsvSentimentSource, FixedSentimentSource...). Got {source!r} instead."
            )
        self.source = source
        self.max_cache_age = max_cache_age
        if max_cache_age is not None and hasattr(source, "max_cache_age"):
            source.max_cache_age = max_cache_age
        if hasattr(source, "log_failures"):
            source.log_failures = False
        self.series_: pd.Series | None = None
        self.polls = 0
        self.failures = 0
        self.outage_since: pd.Timestamp | None = None
        self._outage_polls = 0
        self._polled_for: pd.Timestamp | None = None

    @property
    def description(self) -> str:
        """How messages name the source."""
        return str(getattr(self.source, "description", None) or type(self.source).__name__)

    def observe_candles(self, candles: pd.DataFrame) -> None:
        """Pass ``candles`` (indexed by open time) to a source that derives sentiment from them."""
        observe = getattr(self.source, "observe_candles", None)
        if observe is not None:
            observe(candles)

    def poll(self, close_time: pd.Timestamp | str) -> bool:
        """Ask the source for the bar closing at ``close_time`` unless already asked for it (or
        a later bar); returns whether it asked.

        Raises
        ------
        ConfigurationError
            Only at the first poll, when the source gives no value at all.
        """
        close = _utc_naive(close_time)
        if self._polled_for is not None and close <= self._polled_for:
            return False
        self._polled_for = close
        self.polls += 1
        try:
            series = self._fetch(close)
        except (AtbError, OSError) as e:
            if self.series_ is None:
                raise ConfigurationError(
                    f"Sentiment source {self.description} gave no value at start: "
                    f"{_one_line(e)} Fix the source (or use another: a CSV, the synthetic demo "
                    "index) before trading a sentiment model."
                ) from e
            self.failures += 1
            self._outage_polls += 1
            if self.outage_since is None:
                self.outage_since = close
                log.warning(
                    "sentiment: %s failed at the bar closing %s (%s); keeping the value "
                    "published %s, which gets older each bar; asking again every bar",
                    self.description,
                    close,
                    _one_line(e),
                    self.series_.index[-1],
                )
            return True
        if self.outage_since is not None:
            log.info(
                "sentiment: %s answers again at the bar closing %s after %d failed poll(s) "
                "since %s; latest value published %s",
                self.description,
                close,
                self._outage_polls,
                self.outage_since,
                series.index[-1],
            )
            self.outage_since = None
            self._outage_polls = 0
        self.series_ = series
        return True

    def _fetch(self, close: pd.Timestamp) -> pd.Series:
        series = as_sentiment_series(self.source.fetch(), self.description)
        if series.empty:
            raise ConfigurationError(f"{self.description} returned no values.")
        if self.series_ is not None and series.index[0] > close:
            # only a rewritten source can do this; the value in use must not disappear
            raise CandleDataError(
                f"{self.description} now starts at {series.index[0]}, after the bar closing "
                f"{close}."
            )
        return series

    def as_of(self, close_time: pd.Timestamp | str) -> tuple[float, pd.Timestamp] | None:
        """``(value, published_at)`` of the latest value published at or before ``close_time``
        (polling first if this bar was not asked for yet); None if none was published by then."""
        close = _utc_naive(close_time)
        self.poll(close)
        series = self.series_
        assert series is not None  # poll raised otherwise
        pos = int(series.index.searchsorted(close, side="right")) - 1
        if pos < 0:
            return None
        return float(series.iloc[pos]), series.index[pos]

    def as_of_many(self, close_times: Sequence[pd.Timestamp] | pd.DatetimeIndex) -> pd.DataFrame:
        """``as_of`` for many bars with one poll (for the newest close): a frame indexed by close
        with ``sentiment``, ``published_at`` and ``age_hours`` (NaN/NaT where none)."""
        closes = pd.DatetimeIndex([_utc_naive(c) for c in close_times]).as_unit("ns")
        out = pd.DataFrame(
            {
                "sentiment": np.full(len(closes), np.nan),
                "published_at": pd.Series(pd.NaT, index=closes, dtype="datetime64[ns]"),
                "age_hours": np.full(len(closes), np.nan),
            },
            index=closes,
        )
        if not len(closes):
            return out
        self.poll(closes.max())
        series = self.series_
        assert series is not None  # poll raised otherwise
        published = series.index.as_unit("ns")
        pos = published.searchsorted(closes, side="right") - 1
        have = pos >= 0
        at = pos[have]
        out.loc[have, "sentiment"] = series.to_numpy()[at]
        out.loc[have, "published_at"] = published[at]
        out.loc[have, "age_hours"] = (closes[have].asi8 - published.asi8[at]) / 3.6e12
        return out


def build_sentiment_poller(
    *,
    csv: Path | str | None = None,
    fear_greed_url: str | None = None,
    synthetic: bool = False,
    seed: int = 0,
    cache_dir: Path | str | None = None,
    max_cache_age: float | None = 30.0,
) -> SentimentPoller:
    """The poller of a live session from exactly one source (``atb live ml_sentiment`` options).

    Parameters
    ----------
    csv : Path or str, optional
        ``--sentiment CSV``: a :class:`CsvSentimentSource` (re-read when the file changes).
    fear_greed_url : str, optional
        ``--fear-greed-url URL``: a :class:`FearGreedClient` on this root
        (``https://api.alternative.me`` is the public index). Live, it tries twice (one retry)
        with a 5-second timeout, so a hung service delays a bar by about 10 s at most; the
        next bar asks again anyway.
    synthetic : bool
        ``--synthetic-sentiment``: a :class:`SyntheticSentimentSource` (needs 31 days of
        backfilled candles).
    seed : int
        The synthetic index's seed.
    cache_dir : Path or str, optional
        The Fear & Greed disk cache directory (None: no disk cache).
    max_cache_age : float or None
        See :class:`SentimentPoller`.

    Raises
    ------
    ConfigurationError
        When not exactly one source is given.
    """
    given = [
        name
        for name, on in (
            ("csv", csv is not None),
            ("fear_greed_url", fear_greed_url is not None),
            ("synthetic", synthetic),
        )
        if on
    ]
    if len(given) != 1:
        raise ConfigurationError(
            "A sentiment model trading live needs exactly one sentiment source: csv=PATH, "
            "fear_greed_url=URL or synthetic=True (atb live: --sentiment, --fear-greed-url or "
            f"--synthetic-sentiment). Got {given or 'none'} instead."
        )
    source: Any
    if csv is not None:
        source = CsvSentimentSource(csv)
    elif fear_greed_url is not None:
        source = FearGreedClient(fear_greed_url, cache_dir=cache_dir, timeout=5.0, retries=1)
    else:
        source = SyntheticSentimentSource(seed=seed)
    return SentimentPoller(source, max_cache_age=max_cache_age)


#: The recommended ``max_sentiment_age`` for the daily Fear & Greed index: one daily update
#: plus half a day for a late one; a whole missed update blocks new entries.
DEFAULT_MAX_SENTIMENT_AGE = "36h"


def sentiment_age_limit_hours(limit: str | float | pd.Timedelta | None) -> float | None:
    """A staleness limit in hours: ``"36h"``, ``"2d"``, ``"90m"``, ``"1w"`` (the project's
    durations), a ``Timedelta``, or hours as a number; None (or ``"off"``) means no limit.

    Raises
    ------
    ConfigurationError
        When the limit is not a positive duration.
    """
    if limit is None or (isinstance(limit, str) and limit.strip().lower() in ("off", "none")):
        return None
    try:
        if isinstance(limit, str):
            hours = timeframe_to_timedelta(limit) / pd.Timedelta(hours=1)
        elif isinstance(limit, pd.Timedelta):
            hours = limit / pd.Timedelta(hours=1)
        elif isinstance(limit, int | float) and not isinstance(limit, bool):
            hours = float(limit)
        else:
            raise TypeError(type(limit).__name__)
    except (TypeError, ValueError) as e:  # ConfigurationError is a ValueError
        raise ConfigurationError(
            "The 'max_sentiment_age' parameter must be a duration such as '36h' or '2d', hours "
            f"as a number, or None. Got {limit!r} instead."
        ) from e
    if not math.isfinite(hours) or hours <= 0:
        raise ConfigurationError(
            f"The 'max_sentiment_age' parameter must be a positive duration. Got {limit!r} instead."
        )
    return hours


def sentiment_staleness(
    age_hours: float, limit: str | float | pd.Timedelta | None = DEFAULT_MAX_SENTIMENT_AGE
) -> str | None:
    """Why no new entry may be made on a sentiment value ``age_hours`` old, or None if it may.

    The one wording of the rule, a single clause without ``"; "`` (strategies join reasons with
    it): ``"sentiment is 40.0 h old, older than max_sentiment_age 36h"``, or ``"no sentiment
    value"`` for a NaN age. ``age_hours`` is the ``sentiment_age`` line of a live sentiment
    feed (``CcxtSentimentData``); ``limit`` is the strategy's ``max_sentiment_age`` as the user
    gave it (see :func:`sentiment_age_limit_hours`); None means no limit.
    """
    hours = sentiment_age_limit_hours(limit)
    if hours is None:
        return None
    if not math.isfinite(age_hours):
        return "no sentiment value"
    if age_hours <= hours:
        return None
    shown = limit if isinstance(limit, str) else f"{hours:g}h"
    return f"sentiment is {age_hours:.1f} h old, older than max_sentiment_age {shown}"
