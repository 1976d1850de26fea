"""``MlStrategy`` sizes entries as the host's cerebro is set up (issue 19 item 6).

Real cerebro runs of ``MlBasic`` on a tiny linear ONNX model: a sizer added with
``cerebro.addsizer`` decides every entry; a futures-like commission scheme (margin, multiplier)
gets whole contracts that the margin covers; a market that closes trades whole shares; crypto
keeps its fractional sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from atb_strategies.data.feeds import make_feed
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import BundleFactory, linear_onnx

SEQ = 16


class RecordingMlBasic(MlBasic):
    """``MlBasic`` keeping (role, status, created size) of every order notification."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, float]] = []

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Completed, order.Margin, order.Rejected):
            role = str(order.info.get("role", ""))
            self.seen.append((role, order.getstatusname(), float(order.created.size)))
        super().notify_order(order)

    def entries(self) -> list[tuple[str, float]]:
        return [(status, size) for role, status, size in self.seen if role == "entry"]


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    make_bundle(symbol="BTCUSDT", model_bytes=linear_onnx(SEQ, 3, seed=0, scale=0.001))
    return str(tmp_path / "models")


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return generate_ohlcv(600, timeframe="1h", seed=1)


def run(
    registry: str, candles: pd.DataFrame, setup: Any = None, cash: float = 10_000.0, **params: Any
) -> RecordingMlBasic:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(make_feed(candles, name="BTCUSDT"))
    cerebro.broker.setcash(cash)
    if setup is not None:
        setup(cerebro)
    cerebro.addstrategy(RecordingMlBasic, registry=registry, **params)
    (strategy,) = cerebro.run()
    return strategy


def test_the_cerebro_sizer_decides_every_entry(registry: str, candles: pd.DataFrame) -> None:
    strategy = run(registry, candles, lambda c: c.addsizer(bt.sizers.FixedSize, stake=7))
    entries = strategy.entries()
    assert entries
    assert {abs(size) for _, size in entries} == {7.0}


def test_a_sizer_for_this_strategy_index_counts_too(registry: str, candles: pd.DataFrame) -> None:
    strategy = run(registry, candles, lambda c: c.addsizer_byidx(0, bt.sizers.FixedSize, stake=3))
    assert {abs(size) for _, size in strategy.entries()} == {3.0}


def test_futures_commission_gets_whole_contracts_the_margin_covers(
    registry: str, candles: pd.DataFrame
) -> None:
    def futures(cerebro: bt.Cerebro) -> None:
        cerebro.broker.setcommission(commission=2.0, mult=10, margin=2_000.0)

    strategy = run(registry, candles, futures, cash=1_000_000.0)
    entries = strategy.entries()
    assert entries
    assert all(status == "Completed" for status, _ in entries)
    assert all(size == int(size) and size >= 1 for _, size in entries)
    # the budget (10 % of the value x confidence) buys contracts of 2,000 margin each
    assert max(size for _, size in entries) <= 0.1 * strategy.broker.getvalue() / 2_000 + 1


def test_crypto_keeps_fractional_sizes(registry: str, candles: pd.DataFrame) -> None:
    entries = run(registry, candles).entries()
    assert entries
    assert any(size != int(size) for _, size in entries)


def test_whole_units_floor_the_budget(registry: str, candles: pd.DataFrame) -> None:
    cash = 10_000_000.0  # a budget of several coins at ~27,000 each
    fractional = run(registry, candles, cash=cash, units="fractional").entries()
    whole = run(registry, candles, cash=cash, units="whole").entries()
    assert whole
    assert all(size == int(size) for _, size in whole)
    # the first entry is decided on the same bar with the same cash: floor of the fraction
    assert whole[0][1] == int(fractional[0][1])


def test_auto_is_whole_on_a_market_that_closes(make_bundle: BundleFactory, tmp_path: Path) -> None:
    bundle = make_bundle(
        symbol="SPY", timeframe="1d", model_bytes=linear_onnx(SEQ, 3, seed=0, scale=0.001)
    )
    meta_path = bundle / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["calendar"] = "weekdays"
    meta_path.write_text(json.dumps(meta))
    days = generate_ohlcv(700, timeframe="1d", seed=3, start_price=400.0)
    days = days[days.index.day_of_week < 5]

    def sizes(units: str) -> list[float]:
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(make_feed(days, name="SPY"), name="SPY")
        cerebro.broker.setcash(100_000.0)
        cerebro.addstrategy(RecordingMlBasic, registry=str(tmp_path / "models"), units=units)
        (strategy,) = cerebro.run()
        return [size for _, size in strategy.entries()]

    auto = sizes("auto")
    assert auto
    assert all(size == int(size) for size in auto)
    assert any(size != int(size) for size in sizes("fractional"))


def test_units_must_be_known(registry: str, candles: pd.DataFrame) -> None:
    with pytest.raises(ConfigurationError, match="'units' parameter of RecordingMlBasic"):
        run(registry, candles, units="shares")
