"""An ordinary backtrader script that adds atb's MlPrediction to its own strategy.

Nothing here is specific to atb-strategies except one import and one line in ``__init__``:
the indicator pulls the shipped BTCUSDT/basic model from the registry and exposes
``predicted_price``, ``predicted_return``, ``confidence`` and ``direction`` lines.

    python3 examples/plug_into_existing_setup.py
"""

from __future__ import annotations

import backtrader as bt

from atb_strategies import MlPrediction
from atb_strategies.data import generate_ohlcv


class SmaWithModelFilter(bt.Strategy):
    """A plain SMA crossover that only buys when the model also expects a rise."""

    params = (("fast", 10), ("slow", 30), ("min_return", 0.0))

    def __init__(self) -> None:
        self.cross = bt.indicators.CrossOver(
            bt.indicators.SMA(self.data, period=self.p.fast),
            bt.indicators.SMA(self.data, period=self.p.slow),
        )
        self.pred = MlPrediction(self.data, symbol="BTCUSDT", model_type="basic")

    def next(self) -> None:
        if (
            not self.position
            and self.cross > 0
            and self.pred.predicted_return[0] > self.p.min_return
        ):
            self.buy(size=0.05)
        elif self.position and self.cross < 0:
            self.close()


def main() -> None:
    candles = generate_ohlcv(3000, timeframe="1h", seed=3)
    cerebro = bt.Cerebro()
    feed = bt.feeds.PandasData(
        dataname=candles, timeframe=bt.TimeFrame.Minutes, compression=60
    )  # hourly: PandasData defaults to daily
    cerebro.adddata(feed, name="BTCUSDT")
    cerebro.addstrategy(SmaWithModelFilter)
    cerebro.broker.setcash(10_000)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="drawdown")
    strategy = cerebro.run()[0]
    trades = strategy.analyzers.trades.get_analysis()
    closed = trades.get("total", {}).get("closed", 0)
    print(f"model: {strategy.pred.model_key}")
    print(
        f"final value: {cerebro.broker.getvalue():,.2f}  closed trades: {closed}  "
        f"max drawdown: {strategy.analyzers.drawdown.get_analysis().max.drawdown:.2f} %"
    )


if __name__ == "__main__":
    main()
