"""``MlSentiment``: ``MlStrategy`` on a model that also reads market sentiment.

The feed must carry a ``sentiment`` line (``SentimentData``, built by ``make_feed`` from a frame
with a ``sentiment`` column; see ``atb_strategies.sentiment`` for sources and as-of alignment).
A missing column fails before the first bar.

Live (``atb live ml_sentiment``), the feed is a ``CcxtSentimentData`` that polls a sentiment
source as of each bar's close and also carries the value's age (``sentiment_age``): new entries
are refused while it is older than ``max_sentiment_age`` (default 36 hours, for a daily index
such as Fear & Greed: a day between values plus half a day of grace). Backtest feeds carry no
age (aligned sentiment is checked when it is aligned), so the limit does not act there.
"""

from __future__ import annotations

from typing import Any

from atb_strategies.sentiment import DEFAULT_MAX_SENTIMENT_AGE
from atb_strategies.strategies.base import MlStrategy
from atb_strategies.strategies.factory import create_strategy


class MlSentiment(MlStrategy):
    """Trades a sentiment-aware registry model; see ``MlStrategy`` for rules and parameters."""

    params = (("model_type", "sentiment"), ("max_sentiment_age", DEFAULT_MAX_SENTIMENT_AGE))


def create_ml_sentiment_strategy(
    name: str = "MlSentiment",
    sequence_length: int | None = 120,
    model_name: str | None = None,
    model_type: str = "sentiment",
    timeframe: str = "1h",
    **params: Any,
) -> type[MlStrategy]:
    """A configured ``MlSentiment`` subclass; arguments as ``create_ml_basic_strategy``."""
    return create_strategy(
        MlSentiment,
        name,
        sequence_length=sequence_length,
        version=model_name,
        model_type=model_type,
        timeframe=timeframe,
        **params,
    )
