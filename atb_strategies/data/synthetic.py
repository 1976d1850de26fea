"""A deterministic synthetic market, so backtests and demos run on a fresh machine offline.

``generate_ohlcv(bars, timeframe="1h", seed=0)`` draws log returns from a GARCH(1,1) process
(volatility clustering) plus a slowly switching drift regime (trends up, down and sideways),
builds intrabar highs and lows from the bar's volatility, and volume that rises with absolute
returns. The same seed gives the same candles on every machine (numpy's PCG64).

It is a plausible price path, not a model of any real asset; nothing learned on it is an edge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atb_strategies.features.candles import timeframe_to_timedelta


def generate_ohlcv(
    bars: int = 5000,
    *,
    timeframe: str = "1h",
    seed: int = 0,
    start: str = "2024-01-01",
    start_price: float = 30_000.0,
    annual_volatility: float = 0.6,
) -> pd.DataFrame:
    """Seeded synthetic OHLCV candles indexed by open time.

    Parameters
    ----------
    bars : int
        Number of candles.
    timeframe : str
        Bar size (``1m``, ``1h``, ``1d``...); volatility is scaled to it.
    seed : int
        Random seed; the output depends only on the arguments.
    start : str
        Open time of the first candle (UTC).
    start_price : float
        First open.
    annual_volatility : float
        Long-run annualised volatility of log returns.
    """
    if bars < 2:
        raise ValueError(f"The 'bars' parameter must be >= 2. Got {bars!r} instead.")
    rng = np.random.default_rng(seed)
    step = timeframe_to_timedelta(timeframe)
    per_year = pd.Timedelta(days=365) / step
    long_var = annual_volatility**2 / per_year
    # GARCH(1,1): var_t = w + a * r_{t-1}^2 + b * var_{t-1}, with long-run variance long_var.
    a, b = 0.08, 0.90
    w = long_var * (1 - a - b)
    # Drift regimes: every ~300 bars pick up / down / flat with a drift of +-1.5 sigma per 100 bars.
    regime_len = rng.geometric(1 / 300, size=bars // 50 + 2)
    regimes = np.repeat(rng.choice([-1.0, 0.0, 1.0], size=len(regime_len)), regime_len)[:bars]
    if len(regimes) < bars:
        regimes = np.pad(regimes, (0, bars - len(regimes)), mode="edge")
    drift = regimes * 0.15 * np.sqrt(long_var)
    shocks = rng.standard_t(df=5, size=bars) / np.sqrt(5 / 3)
    returns = np.empty(bars)
    sigma = np.empty(bars)
    var = long_var
    prev = 0.0
    for t in range(bars):
        var = w + a * prev * prev + b * var
        sigma[t] = np.sqrt(var)
        prev = sigma[t] * shocks[t]
        returns[t] = drift[t] + prev
    frame = candles_from_returns(returns, sigma, rng, timeframe, start, start_price, decimals=2)
    frame.attrs["timeframe"] = timeframe
    frame.attrs["source"] = f"synthetic(seed={seed})"
    return frame


def candles_from_returns(
    returns: np.ndarray,
    sigma: np.ndarray,
    rng: np.random.Generator,
    timeframe: str,
    start: str,
    start_price: float,
    *,
    decimals: int | None = None,
) -> pd.DataFrame:
    """OHLCV candles whose close-to-close log returns are ``returns``: each bar opens at the
    previous close, its wicks reach beyond the body by half-normal multiples of the bar's
    volatility ``sigma``, and volume rises with the absolute return. ``high >= max(open,
    close)`` and ``low <= min(open, close)`` hold on every bar (also after rounding to
    ``decimals``)."""
    bars = len(returns)
    step = timeframe_to_timedelta(timeframe)
    close = start_price * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([start_price], close[:-1]))
    wick_up = np.abs(rng.normal(0.0, 0.6, bars)) * sigma
    wick_down = np.abs(rng.normal(0.0, 0.6, bars)) * sigma
    high = np.maximum(open_, close) * np.exp(wick_up)
    low = np.minimum(open_, close) * np.exp(-wick_down)
    base_volume = 1_000.0 * np.sqrt(step / pd.Timedelta(hours=1))
    volume = base_volume * np.exp(rng.normal(0.0, 0.3, bars)) * (1 + 40 * np.abs(returns))
    index = pd.date_range(start, periods=bars, freq=step, name="timestamp")
    columns = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    if decimals is not None:
        columns = {k: v.round(decimals if k != "volume" else 5) for k, v in columns.items()}
    frame = pd.DataFrame(columns, index=index)
    frame["high"] = frame[["open", "high", "close"]].max(axis=1)
    frame["low"] = frame[["open", "low", "close"]].min(axis=1)
    return frame
