"""A sweep cell records only what it reads, and that changes no decision, order, fill or number.

``run_cell`` backtests with ``record_orders=False`` (the fills counted, not kept as dicts),
``record_decisions=False`` and ``plot_confidence=False`` (no ``MlConfidence`` stepped per
bar); ``MlStrategy`` keeps no history of order notifications (backtrader's ``clear`` keeps
every clone in ``_orders``, which nothing reads); ``_enter`` sets only each bracket leg's role
when the broker already carried the order info. Each of these is compared here item by item
with the full backtest, on the real candles with the shipped model (thousands of bracket
orders, stop-loss, take-profit and signal exits, shorts and slippage).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from atb_strategies.backtest.runner import BacktestResult, run_backtest
from atb_strategies.data.feeds import make_feed
from atb_strategies.indicators.cache import prediction_cache
from atb_strategies.indicators.confidence import MlConfidence
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.sweep.cells import Cell, run_cell, trades_records
from atb_strategies.sweep.predictions import compute_predictions
from atb_strategies.sweep.returns import encode_returns

pytestmark = [pytest.mark.slow, pytest.mark.realdata]  # backtests of 4,000 real hourly bars

SHIPPED = str(Path(__file__).resolve().parents[2] / "models")
VERSION = "2026-11-26_1h_v1"
BARS = 4_000
SETTINGS = {
    "timeframe": "1h",
    "cash": 10_000.0,
    "commission": 0.001,
    "slippage_bps": 0.0,
    "start": None,
    "end": None,
}
#: A long-only cell that trades often, and one with shorts, slippage and no take-profit.
CASES = {
    "long": ({"long_threshold": 0.001}, 0.0),
    "short_slipped": (
        {
            "long_threshold": 0.001,
            "allow_shorts": True,
            "short_threshold": 0.001,
            "take_profit": 0.0,
            "stop_loss": 0.015,
        },
        5.0,
    ),
}


@pytest.fixture(scope="module")
def candles(real_candles: pd.DataFrame) -> pd.DataFrame:
    return real_candles.iloc[-BARS:]


@pytest.fixture(scope="module")
def predictions(candles: pd.DataFrame) -> dict:
    params = {"registry": SHIPPED, "version": VERSION}
    entries = compute_predictions(candles, MlBasic, symbol="BTCUSDT", timeframe="1h", params=params)
    prediction_cache.clear()
    return entries


def _full(candles: pd.DataFrame, case: str, strategy: type = MlBasic, **extra: Any):
    """A backtest that records everything (decisions, every fill, the confidence indicator)."""
    params, slippage = CASES[case]
    return run_backtest(
        candles,
        strategy,
        symbol="BTCUSDT",
        timeframe="1h",
        commission=SETTINGS["commission"],
        slippage_bps=slippage,
        registry=SHIPPED,
        version=VERSION,
        **{**params, **extra},
    )


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@pytest.fixture(scope="module", params=sorted(CASES))
def full(request, candles) -> tuple[str, BacktestResult]:
    with prediction_cache.disabled():
        return request.param, _full(candles, request.param)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cell_recorded_lean_equals_the_full_backtest_item_by_item(
    case, candles, predictions
) -> None:
    params, slippage = CASES[case]
    with prediction_cache.disabled():
        full = _full(candles, case)
    cell = Cell(
        "ml_basic",
        "BTCUSDT",
        VERSION,
        {"registry": SHIPPED, **params},
        {**SETTINGS, "slippage_bps": slippage},
    )
    shared = {"candles": {"BTCUSDT": candles}, "predictions": predictions}
    record = run_cell(shared, cell)
    assert record["worker"]["hits"] == 1 and record["worker"]["misses"] == 0
    assert len(full.trades) > 200 and len(full.orders) >= 2 * len(full.trades)
    assert record["summary"] == _plain(full.summary)  # every metric, fills, fees, in-sample
    assert record["summary"]["fills"] == len(full.orders)
    assert trades_records(record["trades"]) == _plain(full.trades)
    assert record["returns"] == encode_returns(full.equity)  # the value at every bar


def test_backtest_without_order_dicts_has_the_same_summary_and_equity(full, candles) -> None:
    case, reference = full
    with prediction_cache.disabled():
        counted = run_backtest(
            candles,
            MlBasic,
            symbol="BTCUSDT",
            timeframe="1h",
            commission=SETTINGS["commission"],
            slippage_bps=CASES[case][1],
            record_orders=False,
            registry=SHIPPED,
            version=VERSION,
            **CASES[case][0],
        )
    assert counted.orders == []
    assert counted.summary == reference.summary
    assert counted.summary["fills"] == len(reference.orders) > 400
    pd.testing.assert_frame_equal(counted.equity, reference.equity, check_exact=True)
    assert counted.trades == reference.trades


class KeepsOrderHistory(MlBasic):
    """``MlBasic`` with backtrader's own ``clear``: every notified order clone kept."""

    clear = bt.Strategy.clear


def _orders_of(result: BacktestResult) -> list[tuple]:
    """Every order the broker took: its status, fills and info, in order."""
    return [
        (o.ref, o.status, o.executed.size, o.executed.price, o.executed.comm, dict(o.info))
        for o in result.strategy.broker.orders
    ]


@pytest.mark.parametrize(
    ("strategy", "extra"),
    [(KeepsOrderHistory, {}), (MlBasic, {"plot_confidence": False})],
    ids=["backtraders_clear", "no_confidence_indicator"],
)
def test_strategy_shortcut_changes_no_order_fill_decision_or_value(
    full, candles, strategy, extra
) -> None:
    case, reference = full
    with prediction_cache.disabled():
        other = _full(candles, case, strategy, **extra)
    assert {**other.summary, "strategy": "MlBasic"} == reference.summary
    pd.testing.assert_frame_equal(other.equity, reference.equity, check_exact=True)
    assert other.orders == reference.orders and other.trades == reference.trades
    assert other.decisions == reference.decisions and len(reference.decisions) > 3_000
    assert [o[1:] for o in _orders_of(other)] == [o[1:] for o in _orders_of(reference)]


def test_strategy_keeps_no_order_notifications_but_backtraders_clear_keeps_them(
    full, candles
) -> None:
    case, reference = full
    with prediction_cache.disabled():
        history = _full(candles, case, KeepsOrderHistory)
    assert reference.strategy._orders == []
    # backtrader's clear keeps a clone per notification: several per order
    assert len(history.strategy._orders) > len(history.strategy.broker.orders) > 1_000


def test_confidence_indicator_is_added_only_when_plotted(full, candles) -> None:
    case, reference = full
    with prediction_cache.disabled():
        off = _full(candles, case, plot_confidence=False)
    indicators = [type(i) for i in reference.strategy.getindicators()]
    assert MlConfidence in indicators and list(reference.strategy.confidences)
    assert MlConfidence not in [type(i) for i in off.strategy.getindicators()]
    assert off.strategy.confidences == {}


class DropsOrderInfo(bt.brokers.BackBroker):
    """A broker that ignores the keyword arguments of ``buy``/``sell`` (no ``order.info``)."""

    def buy(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None,
            tradeid=0, oco=None, trailamount=None, trailpercent=None, parent=None,
            transmit=True, histnotify=False, _checksubmit=True, **kwargs):  # fmt: skip
        return super().buy(owner, data, size, price, plimit, exectype, valid, tradeid, oco,
                           trailamount, trailpercent, parent, transmit, histnotify,
                           _checksubmit)  # fmt: skip

    def sell(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None,
             tradeid=0, oco=None, trailamount=None, trailpercent=None, parent=None,
             transmit=True, histnotify=False, _checksubmit=True, **kwargs):  # fmt: skip
        return super().sell(owner, data, size, price, plimit, exectype, valid, tradeid, oco,
                            trailamount, trailpercent, parent, transmit, histnotify,
                            _checksubmit)  # fmt: skip


def _bracket_infos(candles: pd.DataFrame, broker: bt.brokers.BackBroker | None) -> list[dict]:
    cerebro = bt.Cerebro(stdstats=False)
    if broker is not None:
        cerebro.setbroker(broker)
    cerebro.adddata(make_feed(candles.iloc[-1_500:], timeframe="1h", name="BTCUSDT"))
    cerebro.addstrategy(
        MlBasic, registry=SHIPPED, version=VERSION, timeframe="1h", long_threshold=0.001
    )
    strategy = cerebro.run()[0]
    return [dict(o.info) for o in strategy.broker.orders]


def test_bracket_legs_carry_the_entry_info_with_their_role_whatever_the_broker_keeps(
    candles,
) -> None:
    with prediction_cache.disabled():
        kept = _bracket_infos(candles, None)
        dropped = _bracket_infos(candles, DropsOrderInfo())
    bracket = ("entry", "stop_loss", "take_profit")  # the exits' info is the broker's concern
    assert len(dropped) == len(kept) > 30
    assert [d for d, k in zip(dropped, kept, strict=True) if k["role"] in bracket] == [
        k for k in kept if k["role"] in bracket
    ]
    entries = [i for i in kept if i["role"] == "entry"]
    legs = [i for i in kept if i["role"] in ("stop_loss", "take_profit")]
    assert len(legs) == 2 * len(entries)
    for entry, stop, take in zip(entries, legs[::2], legs[1::2], strict=True):
        assert (stop["role"], take["role"]) == ("stop_loss", "take_profit")
        assert {**stop, "role": "entry"} == entry == {**take, "role": "entry"}
        assert list(stop) == list(entry)  # the same keys, in the same order
