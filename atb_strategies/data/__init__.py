"""Candles: validation, loading, synthetic generation and backtrader feeds."""

from atb_strategies.data.feeds import (
    OhlcvData,
    SentimentData,
    SentimentOnlyData,
    make_feed,
    make_sentiment_feed,
)
from atb_strategies.data.loaders import CandleReport, inspect_candles, load_ohlcv
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.features.candles import validate_candles

__all__ = [
    "CandleReport",
    "OhlcvData",
    "SentimentData",
    "SentimentOnlyData",
    "generate_ohlcv",
    "inspect_candles",
    "load_ohlcv",
    "make_feed",
    "make_sentiment_feed",
    "validate_candles",
]
