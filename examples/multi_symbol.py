"""Two symbols, two models, one cerebro: MlSentiment on BTCUSDT and ETHUSDT.

Each feed gets its own registry model (selected by the feed's name) and its own rolling window.
Candles and the sentiment index are synthetic (offline).

    python3 examples/multi_symbol.py
"""

from __future__ import annotations

import backtrader as bt

from atb_strategies.data import generate_ohlcv, make_feed
from atb_strategies.sentiment import align_sentiment, generate_sentiment
from atb_strategies.strategies.ml_sentiment import MlSentiment


def feed_for(symbol: str, seed: int, start_price: float) -> bt.feeds.PandasData:
    candles = generate_ohlcv(3000, timeframe="1h", seed=seed, start_price=start_price)
    sentiment = generate_sentiment(candles, seed=seed)
    frame = align_sentiment(candles.loc[sentiment.index[0] :], sentiment, "1h")
    return make_feed(frame, timeframe="1h", name=symbol)


def main() -> None:
    cerebro = bt.Cerebro(stdstats=False)
    for symbol, seed, price in (("BTCUSDT", 11, 30_000.0), ("ETHUSDT", 12, 2_000.0)):
        cerebro.adddata(feed_for(symbol, seed, price), name=symbol)
    cerebro.addstrategy(MlSentiment, long_threshold=0.001, position_size=0.2)
    cerebro.broker.setcash(10_000)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addanalyzer(bt.analyzers.Returns, _name="returns")
    strategy = cerebro.run()[0]
    for data, pred in strategy.predictions.items():
        trades = [t for t in strategy.trade_records if t["symbol"] == data._name]
        print(f"{data._name}: model {pred.model_key}, closed trades {len(trades)}")
    print(
        f"final value: {cerebro.broker.getvalue():,.2f}  "
        f"total return: {strategy.analyzers.returns.get_analysis()['rtot'] * 100:+.2f} %"
    )


if __name__ == "__main__":
    main()
