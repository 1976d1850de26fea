"""``CcxtData`` backfill paging against the loopback exchange with the real ccxt client."""

from __future__ import annotations

import backtrader as bt
import pandas as pd

from atb_strategies.data import generate_ohlcv
from atb_strategies.live.store import CcxtStore
from atb_strategies.testing.binance_server import BinanceServer
from tests.integration.test_live_broker import FEED_OPTIONS


def test_backfill_with_page_limit_above_exchange_cap_pages_to_the_last_closed_candle() -> None:
    """A short page is not the end: with page_limit above the exchange's 1000-candle cap the
    feed keeps paging up to the last closed candle."""
    seen: list[tuple[pd.Timestamp, str]] = []

    class Watch(bt.Strategy):
        def next(self) -> None:
            status = self.data._getstatusname(self.data._laststatus)
            seen.append((bt.num2date(self.data.datetime[0]), status))

    candles = generate_ohlcv(2600, seed=9)
    with BinanceServer(candles) as server:  # clock at the end: every candle is closed
        store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
        data = store.getdata(
            dataname="BTCUSDT",
            bar="1h",
            backfill_bars=2500,
            page_limit=1500,
            historical=True,
            **FEED_OPTIONS,
        )
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(data, name="BTCUSDT")
        cerebro.addstrategy(Watch)
        cerebro.run()
    assert len(seen) == 2500
    assert seen[-1][0] == candles.index[-1] + pd.Timedelta(hours=1)  # the last closed candle
    assert all(status != "LIVE" for _, status in seen)
