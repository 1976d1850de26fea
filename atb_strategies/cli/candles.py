"""The candle and sentiment flags of ``atb backtest`` and ``atb train model``, mapped onto the
library's sources (``atb_strategies.data.sources``) and sentiment helpers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from atb_strategies.data import sources
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.sentiment import align_sentiment, generate_sentiment, read_sentiment_csv


def _sentiment_series(
    frame: pd.DataFrame,
    sentiment: Path | None,
    synthetic_sentiment: bool,
    synthetic: bool,
    seed: int,
) -> pd.Series:
    if sentiment is not None:
        return read_sentiment_csv(sentiment)
    if synthetic_sentiment or synthetic:
        return generate_sentiment(frame, seed=seed)
    raise ConfigurationError(
        "This strategy needs sentiment: pass --sentiment FILE (CSV with timestamp, "
        "value) or --synthetic-sentiment (a demo index, not real sentiment)."
    )


def load_candles(
    data: Path | None,
    synthetic: bool,
    timeframe: str,
    bars: int,
    seed: int,
    sentiment: Path | None,
    synthetic_sentiment: bool,
    need_sentiment: bool,
    *,
    symbol: str | None = None,
    exchange_id: str = "binance",
    data_dir: Path | None = None,
    download: bool = False,
    start: str | None = None,
    end: str | None = None,
) -> pd.DataFrame:
    """Candles from ``--data``, ``--synthetic`` or the cache, with a sentiment column when needed.

    The candles come from ``sources.load_candles`` (keywords as there; ``data_dir`` None means
    no cache fallback). A sentiment column is attached when ``need_sentiment`` or a sentiment
    flag is given: ``--sentiment FILE``, else the synthetic index with ``--synthetic-sentiment``
    or ``--synthetic``; the candles then start at the first sentiment value.

    Returns
    -------
    pandas.DataFrame
        Candles with ``attrs["source"]`` describing where they came from.
    """
    frame = sources.load_candles(
        data,
        synthetic,
        timeframe,
        bars,
        seed,
        symbol=symbol,
        exchange_id=exchange_id,
        data_dir=data_dir,
        download=download,
        start=start,
        end=end,
    )
    if not (need_sentiment or sentiment is not None or synthetic_sentiment):
        return frame
    series = _sentiment_series(frame, sentiment, synthetic_sentiment, synthetic, seed)
    return align_sentiment(frame.loc[series.index[0] :], series, timeframe)
