"""Daily stock bars with closures: train with a trading calendar, trade an SMA cross that asks
the model first. Offline: the stock is a seeded random walk written as a Yahoo-style CSV.

1. write ``ACME.csv`` (Date, Open, High, Low, Close, Adj Close, Volume), one row per XNYS
   session of 2017-2024: weekends and holidays are closures, not gaps;
2. load it with ``load_ohlcv(..., calendar="XNYS")`` and train a small model with
   ``TrainingConfig(calendar="XNYS")`` into a temporary registry (the recipe's windows and the
   30-bar input window follow the daily timeframe: it predicts from about its 50th bar);
3. run an ordinary backtrader SMA(10/30) cross that buys only when ``MlPrediction`` also
   expects a rise, with the host's own sizer (``PercentSizerInt``: whole shares).

    python3 examples/stocks_daily.py [--out DIR]

A random walk has no edge, and the training says so (its baseline gate fails, and
``force_promote`` registers the model anyway): the point here is the plumbing, not the profit.
Without ``exchange_calendars`` (``pip install "atb-strategies[calendar]"``) it uses the
``weekdays`` calendar instead.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd

from atb_strategies import MlPrediction
from atb_strategies.data import load_ohlcv, make_feed
from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.trainer import train_model

SYMBOL = "ACME"


def sessions(start: str, end: str) -> tuple[str, pd.DatetimeIndex]:
    """The calendar's name and its session dates (XNYS when exchange_calendars is there)."""
    try:
        import exchange_calendars as xcals
    except ImportError:
        return "weekdays", pd.bdate_range(start, end)
    with warnings.catch_warnings():  # the library's own pandas deprecation notices
        warnings.simplefilter("ignore")
        return "XNYS", pd.DatetimeIndex(xcals.get_calendar("XNYS", start=start, end=end).sessions)


def write_yahoo_csv(path: Path, days: pd.DatetimeIndex, seed: int = 11) -> None:
    """A seeded random walk on ``days`` (1.5 % daily moves, like a large-cap stock) in
    Yahoo's layout, with a split-adjusted ``Adj Close``."""
    rng = np.random.default_rng(seed)
    n = len(days)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    open_ = np.r_[50.0, close[:-1]] * np.exp(rng.normal(0.0, 0.004, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, 0.006, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, 0.006, n)))
    volume = np.round(2e6 * np.exp(rng.normal(0.0, 0.3, n)))
    frame = pd.DataFrame(
        {
            "Open": open_,
            "High": high,
            "Low": low,
            "Close": close,
            "Adj Close": close * 0.97,
            "Volume": volume,
        },
        index=days.strftime("%Y-%m-%d"),
    )
    frame.to_csv(path, index_label="Date", float_format="%.4f")


class SmaCrossWithModel(bt.Strategy):
    """Buy on a fast-over-slow SMA cross when the model agrees; sell on the cross back."""

    params = (("fast", 10), ("slow", 30), ("registry", None))

    def __init__(self) -> None:
        fast = bt.indicators.SMA(self.data, period=self.p.fast)
        slow = bt.indicators.SMA(self.data, period=self.p.slow)
        self.cross = bt.indicators.CrossOver(fast, slow)
        self.pred = MlPrediction(self.data, symbol=SYMBOL, registry=self.p.registry)
        self.counts = {"crosses_up": 0, "model_agreed": 0, "model_vetoed": 0}
        self.predicted = 0
        self.first_prediction: int | None = None
        self.sizes: list[float] = []

    def next(self) -> None:
        ret = float(self.pred.predicted_return[0])
        if np.isfinite(ret):
            self.predicted += 1
            if self.first_prediction is None:
                self.first_prediction = len(self.data)
        if self.cross[0] > 0 and not self.position:
            self.counts["crosses_up"] += 1
            if np.isfinite(ret) and ret > 0:
                self.counts["model_agreed"] += 1
                self.buy()  # sized by the cerebro's sizer
            else:
                self.counts["model_vetoed"] += 1
        elif self.cross[0] < 0 and self.position:
            self.close()

    def notify_order(self, order: bt.Order) -> None:
        if order.status == order.Completed and order.isbuy():
            self.sizes.append(float(order.executed.size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the CSV and registry here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        calendar, days = sessions("2017-01-01", "2024-12-31")
        csv = out / f"{SYMBOL}.csv"
        write_yahoo_csv(csv, days)
        candles = load_ohlcv(csv, calendar=calendar)
        print(
            f"data: {csv.name}, {len(candles)} daily bars {candles.index[0]:%Y-%m-%d} .. "
            f"{candles.index[-1]:%Y-%m-%d} on the {calendar} calendar"
        )

        registry = out / "models"
        config = TrainingConfig(
            symbol=SYMBOL,
            timeframe="1d",
            calendar=calendar,
            registry=registry,
            epochs=5,
            force_promote=True,
            backtest=False,
        )
        result = train_model(config, candles.loc[:"2022-12-31"])
        print(
            f"trained: {SYMBOL}/basic@{result.version} (sequence_length "
            f"{config.sequence_length}, test samples {result.metrics['test']['samples']})"
        )

        trade = candles.loc["2023-01-01":]
        cerebro = bt.Cerebro(stdstats=False)
        # make_feed stamps each bar at its close (open + 1 day), as MlPrediction expects
        cerebro.adddata(make_feed(trade, timeframe="1d"), name=SYMBOL)
        cerebro.addstrategy(SmaCrossWithModel, registry=str(registry))
        cerebro.addsizer(bt.sizers.PercentSizerInt, percents=20)
        cerebro.broker.setcash(100_000)
        cerebro.broker.setcommission(commission=0.0005)
        strategy = cerebro.run()[0]

        after = len(trade) - (strategy.first_prediction or len(trade)) + 1
        coverage = strategy.predicted / after if after > 0 else 0.0
        c = strategy.counts
        print(f"model: {strategy.pred.model_key}")
        print(
            f"first prediction at bar {strategy.first_prediction} of {len(trade)}; "
            f"predicted on {100 * coverage:.1f} % of the bars after it"
        )
        print(
            f"SMA crosses up: {c['crosses_up']}, bought when the model agreed: "
            f"{c['model_agreed']}, vetoed: {c['model_vetoed']}"
        )
        print(f"entry sizes (whole shares): {[int(s) for s in strategy.sizes]}")
        print(f"final value: {cerebro.broker.getvalue():,.2f}")


if __name__ == "__main__":
    main()
