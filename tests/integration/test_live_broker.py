"""``CcxtBroker`` and ``PaperBroker`` in whole live ``cerebro.run()`` sessions: the real
``ccxt.binance`` against the loopback exchange, a ``CcxtData`` feed, and a tmp SQLite journal.

The market clock starts frozen half-way through candle ``NOW_ROW`` and runs in lockstep with
the feed: each time the feed, having been shown every closed candle, asks the time while it
waits, the clock moves to the next close. So "live bar n" is always the same candle, orders
placed on a bar reach the exchange at the next candle's open, and no candle can close unseen
however slow the machine is. Strategies act on live bars only; every notification is recorded
and compared with what the exchange itself holds (orders, trades, balances).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import backtrader as bt
import ccxt
import pandas as pd
import pytest

from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.live.broker import KillSwitch
from atb_strategies.live.journal import Journal
from atb_strategies.live.paper import PaperBroker
from atb_strategies.live.store import CcxtStore
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.testing.binance_server import BinanceServer

pytestmark = pytest.mark.slow  # trains, runs the examples or runs live sessions

REGISTRY = Path(__file__).resolve().parents[2] / "models"
HOUR = 3_600_000
FEED_OPTIONS = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}
NOW_ROW = 330  # the clock starts half-way through this candle; live bar 1 is this candle
POST_ORDER = ("/api/v3/order", "POST")


def _ms(stamp: Any) -> int:
    return int(pd.Timestamp(stamp).value // 1_000_000)


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(420, seed=3)


def crash_after(candles: pd.DataFrame, row: int, factor: float) -> pd.DataFrame:
    """The candles with every price from candle ``row`` on multiplied by ``factor``."""
    out = candles.copy()
    cols = ["open", "high", "low", "close"]
    out.iloc[row:, [out.columns.get_loc(c) for c in cols]] *= factor
    return out


def make_server(candles: pd.DataFrame, **kwargs: Any) -> BinanceServer:
    kwargs.setdefault("balances", {"USDT": 10_000, "BTC": 0})
    start = _ms(candles.index[NOW_ROW]) + HOUR // 2
    return BinanceServer(candles, start_time_ms=start, lockstep=True, **kwargs)


# ------------------------------------------------------------------ recording strategy


@dataclass
class Event:
    ref: int
    status: str
    size: float
    price: float
    comm: float
    created_size: float
    role: str | None
    reason: str | None
    stamp: pd.Timestamp | None  # the feed's bar (close time) when the broker notified


class Recording:
    """Mixin: records order, trade and store notifications, and counts live bars."""

    def _setup_recording(self) -> None:
        self.events: list[Event] = []
        self.closed_trades: list[bt.Trade] = []
        self.trade_notes: list[str] = []
        self.store_messages: list[tuple[Any, tuple]] = []
        self.live_bars = 0

    def _record(self, order: bt.Order) -> None:
        self.events.append(
            Event(
                order.ref,
                order.getstatusname(),
                float(order.executed.size),
                float(order.executed.price),
                float(order.executed.comm),
                float(order.created.size),
                order.info.get("role"),
                order.info.get("reject_reason"),
                pd.Timestamp(bt.num2date(self.data.datetime[0])) if len(self.data) else None,
            )
        )

    def statuses(self, ref: int) -> list[str]:
        return [e.status for e in self.events if e.ref == ref]

    def last(self, ref: int) -> Event:
        return [e for e in self.events if e.ref == ref][-1]


class Script(Recording, bt.Strategy):
    """Calls ``plan[n](self)`` on the n-th LIVE bar; ``self.orders`` keeps what it placed."""

    params = (("plan", None), ("server", None))

    def __init__(self) -> None:
        self._setup_recording()
        self.orders: list[bt.Order] = []

    def notify_order(self, order: bt.Order) -> None:
        self._record(order)

    def notify_trade(self, trade: bt.Trade) -> None:
        self.trade_notes.append(trade.status_names[trade.status])
        if trade.isclosed:
            self.closed_trades.append(trade)

    def notify_store(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.store_messages.append((msg, args))

    def next(self) -> None:
        if self.data._laststatus != self.data.LIVE:
            return
        self.live_bars += 1
        action = (self.p.plan or {}).get(self.live_bars)
        if action is not None:
            action(self)

    # helpers for plans
    def price(self) -> float:
        return float(self.p.server.current_price())

    def place(self, kind: str, size: float, **kwargs: Any) -> bt.Order:
        order = getattr(self, kind)(size=size, **kwargs)
        self.orders.append(order)
        return order


class RecordingMlBasic(Recording, MlBasic):
    params = (("server", None),)

    def __init__(self) -> None:
        super().__init__()
        self._setup_recording()
        self.seen: dict[int, bt.Order] = {}

    def notify_order(self, order: bt.Order) -> None:
        self._record(order)
        self.seen[order.ref] = order  # the latest notification (a clone) of each order
        super().notify_order(order)

    def notify_trade(self, trade: bt.Trade) -> None:
        if trade.isclosed:
            self.closed_trades.append(trade)
        super().notify_trade(trade)

    def notify_store(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.store_messages.append((msg, args))

    def next(self) -> None:
        if self.data._laststatus == self.data.LIVE:
            self.live_bars += 1
        super().next()


@dataclass
class Run:
    strategy: Any
    cerebro: bt.Cerebro
    broker: Any
    data: Any
    store: CcxtStore


def run_live(
    server: BinanceServer,
    plan: dict[int, Callable[[Script], Any]] | None = None,
    *,
    journal: Path | None,
    max_live_bars: int = 3,
    backfill_bars: int = 6,
    paper: bool = False,
    strategy: type[bt.Strategy] = Script,
    strategy_options: dict[str, Any] | None = None,
    broker_options: dict[str, Any] | None = None,
    store_options: dict[str, Any] | None = None,
    config_options: dict[str, Any] | None = None,
    before_run: Callable[[BinanceServer], Any] | None = None,
) -> Run:
    config = server.ccxt_config(rate_limit_ms=1, **(config_options or {}))
    store_options = {"retry_delay": 0.01, **(store_options or {})}
    store = CcxtStore(exchange="binance", config=config, **store_options)
    data = store.getdata(
        dataname="BTCUSDT",
        bar="1h",
        backfill_bars=backfill_bars,
        max_live_bars=max_live_bars,
        **FEED_OPTIONS,
    )
    cerebro = bt.Cerebro(quicknotify=True, stdstats=False)
    cerebro.adddata(data, name="BTCUSDT")
    cerebro.addstore(store)
    if paper:
        broker = PaperBroker(store=store, **(broker_options or {}))
        broker.setcash(10_000.0)
    else:
        options = {"order_poll": 0.0, "balance_refresh": 0.0, **(broker_options or {})}
        broker = store.getbroker(journal=str(journal), **options)
    cerebro.setbroker(broker)

    options = dict(strategy_options or {})
    if strategy is Script:
        options["plan"] = plan
    cerebro.addstrategy(strategy, server=server, **options)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    if before_run is not None:
        before_run(server)
    strat = cerebro.run()[0]
    assert server.internal_errors == []
    return Run(strat, cerebro, broker, data, store)


def d(value: Any) -> float:
    return float(Decimal(str(value)))


def exact(value: float) -> Any:
    return pytest.approx(value, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------ lifecycle and fills


@pytest.fixture(scope="module")
def round_trip(hourly: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Buy 0.01 BTC at market on live bar 1, sell it on live bar 3."""
    journal = tmp_path_factory.mktemp("round_trip") / "journal.sqlite"
    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.01), 3: lambda s: s.place("sell", 0.01)},
            journal=journal,
            max_live_bars=4,
        )
        orders, trades = server.orders(), server.trades()
        usdt, btc = server.balance("USDT"), server.balance("BTC")
        posts = server.count(*POST_ORDER)
        requests = server.requests
    return {
        "run": run,
        "orders": orders,
        "trades": trades,
        "usdt": usdt,
        "btc": btc,
        "posts": posts,
        "requests": requests,
        "journal": journal,
    }


def test_ccxt_broker_with_market_orders_notifies_submitted_accepted_completed(round_trip):
    strat = round_trip["run"].strategy
    buy, sell = strat.orders
    assert strat.statuses(buy.ref) == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses(sell.ref) == ["Submitted", "Accepted", "Completed"]
    assert round_trip["posts"] == 2
    assert [(o["side"], o["type"], o["status"]) for o in round_trip["orders"]] == [
        ("BUY", "MARKET", "FILLED"),
        ("SELL", "MARKET", "FILLED"),
    ]


def test_ccxt_broker_with_market_fills_reports_server_size_price_and_fee(round_trip):
    strat = round_trip["run"].strategy
    for order, server_order in zip(strat.orders, round_trip["orders"], strict=True):
        (fill,) = server_trades_of_list(round_trip["trades"], server_order)
        done = strat.last(order.ref)
        sign = 1 if server_order["side"] == "BUY" else -1
        assert done.size == exact(sign * d(fill["qty"]))
        assert done.price == exact(d(fill["price"]))
        assert fill["commissionAsset"] == "USDT"
        assert done.comm == exact(d(fill["commission"]))


def server_trades_of_list(trades: list[dict[str, Any]], order: dict[str, Any]) -> list[dict]:
    return [t for t in trades if t["orderId"] == order["orderId"]]


def test_ccxt_broker_with_round_trip_notifies_trade_and_trade_analyzer_counts_it(round_trip):
    run = round_trip["run"]
    strat = run.strategy
    assert strat.trade_notes == ["Open", "Closed"]
    (trade,) = strat.closed_trades
    buy_fill, sell_fill = round_trip["trades"]
    pnl = (d(sell_fill["price"]) - d(buy_fill["price"])) * 0.01
    fees = d(buy_fill["commission"]) + d(sell_fill["commission"])
    assert trade.pnl == pytest.approx(pnl, abs=1e-9)
    assert trade.pnlcomm == pytest.approx(pnl - fees, abs=1e-9)
    analysis = strat.analyzers.trades.get_analysis()
    assert analysis.total.closed == 1 and analysis.total.open == 0
    assert analysis.pnl.net.total == pytest.approx(pnl - fees, abs=1e-9)


def test_ccxt_broker_with_round_trip_ends_with_cash_and_value_of_the_account(round_trip):
    run = round_trip["run"]
    free_usdt, locked_usdt = round_trip["usdt"]
    assert round_trip["btc"] == (Decimal(0), Decimal(0))
    assert run.broker.getcash() == exact(float(free_usdt))
    assert run.broker.getvalue() == exact(float(free_usdt + locked_usdt))
    assert run.broker.getposition(run.data).size == 0


def test_ccxt_broker_with_round_trip_journals_each_order_and_fill_once(round_trip):
    journal = Journal(round_trip["journal"])
    try:
        rows, fills = journal.orders(), journal.fills()
    finally:
        journal.close()
    assert [r["state"] for r in rows] == ["closed", "closed"]
    cids = [o["clientOrderId"] for o in round_trip["orders"]]
    assert [r["client_id"] for r in rows] == cids and len(set(cids)) == 2
    assert [r["exchange_id"] for r in rows] == [str(o["orderId"]) for o in round_trip["orders"]]
    assert sorted(f["trade_id"] for f in fills) == sorted(
        str(t["id"]) for t in round_trip["trades"]
    )


def test_ccxt_broker_with_fee_in_base_asset_books_net_size_at_effective_price(hourly, tmp_path):
    """A fee taken from the bought asset: the position is what the account holds, and the
    fee is priced into the entry (cost / net size), not counted again as commission."""
    with make_server(hourly, fee_asset="base") as server:
        run = run_live(server, {1: lambda s: s.place("buy", 0.01)}, journal=tmp_path / "j")
        (fill,) = server.trades()
    assert fill["commissionAsset"] == "BTC"
    done = run.strategy.last(run.strategy.orders[0].ref)
    assert done.status == "Completed"
    net = 0.01 - float(fill["commission"])
    assert run.broker.getposition(run.data).size == pytest.approx(net, abs=1e-12)
    assert done.comm == 0.0
    assert run.strategy.orders[0].info["fee_in_base"] == pytest.approx(float(fill["commission"]))
    cost = float(d(fill["qty"]) * d(fill["price"]))
    assert run.broker.getposition(run.data).price == pytest.approx(cost / net, rel=1e-12)


def test_ccxt_broker_with_fee_in_base_asset_tracks_the_net_position(hourly, tmp_path):
    # Binance's default: fees in the received asset (base on buys, quote on sells).
    with make_server(hourly, fee_asset="received") as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.01), 2: lambda s: s.orders.append(s.close())},
            journal=tmp_path / "j",
        )
        btc_free, _ = server.balance("BTC")
    strat = run.strategy
    assert strat.last(strat.orders[1].ref).status == "Completed"
    assert run.broker.getposition(run.data).size == pytest.approx(float(btc_free), abs=1e-12)


def test_ccxt_broker_with_partial_fill_notifies_partial_then_completed(hourly, tmp_path):
    def arm(server: BinanceServer) -> None:
        server.faults.partial_fill_fraction = 0.4

    with make_server(hourly) as server:
        run = run_live(
            server, {1: lambda s: s.place("buy", 0.01)}, journal=tmp_path / "j", before_run=arm
        )
        fills = server.trades()
        (order,) = server.orders()
    strat = run.strategy
    ref = strat.orders[0].ref
    assert strat.statuses(ref) == ["Submitted", "Accepted", "Partial", "Completed"]
    partial, done = [e for e in strat.events if e.ref == ref][2:]
    assert [d(f["qty"]) for f in fills] == [0.004, 0.006]
    assert partial.size == exact(0.004) and done.size == exact(0.01)
    assert order["status"] == "FILLED"
    vwap = sum(d(f["qty"]) * d(f["price"]) for f in fills) / 0.01
    assert done.price == pytest.approx(vwap, rel=1e-12)
    assert done.comm == pytest.approx(sum(d(f["commission"]) for f in fills), rel=1e-12)
    assert run.broker.getposition(run.data).size == exact(0.01)


def test_ccxt_broker_with_resting_limit_order_fills_at_limit_on_a_later_bar(hourly, tmp_path):
    # live bar 1 is candle NOW_ROW; the limit sits half-way down to the next two candles' low
    low = float(hourly["low"].iloc[NOW_ROW + 1 : NOW_ROW + 3].min())

    def place(s: Script) -> None:
        price = s.price()
        limit = round((price + low) / 2, 2)
        assert low < limit < price
        s.limit = limit
        s.place("buy", 0.01, exectype=bt.Order.Limit, price=limit)

    with make_server(hourly) as server:
        run = run_live(server, {1: place}, journal=tmp_path / "j", max_live_bars=4)
        (fill,) = server.trades()
        (order,) = server.orders()
    strat = run.strategy
    ref = strat.orders[0].ref
    assert strat.statuses(ref) == ["Submitted", "Accepted", "Completed"]
    done = strat.last(ref)
    assert order["type"] == "LIMIT" and order["status"] == "FILLED"
    assert fill["time"] > order["time"] and fill["isMaker"] is True  # it rested, then filled
    assert done.price == exact(strat.limit) and d(fill["price"]) == exact(strat.limit)
    assert done.comm == exact(d(fill["commission"]))


# ------------------------------------------------------------------ brackets (MlBasic's legs)


BRACKET_OPTIONS = {
    "registry": str(REGISTRY),
    "long_threshold": -1.0,  # always long
    "exit_threshold": 1.0,  # never exits on the signal: only the legs close the position
    "stop_loss": 0.02,
    "take_profit": 0.04,
    "position_size": 0.5,
}


def bracket_refs(strategy: Recording) -> tuple[int, int, int]:
    """Refs of the first entry, stop-loss and take-profit orders (refs are process-wide)."""
    first: dict[str, int] = {}
    for event in strategy.events:
        first.setdefault(event.role, event.ref)
    return first["entry"], first["stop_loss"], first["take_profit"]


def run_bracket(candles: pd.DataFrame, journal: Path) -> dict[str, Any]:
    """MlBasic enters with a bracket on live bar 1 (candle NOW_ROW) and fills during the next
    candle; ``candles`` decide which leg triggers on live bar 3."""
    with make_server(candles) as server:
        run = run_live(
            server,
            journal=journal,
            max_live_bars=3,
            backfill_bars=300,
            strategy=RecordingMlBasic,
            strategy_options=BRACKET_OPTIONS,
        )
        orders, trades = server.orders(), server.trades()
    return {"run": run, "orders": orders, "trades": trades, "candles": candles}


@pytest.fixture(scope="module")
def bracket_up(hourly: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Prices rise 6 % from the candle of live bar 3: the 4 % take-profit triggers there."""
    candles = crash_after(hourly, NOW_ROW + 2, 1.06)
    close = candles["close"].to_numpy()
    assert 0.98 * close[NOW_ROW] < close[NOW_ROW + 1] < 1.04 * close[NOW_ROW]  # bar 2: nothing
    assert close[NOW_ROW + 2] > 1.04 * close[NOW_ROW]  # bar 3: take-profit
    return run_bracket(candles, tmp_path_factory.mktemp("bracket") / "journal.sqlite")


def test_ccxt_broker_with_bracket_holds_legs_until_the_parent_completes(bracket_up):
    strat = bracket_up["run"].strategy
    ENTRY, STOP, TAKE = bracket_refs(strat)
    assert ENTRY < STOP < TAKE
    events = [(e.ref, e.status) for e in strat.events]
    parent_fill = strat.events[events.index((ENTRY, "Completed"))]
    bar_1 = bracket_up["candles"].index[NOW_ROW + 1]  # close time of live bar 1
    assert parent_fill.stamp == bar_1
    for leg in (STOP, TAKE):
        assert strat.statuses(leg)[:2] == ["Submitted", "Accepted"]
        accepted = events.index((leg, "Accepted"))
        assert accepted > events.index((ENTRY, "Accepted"))
        # accepted in the broker step that processed the parent's fill, not before
        assert strat.events[accepted].stamp == parent_fill.stamp
    # the legs are emulated: none reached the exchange before one triggered
    assert [(o["side"], o["type"]) for o in bracket_up["orders"][:2]] == [
        ("BUY", "MARKET"),
        ("SELL", "LIMIT"),
    ]


def test_ccxt_broker_with_triggered_take_profit_leg_sells_and_cancels_the_stop(bracket_up):
    strat = bracket_up["run"].strategy
    ENTRY, STOP, TAKE = bracket_refs(strat)
    assert strat.statuses(ENTRY) == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses(TAKE) == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses(STOP) == ["Submitted", "Accepted", "Canceled"]
    entry_done, take_done = strat.last(ENTRY), strat.last(TAKE)
    candles = bracket_up["candles"]
    assert take_done.stamp == candles.index[NOW_ROW + 3]  # on live bar 3
    assert take_done.size == exact(-entry_done.size)
    sell = bracket_up["orders"][1]
    assert sell["status"] == "FILLED" and d(sell["executedQty"]) == exact(entry_done.size)
    limit = round(float(candles["close"].iloc[NOW_ROW]) * 1.04, 2)
    assert d(sell["price"]) == exact(limit) and take_done.price >= limit
    assert sell["time"] >= _ms(candles.index[NOW_ROW + 3])  # sent after bar 3 closed
    trade = strat.closed_trades[0]
    assert trade.pnl > 0


def test_ccxt_broker_with_unrounded_bracket_sizes_legs_to_the_sent_amount(bracket_up):
    strat = bracket_up["run"].strategy
    ENTRY, STOP, TAKE = bracket_refs(strat)
    sent = d(bracket_up["orders"][0]["origQty"])
    assert sent == round(sent, 5)  # the market's step
    assert strat.last(ENTRY).created_size == exact(sent)
    assert strat.last(STOP).created_size == exact(-sent)
    assert strat.last(TAKE).created_size == exact(-sent)


def test_ccxt_broker_with_triggered_stop_leg_sells_at_market_and_cancels_take_profit(
    hourly, tmp_path
):
    candles = crash_after(hourly, NOW_ROW + 2, 0.94)
    close = candles["close"].to_numpy()
    assert close[NOW_ROW + 2] < 0.98 * close[NOW_ROW]  # bar 3 closes below the stop
    result = run_bracket(candles, tmp_path / "journal.sqlite")
    strat = result["run"].strategy
    ENTRY, STOP, TAKE = bracket_refs(strat)
    assert strat.statuses(STOP) == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses(TAKE) == ["Submitted", "Accepted", "Canceled"]
    assert strat.last(STOP).size == exact(-strat.last(ENTRY).size)
    assert [(o["side"], o["type"]) for o in result["orders"][:2]] == [
        ("BUY", "MARKET"),
        ("SELL", "MARKET"),
    ]
    assert strat.closed_trades[0].pnl < 0


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


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("size", "reason"),
    [(0.0001, "notional"), (0.000004, "precision")],
    ids=["below-min-notional", "below-amount-step"],
)
def test_ccxt_broker_with_order_below_market_limits_rejects_locally_without_post(
    hourly, tmp_path, size, reason
):
    with make_server(hourly) as server:
        run = run_live(server, {1: lambda s: s.place("buy", size)}, journal=tmp_path / "j")
        assert server.count(*POST_ORDER) == 0
    strat = run.strategy
    ref = strat.orders[0].ref
    assert strat.statuses(ref) == ["Submitted", "Rejected"]
    assert reason in strat.last(ref).reason


def test_ccxt_broker_with_unrounded_amount_sends_it_truncated_to_the_step(hourly, tmp_path):
    with make_server(hourly) as server:
        run = run_live(server, {1: lambda s: s.place("buy", 0.0123456)}, journal=tmp_path / "j")
        (order,) = server.orders()
    assert order["origQty"] == "0.01234000"
    done = run.strategy.last(run.strategy.orders[0].ref)
    assert done.status == "Completed" and done.size == exact(0.01234)


def test_ccxt_broker_with_unrounded_amount_keeps_the_requested_size_in_info(hourly, tmp_path):
    with make_server(hourly) as server:
        run = run_live(server, {1: lambda s: s.place("buy", 0.0123456)}, journal=tmp_path / "j")
    assert run.strategy.orders[0].info["requested_size"] == pytest.approx(0.0123456)


def test_ccxt_broker_with_order_beyond_balance_notifies_margin(hourly, tmp_path):
    with make_server(hourly) as server:
        run = run_live(server, {1: lambda s: s.place("buy", 1.0)}, journal=tmp_path / "j")
        assert server.count(*POST_ORDER) == 1
        assert server.orders() == []
    strat = run.strategy
    ref = strat.orders[0].ref
    assert strat.statuses(ref) == ["Submitted", "Margin"]
    assert "insufficient" in strat.last(ref).reason.lower()


def test_ccxt_broker_with_exchange_rejecting_the_order_notifies_rejected(hourly, tmp_path):
    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.01)},
            journal=tmp_path / "j",
            before_run=lambda srv: srv.faults.reject_next_order(),
        )
        assert server.count(*POST_ORDER) == 1
        assert server.orders() == []
    strat = run.strategy
    ref = strat.orders[0].ref
    assert strat.statuses(ref) == ["Submitted", "Rejected"]
    assert "rejected by the risk engine" in strat.last(ref).reason


# ------------------------------------------------------------------ transient faults


@pytest.mark.parametrize("kind", ["429", "418"])
def test_ccxt_broker_with_rate_limit_on_fill_reads_retries_and_completes(hourly, tmp_path, kind):
    def arm(server: BinanceServer) -> None:
        server.faults.queue("/api/v3/myTrades", kind, count=2)

    with make_server(hourly) as server:
        run = run_live(
            server, {1: lambda s: s.place("buy", 0.01)}, journal=tmp_path / "j", before_run=arm
        )
        fired = [r for r in server.requests if r.fault == kind]
        assert server.count("/api/v3/myTrades", "GET") >= 3
        assert server.count(*POST_ORDER) == 1
    assert len(fired) == 2
    assert run.strategy.statuses(run.strategy.orders[0].ref) == [
        "Submitted",
        "Accepted",
        "Completed",
    ]


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


def _post_ids(server: BinanceServer) -> list[str]:
    return [
        r.params["newClientOrderId"] for r in server.requests if (r.path, r.method) == POST_ORDER
    ]


def test_ccxt_broker_with_timeout_on_create_order_reconciles_the_one_order(hourly, tmp_path):
    def arm(server: BinanceServer) -> None:
        server.faults.queue("/api/v3/order", "timeout", method="POST", delay=1.0)

    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.01)},
            journal=tmp_path / "j",
            config_options={"timeout_ms": 400},
            before_run=arm,
        )
        orders = server.orders()
        posts = _post_ids(server)
        lookups = [
            r
            for r in server.requests
            if (r.path, r.method) == ("/api/v3/order", "GET") and "origClientOrderId" in r.params
        ]
    assert len(posts) == 1 and len(orders) == 1
    assert orders[0]["clientOrderId"] == posts[0] and orders[0]["status"] == "FILLED"
    assert lookups and {r.params["origClientOrderId"] for r in lookups} == {posts[0]}
    strat = run.strategy
    assert strat.statuses(strat.orders[0].ref) == ["Submitted", "Accepted", "Completed"]
    assert strat.last(strat.orders[0].ref).size == exact(0.01)


def test_ccxt_broker_with_timeout_and_order_not_yet_visible_reconciles_the_one_order(
    hourly, tmp_path
):
    def arm(server: BinanceServer) -> None:
        server.faults.queue("/api/v3/order", "timeout", method="POST", delay=1.0)
        # the exchange does not show the order to the first two lookups (Binance -2013)
        server.faults.queue(
            "/api/v3/order", "error", count=2, method="GET", code=-2013, msg="Order does not exist."
        )

    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.01)},
            journal=tmp_path / "j",
            config_options={"timeout_ms": 400},
            before_run=arm,
        )
        orders = server.orders()
        posts = _post_ids(server)
        fired = [r.fault for r in server.requests if r.fault]
    assert fired == ["timeout", "error", "error"]
    assert len(posts) == 1 and len(orders) == 1 and orders[0]["clientOrderId"] == posts[0]
    strat = run.strategy
    assert strat.statuses(strat.orders[0].ref) == ["Submitted", "Accepted", "Completed"]


def test_ccxt_broker_with_hidden_order_still_completes_once(hourly, tmp_path):
    def arm(server: BinanceServer) -> None:
        server.faults.queue("/api/v3/order", "hide_order", method="POST", reads=3)

    with make_server(hourly) as server:
        run = run_live(
            server, {1: lambda s: s.place("buy", 0.01)}, journal=tmp_path / "j", before_run=arm
        )
        orders = server.orders()
        assert server.count(*POST_ORDER) == 1
    assert len(orders) == 1
    strat = run.strategy
    assert strat.statuses(strat.orders[0].ref) == ["Submitted", "Accepted", "Completed"]
    assert strat.last(strat.orders[0].ref).size == exact(0.01)


@pytest.mark.parametrize(
    ("kind", "options"),
    [("disconnect", {}), ("error", {"status": 504, "code": -1007, "msg": "Timeout waiting."})],
    ids=["connection-dropped", "gateway-timeout"],
)
def test_ccxt_broker_with_unanswered_order_that_was_not_placed_rejects_it_once(
    hourly, tmp_path, kind, options
):
    def arm(server: BinanceServer) -> None:
        server.faults.queue("/api/v3/order", kind, method="POST", **options)

    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.01)},
            journal=tmp_path / "j.sqlite",
            broker_options={"unknown_retries": 3},
            before_run=arm,
        )
        assert server.orders() == []
        posts = _post_ids(server)
        lookups = [
            r
            for r in server.requests
            if (r.path, r.method) == ("/api/v3/order", "GET") and "origClientOrderId" in r.params
        ]
    assert len(posts) == 1
    assert len(lookups) == 3 and {r.params["origClientOrderId"] for r in lookups} == set(posts)
    strat = run.strategy
    ref = strat.orders[0].ref
    assert strat.statuses(ref) == ["Submitted", "Rejected"]
    assert "not placed" in strat.last(ref).reason
    journal = Journal(tmp_path / "j.sqlite")
    try:
        assert [r["state"] for r in journal.orders()] == ["not_placed"]
    finally:
        journal.close()


# ------------------------------------------------------------------ stop and restart


@pytest.mark.parametrize("policy", ["cancel", "keep"])
def test_ccxt_broker_with_on_stop_policy_handles_open_orders_at_the_end(hourly, tmp_path, policy):
    def place(s: Script) -> None:
        s.place("buy", 0.01, exectype=bt.Order.Limit, price=round(s.price() * 0.8, 2))

    with make_server(hourly) as server:
        run_live(
            server,
            {1: place},
            journal=tmp_path / "j.sqlite",
            broker_options={"on_stop": policy},
        )
        (order,) = server.orders()
        usdt_locked = server.balance("USDT")[1]
    journal = Journal(tmp_path / "j.sqlite")
    try:
        (row,) = journal.orders()
    finally:
        journal.close()
    if policy == "cancel":
        assert order["status"] == "CANCELED" and row["state"] == "canceled"
        assert usdt_locked == 0
    else:
        assert order["status"] == "NEW" and row["state"] == "open"
        assert usdt_locked > 0


@pytest.mark.parametrize("policy", ["cancel", "keep"])
def test_ccxt_broker_with_journal_from_a_killed_session_recovers_every_order(
    hourly, tmp_path, policy
):
    path = tmp_path / "journal.sqlite"

    def first_session(s: Script) -> None:
        s.place("buy", 0.01, exectype=bt.Order.Limit, price=round(s.price() * 0.8, 2))
        s.place("buy", 0.01)
        s.place("sell", 0.01)

    with make_server(hourly) as server:
        # session 1: a resting limit (left open: killed without cancelling) and a round trip
        run_live(
            server,
            {1: first_session},
            journal=path,
            max_live_bars=2,
            broker_options={"on_stop": "keep"},
        )
        resting, bought, sold = server.orders()
        assert resting["status"] == "NEW"
        # what a crash can leave behind, written the way the broker writes it:
        journal = Journal(path)
        # ... an order journalled but never sent,
        journal.record_sending("atbdeadbeefx1", 1, "BTC/USDT", "buy", "limit", 0.01, 20000.0, {})
        # ... one sent whose answer was lost (it reached the exchange),
        journal.record_sending("atbdeadbeefx2", 2, "BTC/USDT", "buy", "limit", 0.01, 20000.0, {})
        journal.update("atbdeadbeefx2", "unknown")
        # ... and a filled one whose final state was not written after its fill was.
        journal.update(bought["clientOrderId"], "open")
        journal.close()
        client = ccxt.binance(server.ccxt_config(rate_limit_ms=1))
        try:
            client.create_order(
                "BTC/USDT", "limit", "buy", 0.01, 20000.0, {"clientOrderId": "atbdeadbeefx2"}
            )
        finally:
            client.close()
        fills_before = len(server.trades())
        posts_before = server.count(*POST_ORDER)
        # session 2: a new broker on the same journal
        run = run_live(server, journal=path, max_live_bars=1, broker_options={"on_restart": policy})
        by_cid = {o["clientOrderId"]: o for o in server.orders()}
        fills = server.trades()
        posts = server.count(*POST_ORDER)
    assert posts == posts_before  # session 2 sent nothing
    assert len(fills) == fills_before
    journal = Journal(path)
    try:
        states = {r["client_id"]: r["state"] for r in journal.orders()}
        recorded = [f["trade_id"] for f in journal.fills()]
    finally:
        journal.close()
    assert states["atbdeadbeefx1"] == "not_placed"
    assert states[bought["clientOrderId"]] == "closed"
    assert states[sold["clientOrderId"]] == "closed"
    assert sorted(recorded) == sorted(str(t["id"]) for t in fills)  # each fill once
    expected = "CANCELED" if policy == "cancel" else "NEW"
    assert by_cid[resting["clientOrderId"]]["status"] == expected
    assert by_cid["atbdeadbeefx2"]["status"] == expected
    state = "canceled" if policy == "cancel" else "open"
    assert states[resting["clientOrderId"]] == state and states["atbdeadbeefx2"] == state
    recovered = {
        args[0]: args[1] for msg, args in run.strategy.store_messages if msg == "RECOVERED"
    }
    assert recovered == {
        bought["clientOrderId"]: "closed",
        resting["clientOrderId"]: "open",
        "atbdeadbeefx2": "open",
        "atbdeadbeefx1": "not_placed",
    }  # every journal order is announced with the state found on the exchange


def test_ccxt_broker_with_base_asset_in_the_account_seeds_the_position(hourly, tmp_path):
    with make_server(hourly, balances={"USDT": 10_000, "BTC": 0.5}) as server:
        run = run_live(server, journal=tmp_path / "j", max_live_bars=1)
    assert run.broker.getposition(run.data).size == 0.5


# ------------------------------------------------------------------ OCO groups


HELD = {"USDT": 10_000, "BTC": 0.5}


def protective_pair(s: Script, size: float = 0.01) -> None:
    """A stop 2 % below and a take-profit 4 % above the bar's close, one cancelling the other."""
    close = float(s.data.close[0])
    stop = s.place("sell", size, exectype=bt.Order.Stop, price=round(close * 0.98, 2))
    s.place("sell", size, exectype=bt.Order.Limit, price=round(close * 1.04, 2), oco=stop)


def test_ccxt_broker_with_oco_group_sends_the_triggered_stop_and_cancels_the_limit(
    hourly, tmp_path
):
    candles = crash_after(hourly, NOW_ROW + 2, 0.94)  # live bar 3 closes below the stop
    with make_server(candles, balances=HELD) as server:
        run = run_live(server, {1: protective_pair}, journal=tmp_path / "j")
        orders = server.orders()
    strat = run.strategy
    stop, take = strat.orders
    assert strat.statuses(stop.ref) == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses(take.ref) == ["Submitted", "Accepted", "Canceled"]
    assert strat.last(stop.ref).stamp == candles.index[NOW_ROW + 3]  # on live bar 3
    # the take-profit was held locally: only the triggered stop reached the exchange
    assert [(o["side"], o["type"], d(o["origQty"])) for o in orders] == [("SELL", "MARKET", 0.01)]
    assert run.broker.emulator.oco_groups == {}  # the group's bookkeeping is gone with it


def test_ccxt_broker_with_oco_group_sends_the_reached_limit_and_cancels_the_stop(hourly, tmp_path):
    candles = crash_after(hourly, NOW_ROW + 2, 1.06)  # live bar 3 closes above the limit
    with make_server(candles, balances=HELD) as server:
        run = run_live(server, {1: protective_pair}, journal=tmp_path / "j")
        orders = server.orders()
    strat = run.strategy
    stop, take = strat.orders
    assert strat.statuses(take.ref) == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses(stop.ref) == ["Submitted", "Accepted", "Canceled"]
    assert [(o["side"], o["type"]) for o in orders] == [("SELL", "LIMIT")]
    assert d(orders[0]["price"]) == exact(take.created.price)


def test_ccxt_broker_with_one_oco_member_cancelled_cancels_the_group(hourly, tmp_path):
    with make_server(hourly, balances=HELD) as server:
        run = run_live(
            server,
            {1: protective_pair, 2: lambda s: s.cancel(s.orders[0])},
            journal=tmp_path / "j",
        )
        assert server.count(*POST_ORDER) == 0
    strat = run.strategy
    for order in strat.orders:
        assert strat.statuses(order.ref) == ["Submitted", "Accepted", "Canceled"]
    assert run.broker.emulator.oco_groups == {}


def test_ccxt_broker_with_oco_leader_on_the_exchange_rejects_the_member_with_the_reason(
    hourly, tmp_path
):
    def place(s: Script) -> None:
        close = float(s.data.close[0])
        resting = s.place("buy", 0.01, exectype=bt.Order.Limit, price=round(close * 0.5, 2))
        s.place("sell", 0.01, exectype=bt.Order.Stop, price=round(close * 0.9, 2), oco=resting)

    with make_server(hourly, balances=HELD) as server:
        run = run_live(server, {1: place}, journal=tmp_path / "j", max_live_bars=2)
        assert server.count(*POST_ORDER) == 1  # the resting limit only
    strat = run.strategy
    resting, stop = strat.orders
    assert strat.statuses(stop.ref) == ["Submitted", "Rejected"]
    assert f"OCO with order {resting.ref} is not possible" in strat.last(stop.ref).reason
    assert "Place the stop order first" in strat.last(stop.ref).reason


def test_ccxt_broker_with_market_order_as_oco_member_rejects_it_with_the_reason(hourly, tmp_path):
    def place(s: Script) -> None:
        close = float(s.data.close[0])
        stop = s.place("sell", 0.01, exectype=bt.Order.Stop, price=round(close * 0.5, 2))
        s.place("sell", 0.01, exectype=bt.Order.Market, oco=stop)

    with make_server(hourly, balances=HELD) as server:
        run = run_live(server, {1: place}, journal=tmp_path / "j", max_live_bars=4)
        assert server.orders() == []
    strat = run.strategy
    stop, market = strat.orders
    assert strat.statuses(market.ref) == ["Submitted", "Rejected"]
    assert "must be a stop, stop-limit or limit order" in strat.last(market.ref).reason
    assert strat.statuses(stop.ref)[-1] == "Accepted"  # the stop itself stays armed


def test_ccxt_broker_with_bracket_parent_as_oco_leader_rejects_the_member(hourly, tmp_path):
    def place(s: Script) -> None:
        close = float(s.data.close[0])
        s.orders += s.buy_bracket(
            size=0.01,
            exectype=bt.Order.Stop,
            price=round(close * 1.5, 2),
            stopprice=round(close * 1.4, 2),
            limitprice=round(close * 1.6, 2),
        )
        s.place("sell", 0.01, exectype=bt.Order.Limit, price=round(close * 2, 2), oco=s.orders[0])

    with make_server(hourly, balances=HELD) as server:
        run = run_live(
            server, {1: place, 2: lambda s: s.cancel(s.orders[0])}, journal=tmp_path / "j"
        )
        assert server.orders() == []
    strat = run.strategy
    parent, stop, take, member = strat.orders
    assert strat.statuses(member.ref) == ["Submitted", "Rejected"]
    assert "part of a bracket" in strat.last(member.ref).reason
    # cancelling the held stop-entry parent takes its two legs along
    assert strat.statuses(parent.ref) == ["Submitted", "Accepted", "Canceled"]
    assert strat.statuses(stop.ref)[-1] == strat.statuses(take.ref)[-1] == "Canceled"
    assert run.broker.emulator.held == [] and run.broker.emulator.children == {}


def test_ccxt_broker_with_held_order_below_the_minimum_at_its_price_rejects_it_when_placed(
    hourly, tmp_path
):
    def place(s: Script) -> None:
        # about 5.02 USDT now, above the 5 USDT minimum; below it at the stop price
        s.place("sell", 0.00015, exectype=bt.Order.Stop, price=round(s.data.close[0] * 0.9, 2))

    with make_server(hourly, balances={"USDT": 10_000, "BTC": 0.00015}) as server:
        run = run_live(server, {1: place}, journal=tmp_path / "j", max_live_bars=2)
    strat = run.strategy
    (stop,) = strat.orders
    assert strat.statuses(stop.ref) == ["Submitted", "Rejected"]
    reason = strat.last(stop.ref).reason
    assert "below the market minimum" in reason and "at its price" in reason


# ------------------------------------------------------------------ adopted positions


NEVER_TRADES = {
    "registry": str(REGISTRY),
    "long_threshold": 1.0,  # never enters
    "exit_threshold": 1.0,  # never exits on the signal: only the protection can sell
    "stop_loss": 0.02,
    "take_profit": 0.04,
}


def run_adopted(
    candles: pd.DataFrame,
    journal: Path,
    kill_switch: KillSwitch | None = None,
    strategy: type[bt.Strategy] = RecordingMlBasic,
    before_run: Callable[[BinanceServer], Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """MlBasic starts with 0.5 BTC in the account (a restart, say) and never trades itself."""
    with make_server(candles, balances=HELD) as server:
        run = run_live(
            server,
            journal=journal,
            max_live_bars=3,
            backfill_bars=300,
            strategy=strategy,
            strategy_options={**NEVER_TRADES, **options},
            broker_options={"kill_switch": kill_switch},
            before_run=before_run,
        )
        orders = server.orders()
        btc = server.balance("BTC")
    return {"run": run, "orders": orders, "btc": btc, "candles": candles}


def test_ml_basic_with_adopted_position_arms_stop_and_take_profit_from_the_first_live_close(
    hourly, tmp_path
):
    result = run_adopted(crash_after(hourly, NOW_ROW + 2, 0.94), tmp_path / "j")
    strat, candles = result["run"].strategy, result["candles"]
    roles = {e.role: e.ref for e in strat.events}
    assert set(roles) == {"stop_loss", "take_profit"}  # no entry: only the protection
    close = float(candles["close"].iloc[NOW_ROW])  # live bar 1
    stop, take = strat.seen[roles["stop_loss"]], strat.seen[roles["take_profit"]]
    assert stop.created.price == pytest.approx(close * 0.98, rel=1e-12)
    assert take.created.price == pytest.approx(close * 1.04, rel=1e-12)
    assert stop.created.size == take.created.size == -0.5
    assert stop.info["model_key"] and stop.info["protected_size"] == 0.5
    # armed on live bar 1, the stop triggers on live bar 3 and sells the whole holding
    assert strat.events[0].stamp == candles.index[NOW_ROW + 1]
    assert strat.statuses(roles["stop_loss"]) == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses(roles["take_profit"]) == ["Submitted", "Accepted", "Canceled"]
    assert [(o["side"], o["type"], d(o["origQty"])) for o in result["orders"]] == [
        ("SELL", "MARKET", 0.5)
    ]
    assert float(sum(result["btc"])) == 0.0
    assert result["run"].broker.getposition(result["run"].data).size == 0


def test_ml_basic_with_adopted_position_takes_profit_when_prices_rise(hourly, tmp_path):
    result = run_adopted(crash_after(hourly, NOW_ROW + 2, 1.06), tmp_path / "j")
    strat = result["run"].strategy
    roles = {e.role: e.ref for e in strat.events}
    assert strat.statuses(roles["take_profit"]) == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses(roles["stop_loss"]) == ["Submitted", "Accepted", "Canceled"]
    assert [(o["side"], o["type"]) for o in result["orders"]] == [("SELL", "LIMIT")]


def test_ml_basic_with_protect_adopted_off_leaves_the_position_alone(hourly, tmp_path):
    result = run_adopted(
        crash_after(hourly, NOW_ROW + 2, 0.94), tmp_path / "j", protect_adopted=False
    )
    assert result["run"].strategy.events == []
    assert result["orders"] == []
    assert float(sum(result["btc"])) == 0.5


def test_ml_basic_with_adopted_position_over_max_order_notional_still_protects_it(hourly, tmp_path):
    # 0.5 BTC is about 15,800 USDT: over the cap, but a stop-loss only reduces the position
    ks = KillSwitch(max_daily_loss=None, max_drawdown=None, max_order_notional=5_000)
    result = run_adopted(crash_after(hourly, NOW_ROW + 2, 0.94), tmp_path / "j", kill_switch=ks)
    strat = result["run"].strategy
    roles = {e.role: e.ref for e in strat.events}
    assert strat.statuses(roles["stop_loss"]) == ["Submitted", "Accepted", "Completed"]
    assert [(o["side"], o["type"], d(o["origQty"])) for o in result["orders"]] == [
        ("SELL", "MARKET", 0.5)
    ]


class ExitOnFirstLiveBar(RecordingMlBasic):
    """MlBasic told to exit on live bar 1 only."""

    def next(self) -> None:
        upcoming = self.live_bars + (self.data._laststatus == self.data.LIVE)
        self.p.exit_threshold = -1.0 if upcoming == 1 else 1.0
        super().next()


def test_ml_basic_with_refused_exit_re_arms_the_protection(hourly, tmp_path):
    candles = crash_after(hourly, NOW_ROW + 2, 0.94)
    result = run_adopted(
        candles,
        tmp_path / "j",
        strategy=ExitOnFirstLiveBar,
        before_run=lambda server: server.faults.reject_next_order(),
    )
    run, orders = result["run"], result["orders"]
    strat = run.strategy
    steps = [(e.role, e.status, e.stamp) for e in strat.events]
    bar_1 = candles.index[NOW_ROW + 1]
    # adopted legs, cancelled to send the exit; the exchange refuses the exit
    assert [(r, s) for r, s, _ in steps if s != "Submitted"][:5] == [
        ("stop_loss", "Accepted"),
        ("take_profit", "Accepted"),
        ("stop_loss", "Canceled"),
        ("take_profit", "Canceled"),
        ("exit", "Rejected"),
    ]
    rearmed = [o for o in strat.seen.values() if o.info.get("signal") == "exit_refused"]
    assert sorted(o.info["role"] for o in rearmed) == ["stop_loss", "take_profit"]
    stop = next(o for o in rearmed if o.info["role"] == "stop_loss")
    assert stop.created.size == -0.5
    assert strat.statuses(stop.ref) == ["Submitted", "Accepted", "Completed"]  # the crash
    assert [(o["side"], o["type"], o["status"]) for o in orders][-1] == (
        "SELL",
        "MARKET",
        "FILLED",
    )
    assert steps[0][2] == bar_1
    assert run.broker.getposition(run.data).size == 0


def test_ccxt_broker_with_holdings_locked_in_an_open_order_seeds_and_protects_the_free_part(
    hourly, tmp_path
):
    def resting_sell(server: BinanceServer) -> None:  # an order of the user's own
        exchange = ccxt.binance(server.ccxt_config(rate_limit_ms=1))
        exchange.load_markets()
        exchange.create_order("BTC/USDT", "limit", "sell", 0.3, 60_000)

    result = run_adopted(
        crash_after(hourly, NOW_ROW + 2, 0.94), tmp_path / "j", before_run=resting_sell
    )
    run, (free, locked) = result["run"], result["btc"]
    strat = run.strategy
    roles = {e.role: e.ref for e in strat.events}
    assert strat.seen[roles["stop_loss"]].created.size == pytest.approx(-0.2)
    assert strat.statuses(roles["stop_loss"])[-1] == "Completed"
    assert (float(free), float(locked)) == (0.0, 0.3)  # the user's order is untouched


# ------------------------------------------------------------------ kill switch


def test_kill_switch_with_max_order_notional_rejects_a_big_order_without_post(hourly, tmp_path):
    def place(s: Script) -> None:
        s.place("buy", 0.01)  # about 315 USDT
        s.place("buy", 0.002)  # about 63 USDT

    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: place},
            journal=tmp_path / "j",
            broker_options={"kill_switch": KillSwitch(max_order_notional=100.0)},
        )
        assert server.count(*POST_ORDER) == 1
    strat = run.strategy
    big, small = strat.orders
    assert strat.statuses(big.ref) == ["Submitted", "Rejected"]
    assert "max_order_notional" in strat.last(big.ref).reason
    assert strat.statuses(small.ref)[-1] == "Completed"


def test_kill_switch_with_max_orders_per_minute_rejects_the_extra_order(hourly, tmp_path):
    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: lambda s: [s.place("buy", 0.001) for _ in range(3)]},
            journal=tmp_path / "j",
            broker_options={"kill_switch": KillSwitch(max_orders_per_minute=2)},
        )
        assert server.count(*POST_ORDER) == 2
    strat = run.strategy
    assert [strat.last(o.ref).status for o in strat.orders] == [
        "Completed",
        "Completed",
        "Rejected",
    ]
    assert "orders in a minute" in strat.last(strat.orders[2].ref).reason


@pytest.fixture(scope="module")
def drawdown(hourly: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """0.25 BTC bought on live bar 1 plus a resting limit; prices fall 40 % from the candle of
    live bar 3, far beyond a 15 % drawdown limit."""
    candles = crash_after(hourly, NOW_ROW + 2, 0.6)

    def place(s: Script) -> None:
        s.place("buy", 0.25)
        s.place("buy", 0.01, exectype=bt.Order.Limit, price=round(s.price() * 0.5, 2))

    journal = tmp_path_factory.mktemp("kill") / "journal.sqlite"
    with make_server(candles) as server:
        run = run_live(
            server,
            {1: place},
            journal=journal,
            max_live_bars=6,
            broker_options={
                "kill_switch": KillSwitch(max_daily_loss=None, max_drawdown=0.15),
                "on_stop": "keep",  # what is cancelled was cancelled by the kill switch
            },
        )
        orders = server.orders()
        btc = server.balance("BTC")
    return {"run": run, "orders": orders, "btc": btc, "candles": candles}


def test_kill_switch_when_engaged_cancels_open_orders_flattens_and_stops_cerebro(drawdown):
    # what engaging does; *when* it engages is checked below (today too early: VALUATION_BUG)
    run = drawdown["run"]
    assert run.broker.killed
    assert run.strategy.live_bars < 6  # cerebro stopped before the feed's last bar
    assert [(o["side"], o["type"], o["status"]) for o in drawdown["orders"]] == [
        ("BUY", "MARKET", "FILLED"),
        ("BUY", "LIMIT", "CANCELED"),
        ("SELL", "MARKET", "FILLED"),
    ]
    assert d(drawdown["orders"][2]["executedQty"]) == exact(0.25)
    assert drawdown["btc"] == (Decimal(0), Decimal(0))


VALUATION_BUG = (
    "BUG: CcxtBroker.getvalue() adds position x close to the quote balance cached at the last "
    "refresh, and _execute() updates the position and calls _check_kill_switch() before that "
    "cache is refreshed: right after a buy of 0.25 BTC (~8,300 USDT of 10,000) the value reads "
    "~18,300, which becomes the drawdown peak; the next refresh gives ~10,000 and a phantom "
    "'drawdown 45.60%' engages the kill switch at flat prices; the flattening sell then re-enters "
    "_check_kill_switch (killed is False during flattening) and engages it a second time "
    "('drawdown 91.17%')"
)


def test_kill_switch_with_large_buy_at_flat_prices_stays_off(hourly, tmp_path):
    with make_server(hourly) as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.25)},
            journal=tmp_path / "j",
            max_live_bars=4,
            broker_options={"kill_switch": KillSwitch(max_daily_loss=None, max_drawdown=0.15)},
        )
        sides = [o["side"] for o in server.orders()]
    assert sides == ["BUY"]
    assert not run.broker.killed and run.strategy.live_bars == 4


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


def test_kill_switch_with_drawdown_breach_engages_once_on_the_crash_bar(drawdown):
    run = drawdown["run"]
    crash_bar_close = _ms(drawdown["candles"].index[NOW_ROW + 3])
    flatten = drawdown["orders"][2]
    assert flatten["time"] >= crash_bar_close
    messages = [m for m, _ in run.strategy.store_messages] + [
        n[0] for n in run.store.notifs if n is not None
    ]
    assert messages.count("KILL_SWITCH") == 1


def test_kill_switch_with_drawdown_breach_notifies_the_strategy_through_the_store(drawdown):
    messages = [m for m, _ in drawdown["run"].strategy.store_messages]
    assert "KILL_SWITCH" in messages


def test_kill_switch_with_drawdown_breach_refuses_new_orders(drawdown):
    broker = drawdown["run"].broker
    strategy = drawdown["run"].strategy
    order = broker.buy(strategy, drawdown["run"].data, 0.001)
    assert order.status == order.Rejected
    assert "kill switch" in order.info["reject_reason"]


# ------------------------------------------------------------------ paper broker


@pytest.fixture(scope="module")
def paper(hourly: pd.DataFrame) -> dict[str, Any]:
    """PaperBroker without API keys: an unrounded market buy with a bracket, a buy below the
    minimum notional, on live bar 1."""

    def place(s: Script) -> None:
        close = float(s.data.close[0])
        s.orders.extend(
            s.buy_bracket(
                size=0.0123456,
                exectype=bt.Order.Market,
                stopprice=close * 0.5,
                limitprice=close * 2.0,
            )
        )
        s.place("buy", 0.0001)

    with make_server(hourly) as server:
        store_config = server.ccxt_config(rate_limit_ms=1, with_keys=False)
        store = CcxtStore(exchange="binance", config=store_config)
        assert not store.exchange.apiKey
        data = store.getdata(
            dataname="BTCUSDT", bar="1h", backfill_bars=6, max_live_bars=3, **FEED_OPTIONS
        )
        cerebro = bt.Cerebro(quicknotify=True, stdstats=False)
        cerebro.adddata(data, name="BTCUSDT")
        cerebro.addstore(store)
        broker = PaperBroker(store=store)
        broker.setcash(10_000.0)
        cerebro.setbroker(broker)
        cerebro.addstrategy(Script, server=server, plan={1: place})
        strat = cerebro.run()[0]
        paths = {(r.method, r.path) for r in server.requests}
        market = store.market("BTCUSDT")
        assert server.internal_errors == []
    return {"strategy": strat, "data": data, "paths": paths, "market": market, "broker": broker}


def test_paper_broker_with_no_api_keys_reads_only_public_endpoints(paper):
    assert paper["paths"] <= {
        ("GET", "/api/v3/exchangeInfo"),
        ("GET", "/api/v3/time"),
        ("GET", "/api/v3/klines"),
    }


def test_paper_broker_with_unrounded_size_fills_the_rounded_amount_with_taker_fee(paper):
    strat = paper["strategy"]
    parent = strat.orders[0]
    done = strat.last(parent.ref)
    assert done.status == "Completed"
    assert done.size == exact(0.01234)  # truncated to the 0.00001 step
    taker = paper["market"]["taker"]
    assert taker == 0.001
    assert done.comm == pytest.approx(taker * done.size * done.price, rel=1e-12)


def test_paper_broker_with_bracket_sizes_legs_to_the_rounded_parent(paper):
    strat = paper["strategy"]
    _, stop, take = strat.orders[:3]
    assert stop.created.size == exact(-0.01234)
    assert take.created.size == exact(-0.01234)
    assert strat.statuses(stop.ref)[-1] == "Accepted"  # far away: still working
    assert strat.statuses(take.ref)[-1] == "Accepted"


def test_paper_broker_with_order_below_min_notional_rejects_it_with_reason(paper):
    strat = paper["strategy"]
    tiny = strat.orders[3]
    assert strat.statuses(tiny.ref) == ["Rejected"]
    assert "below the market minimum 5.0" in strat.last(tiny.ref).reason
    assert math.isclose(paper["broker"].getposition(paper["data"]).size, 0.01234)


# ------------------------------------------------------------------ kill switch across restarts


@pytest.fixture(scope="module")
def tripped(hourly: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A session whose drawdown limit trips; its journal records the trip."""
    candles = crash_after(hourly, NOW_ROW + 2, 0.6)
    journal = tmp_path_factory.mktemp("trip") / "journal.sqlite"
    with make_server(candles) as server:
        run = run_live(
            server,
            {1: lambda s: s.place("buy", 0.25)},
            journal=journal,
            max_live_bars=6,
            broker_options={"kill_switch": KillSwitch(max_daily_loss=None, max_drawdown=0.15)},
        )
    return {"run": run, "journal": journal}


def test_kill_switch_trip_is_recorded_in_the_journal_with_its_reason(tripped):
    book = Journal(tripped["journal"])
    try:
        trip = book.kill_switch()
    finally:
        book.close()
    assert trip is not None and trip["reason"].startswith("drawdown ")
    assert "beyond 15 %" in trip["reason"] and trip["value"] > 0


def test_restart_after_a_trip_sends_no_order_until_cleared(hourly, tripped):
    plan = {1: lambda s: s.place("buy", 0.01)}
    options = {"kill_switch": KillSwitch(max_daily_loss=None, max_drawdown=0.15)}
    with make_server(hourly) as server:
        run = run_live(
            server, plan, journal=tripped["journal"], max_live_bars=2, broker_options=options
        )
        posts = server.count("/api/v3/order", "POST")
    assert posts == 0
    order = run.strategy.orders[0]
    assert order.status == order.Rejected
    assert "earlier session" in order.info["reject_reason"]
    assert "KILL_SWITCH_ACTIVE" in [m for m, _ in run.strategy.store_messages]
    with make_server(hourly) as server:
        cleared = run_live(
            server,
            plan,
            journal=tripped["journal"],
            max_live_bars=2,
            broker_options={**options, "clear_kill_switch": True},
        )
        posts = server.count("/api/v3/order", "POST")
    assert posts == 1 and not cleared.broker.killed
    book = Journal(tripped["journal"])
    try:
        assert book.kill_switch() is None
    finally:
        book.close()


def test_kill_switch_with_no_flatten_keeps_the_position_and_its_stop_leg(hourly, tmp_path):
    """--no-flatten: the position and its emulated stop-loss stay; the session goes on."""
    candles = crash_after(hourly, NOW_ROW + 2, 0.8)

    def place(s: Script) -> None:
        s.place("buy", 0.25)
        s.place("sell", 0.25, exectype=bt.Order.Stop, price=round(s.price() * 0.5, 2))

    with make_server(candles) as server:
        run = run_live(
            server,
            {1: place},
            journal=tmp_path / "j.sqlite",
            max_live_bars=5,
            broker_options={
                "kill_switch": KillSwitch(max_daily_loss=None, max_drawdown=0.1, flatten=False),
                "on_stop": "keep",
            },
        )
        sides = [o["side"] for o in server.orders()]
    assert run.broker.killed
    assert sides == ["BUY"]  # no flattening sell
    assert run.broker.getposition(run.data).size == pytest.approx(0.25)
    assert len(run.broker.emulator.held) == 1  # the stop leg still guards the position
    assert run.strategy.live_bars == 5  # the session went on protecting it


def test_kill_switch_reason_is_readable_for_small_limits():
    from atb_strategies.live.risk import RiskGuard

    guard = RiskGuard(KillSwitch(max_daily_loss=0.0001, max_drawdown=None))
    assert guard.breach(10_000.0, live=True) is None
    reason = guard.breach(9_998.0, live=True)
    assert reason.startswith("daily loss 0.02 % beyond 0.01 %")
