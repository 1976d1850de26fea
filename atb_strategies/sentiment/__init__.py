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

Live trading (``atb_strategies.live.sentiment_feed.CcxtSentimentData``) asks a
``SentimentPoller`` for the same as-of value at each bar's close. The poller wraps any source
with ``fetch() -> pd.Series`` (``FearGreedClient``; ``CsvSentimentSource``, a CSV read again when
it changes; ``FixedSentimentSource``; ``SyntheticSentimentSource``, the demo index over the
feed's candles), polls it at most once per bar and keeps its last answer through outages, so the
value gets older instead of the session stopping. ``build_sentiment_poller`` makes one from the
CLI's options; ``sentiment_staleness(age_hours, max_sentiment_age)`` words the rule that stops
new entries on a stale value (default limit ``DEFAULT_MAX_SENTIMENT_AGE``, 36 hours).
"""

from atb_strategies.sentiment.align import align_sentiment
from atb_strategies.sentiment.poller import (
    DEFAULT_MAX_SENTIMENT_AGE,
    SentimentPoller,
    build_sentiment_poller,
    sentiment_age_limit_hours,
    sentiment_staleness,
)
from atb_strategies.sentiment.sources import (
    CsvSentimentSource,
    FearGreedClient,
    FixedSentimentSource,
    SyntheticSentimentSource,
    generate_sentiment,
    read_sentiment_csv,
)

__all__ = [
    "DEFAULT_MAX_SENTIMENT_AGE",
    "CsvSentimentSource",
    "FearGreedClient",
    "FixedSentimentSource",
    "SentimentPoller",
    "SyntheticSentimentSource",
    "align_sentiment",
    "build_sentiment_poller",
    "generate_sentiment",
    "read_sentiment_csv",
    "sentiment_age_limit_hours",
    "sentiment_staleness",
]
