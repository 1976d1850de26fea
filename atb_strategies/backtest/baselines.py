"""Baselines a strategy must beat, run in the same engine with the same fees and slippage.

``run_baselines`` backtests, over the strategy's own traded bars:

* ``buy_and_hold_scaled``: buy on the first bar a fraction of the portfolio equal to the
  strategy's average invested fraction, and hold (a strategy 1 % invested is compared with
  1 % of buy-and-hold, not 100 %);
* ``always_long``: long from the first bar at the strategy's ``position_size``, held;
* ``sma_cross``: long at ``position_size`` while SMA(24) is above SMA(96) (a day over four);
* ``reversal_1bar``: long at ``position_size`` after a down bar, flat after an up bar.

Each row has the net and gross (before fees) return, Sharpe, max drawdown, trades, fees and
exposure, computed by ``summarize`` like the strategy's.
"""

from __future__ import annotations

from typing import Any

import backtrader as bt
import pandas as pd

RULES = ("buy_and_hold_scaled", "always_long", "sma_cross", "reversal_1bar")


class Baseline(bt.Strategy):
    """A rule-based long-only strategy sized at ``fraction`` of the portfolio value."""

    params = (
        ("rule", "always_long"),  # one of RULES
        ("fraction", 0.1),  # of the portfolio value, per entry
        ("fast", 24),  # SMA periods of sma_cross
        ("slow", 96),
        ("trade_from", None),  # ISO bar (close) time before which nothing is traded
    )

    def __init__(self) -> None:
        if self.p.rule == "sma_cross":
            self.fast = bt.ind.SMA(self.data.close, period=self.p.fast)
            self.slow = bt.ind.SMA(self.data.close, period=self.p.slow)
        self._from = pd.Timestamp(self.p.trade_from) if self.p.trade_from else None

    def _want_long(self) -> bool:
        rule = self.p.rule
        if rule == "sma_cross":
            return bool(self.fast[0] > self.slow[0])
        if rule == "reversal_1bar":
            return len(self.data) > 1 and self.data.close[0] < self.data.close[-1]
        return True

    def next(self) -> None:
        if self._from is not None and bt.num2date(self.data.datetime[0]) < self._from:
            return
        holding = self.getposition(self.data).size > 0
        want = self._want_long()
        if want and not holding and self.p.fraction > 0:
            size = self.broker.getvalue() * self.p.fraction / float(self.data.close[0])
            self.buy(size=size)
        elif not want and holding:
            self.close()


def run_baselines(
    candles: pd.DataFrame,
    *,
    symbol: str,
    timeframe: str,
    start: str | pd.Timestamp | None,
    end: str | pd.Timestamp | None,
    cash: float,
    commission: float,
    slippage_bps: float,
    position_size: float,
    invested_fraction: float,
) -> dict[str, dict[str, Any]]:
    """The baselines' summaries (see the module docstring), keyed by rule."""
    from atb_strategies.backtest.runner import run_backtest

    fractions = {
        "buy_and_hold_scaled": invested_fraction,
        "always_long": position_size,
        "sma_cross": position_size,
        "reversal_1bar": position_size,
    }
    keep = ("total_return", "sharpe", "max_drawdown", "trades", "exposure", "fees_paid")
    out = {}
    for rule in RULES:
        result = run_backtest(
            candles,
            Baseline,
            symbol=symbol,
            timeframe=timeframe,
            cash=cash,
            commission=commission,
            slippage_bps=slippage_bps,
            start=start,
            end=end,
            baselines=False,
            rule=rule,
            fraction=fractions[rule],
        )
        s = result.summary
        row = {k: s[k] for k in keep}
        row["trades"] = len(result.orders)  # fills: a held position has no closed trade
        row["gross_return"] = (s["end_value"] + s["fees_paid"]) / s["start_value"] - 1
        row["fraction"] = fractions[rule]
        out[rule] = row
    return out
