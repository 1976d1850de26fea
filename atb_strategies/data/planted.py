"""A synthetic market with a known, planted signal, to measure what a model family can find.

``generate_planted_ohlcv(bars, phi=..., rule=..., noise=..., seed=...)`` returns the candles and
the **true conditional mean** of the next bar's log return at every bar (``true_mean[t] =
E[log(close[t+1] / close[t]) | bars <= t]``), so the *oracle* predictor can be scored with the
same statistics as a model: its rate of "edge" is the ceiling any model can reach.

Rules (``r[t]`` is the log return of bar ``t``, ``e[t]`` the noise, ``s`` its long-run sd):

* ``"ar1"``: ``r[t+1] = phi * r[t] + e[t+1]``; ``phi**2`` of the return variance is predictable
  (``phi = 0.5``: a quarter).
* ``"sign"``: a momentum rule, ``r[t+1] = phi * s * sign(r[t]) + e[t+1]``: the sign of the last
  bar carries on, whatever its size.
* ``"regime"``: ``r[t+1] = phi * k[t] * r[t] + e[t+1]`` where a hidden two-state Markov regime
  ``k`` (mean duration ``regime_bars``) switches between momentum (+1) and reversal (-1). The
  oracle knows the regime (a ceiling: a model must infer it from recent bars).

Noise: ``"gaussian"`` (constant volatility) or ``"garch_t"`` (GARCH(1,1), a = 0.08, b = 0.90,
Student-t(5) shocks: fat tails and volatility clusters), scaled to ``annual_volatility``.
``phi = 0`` is the null (a random walk or a GARCH-t market). The candles are OHLCV-consistent
(``high >= max(open, close)``, ``low <= min(open, close)``) and not rounded, so the realised
log return is exactly ``r``. Seeded: the output depends only on the arguments.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from atb_strategies.data.synthetic import candles_from_returns
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.candles import timeframe_to_timedelta

RULES = ("ar1", "sign", "regime")
NOISES = ("gaussian", "garch_t")


class PlantedMarket(NamedTuple):
    """The candles and, per bar, the true conditional mean of the next bar's log return."""

    candles: pd.DataFrame
    true_mean: pd.Series


def _check(bars: int, phi: float, rule: str, noise: str) -> None:
    if bars < 2:
        raise ConfigurationError(f"The 'bars' parameter must be >= 2. Got {bars!r} instead.")
    if rule not in RULES:
        raise ConfigurationError(
            f"The 'rule' parameter must be one of {', '.join(RULES)}. Got {rule!r} instead."
        )
    if noise not in NOISES:
        raise ConfigurationError(
            f"The 'noise' parameter must be one of {', '.join(NOISES)}. Got {noise!r} instead."
        )
    if not (np.isfinite(phi) and -1 < phi < 1):
        raise ConfigurationError(
            f"The 'phi' parameter must be in (-1, 1) (a stationary process). Got {phi!r} instead."
        )


def _noise(rng: np.random.Generator, bars: int, noise: str, sd: float) -> tuple[np.ndarray, ...]:
    """Noise and its conditional sd per bar."""
    if noise == "gaussian":
        return rng.normal(0.0, sd, bars), np.full(bars, sd)
    a, b = 0.08, 0.90
    w = sd * sd * (1 - a - b)
    shocks = rng.standard_t(df=5, size=bars) / np.sqrt(5 / 3)
    eps, sigma = np.empty(bars), np.empty(bars)
    var, prev = sd * sd, 0.0
    for t in range(bars):
        var = w + a * prev * prev + b * var
        sigma[t] = np.sqrt(var)
        prev = eps[t] = sigma[t] * shocks[t]
    return eps, sigma


def generate_planted_ohlcv(
    bars: int,
    *,
    phi: float,
    rule: str = "ar1",
    noise: str = "gaussian",
    timeframe: str = "1h",
    seed: int = 0,
    start: str = "2024-01-01",
    start_price: float = 30_000.0,
    annual_volatility: float = 0.6,
    regime_bars: int = 500,
) -> PlantedMarket:
    """Seeded candles with a planted signal of strength ``phi``; see the module docstring.

    Returns
    -------
    PlantedMarket
        ``candles`` (open, high, low, close, volume; ``attrs`` ``timeframe``, ``source``) and
        ``true_mean`` (same index): the conditional mean of the next bar's log return.

    Raises
    ------
    ConfigurationError
        ``bars`` < 2, ``phi`` outside (-1, 1), or an unknown ``rule`` or ``noise``.
    """
    _check(bars, phi, rule, noise)
    rng = np.random.default_rng(seed)
    step = timeframe_to_timedelta(timeframe)
    sd = annual_volatility / np.sqrt(pd.Timedelta(days=365) / step)
    eps, sigma = _noise(rng, bars, noise, sd)
    if rule == "regime":
        switches = rng.random(bars) < 1.0 / regime_bars
        regime = np.where(np.cumsum(switches) % 2 == 0, 1.0, -1.0)
    else:
        regime = np.ones(bars)
    returns = np.empty(bars)
    mean = np.empty(bars)  # mean[t]: E[r[t+1] | r[<=t], regime[t]]
    prev = 0.0
    for t in range(bars):
        returns[t] = (mean[t - 1] if t else 0.0) + eps[t]
        prev = returns[t]
        if rule == "sign":
            mean[t] = phi * sd * np.sign(prev)
        else:
            mean[t] = phi * regime[t] * prev
    candles = candles_from_returns(returns, sigma, rng, timeframe, start, start_price)
    candles.attrs["timeframe"] = timeframe
    candles.attrs["source"] = f"planted({rule}, phi={phi:g}, {noise}, seed={seed})"
    return PlantedMarket(candles, pd.Series(mean, index=candles.index, name="true_mean"))
