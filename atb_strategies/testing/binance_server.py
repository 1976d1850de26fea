"""The loopback Binance server's original import path, kept for existing users.

Everything lives in :mod:`atb_strategies.testing.binance`; import from there in new code.
"""

from atb_strategies.testing.binance import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET,
    FAULT_KINDS,
    BinanceApiError,
    BinanceServer,
    FaultInjector,
    Lockstep,
    MarketClock,
    RequestRecord,
    interval_to_ms,
    synthetic_candles,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET",
    "FAULT_KINDS",
    "BinanceApiError",
    "BinanceServer",
    "FaultInjector",
    "Lockstep",
    "MarketClock",
    "RequestRecord",
    "interval_to_ms",
    "synthetic_candles",
]
