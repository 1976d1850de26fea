"""``CcxtSentimentData``: ``CcxtData`` plus the market sentiment as of each bar's close.

A sentiment model (``atb live ml_sentiment``) reads a ``sentiment`` line from its price feed.
This feed writes, on every bar it delivers (backfilled and live), the value a
:class:`~atb_strategies.sentiment.SentimentPoller` gives as of the bar's **close** (open +
timeframe, whatever ``stamp`` says): the latest value published at or before the close, never a
later one, exactly as ``align_sentiment`` does for backtests. A second line, ``sentiment_age``,
is the age of that value at the close in hours (close - publication time); strategies compare
it with their ``max_sentiment_age`` (wording: ``atb_strategies.sentiment.sentiment_staleness``).

Polling: the poller is asked once for the whole backfill (as of its newest close; older bars
take their values from the same answer's history), then once per poll that brings closed
candles, for the newest of them. A failing source never stops the feed: the poller keeps its
last good answer, so ``sentiment`` stays and ``sentiment_age`` grows.

Bars without any value: a bar whose close comes before the source's first publication cannot
get a value (NaN would make ``MlPrediction`` raise). Backfilled bars before the first
publication are therefore dropped, with one warning naming how many; the model warms up on the
rest. If no backfilled bar has a value, the session refuses to start with one line. Once a bar
has a value, every later one has one too (the poller refuses an answer that would remove it).

Build it through the store: ``store.getdata(dataname="BTCUSDT", bar="1h",
sentiment=SentimentPoller(FearGreedClient()))`` (a bare source is wrapped in a poller), or pass
``feed_options={"sentiment": poller}`` to ``live.runner.build_live_cerebro``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.exceptions import CandleDataError, ConfigurationError
from atb_strategies.live.feed import CcxtData
from atb_strategies.sentiment import SentimentPoller

log = logging.getLogger(__name__)


class CcxtSentimentData(CcxtData):
    """Live candles of one market with the sentiment as of each bar's close.

    Parameters
    ----------
    sentiment : SentimentPoller or source
        Where the values come from; a source (anything with ``fetch() -> pandas.Series``) is
        wrapped in a ``SentimentPoller`` with its defaults.

    The other parameters are ``CcxtData``'s.

    Lines
    -----
    sentiment : float
        The latest value published at or before the bar's close.
    sentiment_age : float
        Hours between that value's publication and the bar's close.
    """

    lines = ("sentiment", "sentiment_age")
    params = (("sentiment", None),)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        source = self.p.sentiment
        if source is None:
            raise ConfigurationError(
                "CcxtSentimentData needs sentiment=SentimentPoller(source) (or a source with "
                "fetch()); for a feed without sentiment use CcxtData."
            )
        self.poller = source if isinstance(source, SentimentPoller) else SentimentPoller(source)
        self._sentiment_started = False

    def _fetch_closed(self, since: int) -> list[list[float]]:
        bars = super()._fetch_closed(since)
        if not bars:
            return bars
        opens = pd.to_datetime([int(b[0]) for b in bars], unit="ms")
        self.poller.observe_candles(
            pd.DataFrame(
                [b[1:6] for b in bars],
                index=opens,
                columns=["open", "high", "low", "close", "volume"],
            )
        )
        asof = self.poller.as_of_many(opens + pd.Timedelta(milliseconds=self._tf_ms))
        values = asof["sentiment"].to_numpy()
        ages = asof["age_hours"].to_numpy()
        have = np.isfinite(values)
        if not self._sentiment_started:
            bars, values, ages = self._drop_bars_before_first_value(bars, values, ages, have)
            self._sentiment_started = True
        elif not have.all():  # the poller keeps every value it served: a bug if reached
            first = opens[int(np.argmin(have))]
            raise CandleDataError(
                f"{self.market_symbol}: no sentiment for the bar opening {first} after earlier "
                "bars had one.",
                row=first,
            )
        return [
            [*bar, float(value), float(age)]
            for bar, value, age in zip(bars, values, ages, strict=True)
        ]

    def _drop_bars_before_first_value(
        self, bars: list[list[float]], values: np.ndarray, ages: np.ndarray, have: np.ndarray
    ) -> tuple[list[list[float]], np.ndarray, np.ndarray]:
        """The first bars of the session, from the first one with a value on."""
        first_published = self.poller.series_.index[0] if self.poller.series_ is not None else None
        close = pd.Timestamp(int(bars[-1][0]) + self._tf_ms, unit="ms")
        if not have.any():
            raise ConfigurationError(
                f"{self.poller.description} has no value published at or before {close} (the "
                f"close of the newest {self.market_symbol} {self.p.bar} bar); its first is "
                f"{first_published}. Give a source with history up to now."
            )
        keep = int(np.argmax(have))
        if keep:
            log.warning(
                "%s %s: dropped the first %d backfilled bar(s), which close before the first "
                "sentiment value (published %s); the model warms up on the other %d. Give a "
                "longer sentiment history to keep them.",
                self.market_symbol,
                self.p.bar,
                keep,
                first_published,
                len(bars) - keep,
            )
        return bars[keep:], values[keep:], ages[keep:]

    def _write(self, item: tuple[list[float], bool]) -> None:
        bar, live = item
        super()._write((bar[:6], live))
        self.lines.sentiment[0] = bar[6]
        self.lines.sentiment_age[0] = bar[7]
