"""Regression tests for live-trading findings of the code review (all against the loopback
exchange with the real ccxt client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from atb_strategies.data import generate_ohlcv
from atb_strategies.live.broker import KillSwitch
from atb_strategies.live.store import CcxtStore
from atb_strategies.testing.binance_server import BinanceServer
from tests.integration.test_live_broker import (
    BRACKET_OPTIONS,
    FEED_OPTIONS,
    NOW_ROW,
    RecordingMlBasic,
    bracket_refs,
    crash_after,
    make_server,
    run_live,
)


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(420, seed=3)


def test_stop_leg_with_fee_taken_in_bought_asset_sells_the_net_position(
    hourly: pd.DataFrame, tmp_path: Path
) -> None:
    """Binance's default fee (taken from the received asset) leaves less than ordered: the
    stop leg must sell what is held, and complete, not be refused and leave no protection."""
    candles = crash_after(hourly, NOW_ROW + 2, 0.94)
    with make_server(candles, fee_asset="received") as server:
        run = run_live(
            server,
            journal=tmp_path / "j.sqlite",
            max_live_bars=3,
            backfill_bars=300,
            strategy=RecordingMlBasic,
            strategy_options=BRACKET_OPTIONS,
        )
        btc_free, btc_locked = server.balance("BTC")
    strat = run.strategy
    _, stop, take = bracket_refs(strat)
    assert strat.last(stop).status == "Completed"
    assert strat.last(take).status == "Canceled"
    held = float(btc_free) + float(btc_locked)
    assert held < 1e-5  # only dust below the market's amount step is left
    assert run.broker.getposition(run.data).size == pytest.approx(held, abs=1e-12)


def test_kill_switch_ignores_backfilled_prices_and_keeps_existing_holdings(
    hourly: pd.DataFrame, tmp_path: Path
) -> None:
    """Holding BTC while prices fell during the backfill window is not a drawdown of the
    session: the switch starts watching at the first live bar."""
    candles = crash_after(hourly, NOW_ROW - 3, 0.8)  # a 20 % fall a few backfilled hours ago
    with make_server(candles, balances={"USDT": 1_000, "BTC": 1}) as server:
        run = run_live(
            server,
            {},
            journal=tmp_path / "j.sqlite",
            max_live_bars=3,
            broker_options={"kill_switch": KillSwitch(max_drawdown=0.15, max_daily_loss=0.15)},
        )
        posts = server.count("/api/v3/order", "POST")
    assert not run.broker.killed
    assert posts == 0
    assert run.broker.getposition(run.data).size == 1.0
    assert run.strategy.live_bars == 3


@pytest.mark.parametrize("kind", ["429", "418"])
def test_rate_limited_create_order_rejects_the_order_without_crashing(
    hourly: pd.DataFrame, tmp_path: Path, kind: str
) -> None:
    def arm(server: Any) -> None:
        server.faults.queue("/api/v3/order", kind, count=1, method="POST")

    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.01), 2: lambda s: s.place("buy", 0.01)},
            journal=tmp_path / "j.sqlite",
            max_live_bars=3,
            before_run=arm,
        )
        placed = server.orders()
    first, second = run.strategy.orders
    refused = run.strategy.last(first.ref)
    assert refused.status == "Rejected"
    assert "rate limited" in first.info["reject_reason"]
    assert run.strategy.last(second.ref).status == "Completed"
    assert len(placed) == 1  # the refused one was never placed, the next one was


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
