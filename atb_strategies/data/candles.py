"""Candle validation, re-exported where users look for it (it lives in ``features.candles``)."""

from atb_strategies.features.candles import OHLCV, timeframe_to_timedelta, validate_candles

__all__ = ["OHLCV", "timeframe_to_timedelta", "validate_candles"]
