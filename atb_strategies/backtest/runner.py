"""Run a backtest of an ML strategy on candles and summarise it.

``run_backtest`` builds a ``Cerebro`` with the candles as a correctly-timed feed, the strategy,
cash and commission, an ``EquityRecorder`` analyzer and a progress bar, runs it and returns a
``BacktestResult`` with the summary (see ``summarize``), the equity curve and the trades.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from atb_strategies.data.feeds import make_feed
from atb_strategies.features.candles import timeframe_to_timedelta

log = logging.getLogger(__name__)


class EquityRecorder(bt.Analyzer):
    """Per bar: time, portfolio value, cash, whether any position is open; total commission."""

    def create_analysis(self) -> None:
        self.rows: list[tuple[float, float, float, bool]] = []
        self.commission = 0.0
        self.orders: list[dict[str, Any]] = []

    def next(self) -> None:
        broker = self.strategy.broker
        exposed = any(self.strategy.getposition(d).size != 0 for d in self.strategy.datas)
        self.rows.append((self.strategy.datetime[0], broker.getvalue(), broker.getcash(), exposed))

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Completed, order.Partial) and order.executed.size:
            self.commission += float(order.executed.comm)
        if order.status == order.Completed:
            self.orders.append(
                {
                    "time": bt.num2date(order.executed.dt).isoformat(),
                    "symbol": getattr(order.data, "_name", ""),
                    "side": "buy" if order.isbuy() else "sell",
                    "size": float(order.executed.size),
                    "price": float(order.executed.price),
                    "commission": float(order.executed.comm),
                    "role": order.info.get("role"),
                    "model_key": order.info.get("model_key"),
                    "predicted_return": order.info.get("predicted_return"),
                }
            )

    def get_analysis(self) -> dict[str, Any]:
        return {"rows": self.rows, "commission": self.commission, "orders": self.orders}


class ProgressBar(bt.Analyzer):
    """A tqdm progress bar over the bars of the first data feed (when its length is known)."""

    params = (("enabled", True),)

    def start(self) -> None:
        self._bar = None
        total = self.strategy.datas[0].buflen()
        if self.p.enabled and total > 1:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="backtest", unit="bar", leave=False)

    def next(self) -> None:
        if self._bar is not None:
            self._bar.update(len(self.strategy.datas[0]) - self._bar.n)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass
class BacktestResult:
    """What a backtest produced: summary numbers, equity curve, orders and closed trades.

    ``equity`` and ``predictions`` are indexed by candle open time, like the input candles;
    times inside ``orders`` and ``trades`` are backtrader's bar (close) times.
    """

    summary: dict[str, Any]
    equity: pd.DataFrame
    orders: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    strategy: Any = None
    cerebro: Any = None


def summarize(
    equity: pd.DataFrame,
    candles: pd.DataFrame,
    trades: list[dict[str, Any]],
    commission: float,
    timeframe: str,
) -> dict[str, Any]:
    """Total return, CAGR, Sharpe, Sortino, max drawdown, trades, win rate, exposure, fees, and
    buy-and-hold over the same bars. Sharpe and Sortino use per-bar returns, a zero risk-free
    rate, and are annualised with the number of bars in 365 days."""
    values = equity["value"].to_numpy(dtype=np.float64)
    start, end = values[0], values[-1]
    span = equity.index[-1] - equity.index[0]
    years = span / pd.Timedelta(days=365.25) if len(values) > 1 else 0.0
    rets = np.diff(values) / values[:-1] if len(values) > 1 else np.array([])
    per_year = pd.Timedelta(days=365) / timeframe_to_timedelta(timeframe)
    sd = rets.std(ddof=1) if len(rets) > 1 else 0.0
    downside = rets[rets < 0]
    dsd = math.sqrt(np.mean(downside**2)) if len(downside) else 0.0
    peak = np.maximum.accumulate(values)
    drawdown = 1.0 - values / peak
    closes = candles.loc[equity.index[0] : equity.index[-1], "close"]
    wins = [t for t in trades if t.get("pnl_net", 0) > 0]
    return {
        "start": str(equity.index[0]),
        "end": str(equity.index[-1]),
        "bars": len(values),
        "start_value": float(start),
        "end_value": float(end),
        "total_return": float(end / start - 1),
        "cagr": float((end / start) ** (1 / years) - 1) if years > 0 and end > 0 else None,
        "sharpe": float(rets.mean() / sd * math.sqrt(per_year)) if sd > 0 else None,
        "sortino": float(rets.mean() / dsd * math.sqrt(per_year)) if dsd > 0 else None,
        "max_drawdown": float(drawdown.max()) if len(drawdown) else 0.0,
        "trades": len(trades),
        "win_rate": float(len(wins) / len(trades)) if trades else None,
        "exposure": float(equity["exposed"].mean()) if len(equity) else 0.0,
        "fees_paid": float(commission),
        "buy_and_hold_return": float(closes.iloc[-1] / closes.iloc[0] - 1)
        if len(closes) > 1
        else None,
    }


def run_backtest(
    candles: pd.DataFrame,
    strategy: type[bt.Strategy],
    *,
    symbol: str,
    timeframe: str,
    cash: float = 10_000.0,
    commission: float = 0.001,
    progress: bool = False,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    **strategy_params: Any,
) -> BacktestResult:
    """Backtest ``strategy`` on ``candles`` (indexed by time) and summarise it.

    ``start``/``end`` limit the *traded* period; earlier candles still feed the model's warm-up.
    """
    if end is not None:
        candles = candles.loc[: pd.Timestamp(end)]
    bar = timeframe_to_timedelta(timeframe)
    if start is not None:  # backtrader bar times are close times (see make_feed)
        strategy_params.setdefault("trade_from", str(pd.Timestamp(start) + bar))
    cerebro = bt.Cerebro(stdstats=False)
    feed = make_feed(candles, timeframe=timeframe, name=symbol)
    cerebro.adddata(feed, name=symbol)
    cerebro.addstrategy(strategy, **strategy_params)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=commission)
    cerebro.addanalyzer(EquityRecorder, _name="equity")
    cerebro.addanalyzer(ProgressBar, _name="progress", enabled=progress)
    strat = cerebro.run()[0]
    analysis = strat.analyzers.equity.get_analysis()
    rows = analysis["rows"]
    equity = pd.DataFrame(rows, columns=["dt", "value", "cash", "exposed"])
    equity.index = pd.DatetimeIndex(
        [bt.num2date(x) - bar for x in equity.pop("dt")], name="time"
    )  # back to candle open times, like the input frame
    if start is not None:
        equity = equity.loc[pd.Timestamp(start) :]
    trades = list(getattr(strat, "trade_records", []))
    summary = summarize(equity, candles, trades, analysis["commission"], timeframe)
    predictions = None
    indicator = getattr(strat, "predictions", {}).get(strat.datas[0])
    if indicator is not None:
        data = strat.datas[0]
        stamps = pd.DatetimeIndex([bt.num2date(x) - bar for x in data.datetime.array], name="time")
        predictions = pd.DataFrame(
            {
                name: np.asarray(getattr(indicator.lines, name).array, dtype=np.float64)
                for name in indicator.lines.getlinealiases()
            },
            index=stamps,
        )
    return BacktestResult(
        summary=summary,
        equity=equity,
        orders=analysis["orders"],
        trades=trades,
        decisions=list(getattr(strat, "decisions", [])),
        predictions=predictions,
        strategy=strat,
        cerebro=cerebro,
    )
