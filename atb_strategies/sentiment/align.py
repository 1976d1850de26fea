"""``align_sentiment``: a ``sentiment`` column as of each bar's close."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from atb_strategies.exceptions import (
    CandleDataError,
    ConfigurationError,
)
from atb_strategies.features.candles import timeframe_to_timedelta
from atb_strategies.sentiment.sources import as_sentiment_series

log = logging.getLogger("atb_strategies.sentiment")  # one logger for the package


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
    sentiment = as_sentiment_series(sentiment, "sentiment")
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
