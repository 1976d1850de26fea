"""Portfolio sessions (issue 20 items 1, 4 and 7): one live session trading three symbols from
one account against the loopback exchange, in lockstep (the market clock steps only once every
feed has read its candles, never with wall time).

Each symbol has its own feed, window and bundle (``make_bundle`` per symbol); one broker, one
journal, one kill switch. What is checked against the exchange's own state: orders per symbol,
a lost order response on one symbol, the kill switch across the book, a restart mid-session.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.live.broker import KillSwitch
from atb_strategies.live.journal import Journal
from atb_strategies.live.portfolio import max_symbols, session_symbols
from atb_strategies.live.runner import build_live_cerebro, run_until_stopped
from atb_strategies.live.store import CcxtStore
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import (
    PORTFOLIO_BASES,
    PORTFOLIO_NOW_ROW,
    PORTFOLIO_SYMBOLS,
    portfolio_exchange,
    portfolio_frames,
    run_atb,
)

SYMBOLS = list(PORTFOLIO_SYMBOLS)
BASES = PORTFOLIO_BASES
NOW_ROW = PORTFOLIO_NOW_ROW
BACKFILL = 60
FEED_OPTIONS = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}
TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"


def _session(
    server: Any,
    registry: Path,
    journal: Path,
    lines: list[str],
    *,
    max_bars: int,
    kill_switch: KillSwitch | None = None,
    on_stop: str = "keep",
    timeout_ms: int = 10_000,
    **params: Any,
) -> tuple[Any, Any]:
    store = CcxtStore(
        exchange="binance",
        config=server.ccxt_config(rate_limit_ms=1, timeout_ms=timeout_ms),
        retry_delay=0.01,
    )
    cerebro = build_live_cerebro(
        MlBasic,
        store=store,
        symbol=SYMBOLS,
        timeframe="1h",
        paper=False,
        cash=0.0,
        journal=journal,
        backfill_bars=BACKFILL,
        max_bars=max_bars,
        kill_switch=kill_switch or KillSwitch(max_daily_loss=None, max_drawdown=None),
        on_stop=on_stop,
        echo=lines.append,
        feed_options=FEED_OPTIONS,
        registry=str(registry),
        **{
            "long_threshold": -1.0,  # every symbol enters on its first live bar
            "exit_threshold": 10.0,  # and holds
            "position_size": 0.2,
            **params,
        },
    )
    strat = run_until_stopped(cerebro)[0]
    return cerebro, strat


def _journal_orders(path: Path) -> list[dict[str, Any]]:
    journal = Journal(path)
    try:
        return journal.orders()
    finally:
        journal.close()


def _venue(symbol: str) -> str:
    return symbol.replace("/", "").split(":")[0]


# ------------------------------------------------------------------ one session, three symbols


def test_portfolio_with_three_symbols_orders_equal_exchange_state_per_symbol(
    portfolio_registry, tmp_path
):
    lines: list[str] = []
    journal = tmp_path / "journal.sqlite"
    with portfolio_exchange(portfolio_frames()) as server:
        cerebro, strat = _session(server, portfolio_registry, journal, lines, max_bars=3)
        balances = {s: server.balance(BASES[s]) for s in SYMBOLS}
        exchange = {s: server.orders(s) for s in SYMBOLS}
    rows = _journal_orders(journal)
    for symbol in SYMBOLS:
        placed = exchange[symbol]
        assert placed and (placed[0]["side"], placed[0]["status"]) == ("BUY", "FILLED")
        mine = [r for r in rows if _venue(r["symbol"]) == symbol]
        assert sorted(r["client_id"] for r in mine) == sorted(o["clientOrderId"] for o in placed)
        data = next(d for d in cerebro.datas if d._name == symbol)
        # the broker's position of each symbol is the exchange's free balance of its coin
        assert strat.getposition(data).size == pytest.approx(float(balances[symbol][0]))
        assert balances[symbol][0] > 0
    # one model per symbol, each its own bundle
    assert {d._name: p.model_key.split("/")[0] for d, p in strat.predictions.items()} == {
        s: s for s in SYMBOLS
    }


def test_portfolio_status_prints_one_block_per_bar_with_a_book_line(portfolio_registry, tmp_path):
    lines: list[str] = []
    with portfolio_exchange(portfolio_frames()) as server:
        _session(server, portfolio_registry, tmp_path / "j.sqlite", lines, max_bars=3)
    status = [line for line in lines if re.match(rf"^{TIME} ", line)]
    blocks = [status[i : i + 4] for i in range(0, len(status), 4)]
    assert len(status) == 12 and len(blocks) == 3  # 3 bars x (3 symbols + the book)
    for block in blocks:
        stamps = {line[:16] for line in block}
        assert len(stamps) == 1, block  # one close time per block: the feeds are aligned
        names = [line[17:].split(" ", 1)[0] for line in block]
        assert names == [*SYMBOLS, "BOOK"]
        assert re.search(r" BOOK value=\S+ pnl=\S+ cash=\S+ gross=\S+ BTCUSDT=\S+", block[3])
        for line, symbol in zip(block, SYMBOLS, strict=False):
            assert f"model={symbol}/basic@" in line and " exposure=" in line
    # the first bar is every symbol's entry: each line shows its own feed's decision
    assert all("action=enter_long" in line for line in blocks[0][:3])


def test_portfolio_status_line_of_each_symbol_shows_that_symbol_s_own_decision(
    portfolio_registry, tmp_path
):
    lines: list[str] = []
    with portfolio_exchange(portfolio_frames()) as server:
        _, strat = _session(
            server,
            portfolio_registry,
            tmp_path / "j.sqlite",
            lines,
            max_bars=3,
            long_threshold=0.001,
        )
    decided = {(d["symbol"], d["bar"][:16].replace("T", " ")): d for d in strat.decisions}
    shown = [line for line in lines if re.match(rf"^{TIME} \S+ close=", line)]
    assert len(shown) == 9
    for line in shown:
        name = line[17:].split(" ", 1)[0]
        decision = decided[(name, line[:16])]
        assert f" signal={decision['signal']} action={decision['action']} " in line
    # on some bar the symbols decided differently: a line showing another feed's decision
    # (the last one the strategy made) would fail above
    bars = {bar for _, bar in decided}
    assert any(
        len({(d["signal"], d["action"]) for (_, b), d in decided.items() if b == bar}) > 1
        for bar in bars
    )


def test_portfolio_with_a_missing_candle_on_one_symbol_does_not_stall_the_others(
    portfolio_registry, tmp_path
):
    frames = portfolio_frames()
    gap = frames["ETHUSDT"].index[NOW_ROW + 1]  # ETH's second live candle never comes
    frames["ETHUSDT"] = frames["ETHUSDT"].drop(index=gap)
    lines: list[str] = []
    with portfolio_exchange(frames) as server:
        _session(server, portfolio_registry, tmp_path / "j.sqlite", lines, max_bars=3)
    status = [line for line in lines if re.match(rf"^{TIME} ", line)]
    closing = (gap + pd.Timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    block = [line for line in status if line.startswith(closing)]
    # the others' bar is shown with ETH said late, and trading went on for every symbol
    assert [line[17:].split(" ", 1)[0] for line in block] == [
        "BTCUSDT",
        "SOLUSDT",
        "ETHUSDT",
        "BOOK",
    ]
    assert block[2] == f"{closing} ETHUSDT late: no live bar closing then"
    later = [line for line in status if line[:16] > closing and " ETHUSDT close=" in line]
    assert later, status  # ETH's next candle is taken when it comes
    for symbol in ("BTCUSDT", "SOLUSDT"):
        assert len([line for line in status if f" {symbol} close=" in line]) == 3


def test_portfolio_with_a_lost_order_response_on_one_symbol_places_that_order_once(
    portfolio_registry, tmp_path
):
    lines: list[str] = []
    with portfolio_exchange(portfolio_frames()) as server:
        server.faults.queue("/api/v3/order", "timeout", method="POST", delay=1.0)
        _session(
            server, portfolio_registry, tmp_path / "j.sqlite", lines, max_bars=2, timeout_ms=400
        )
        posts = [
            r.params.get("symbol")
            for r in server.requests
            if (r.path, r.method) == ("/api/v3/order", "POST")
        ]
        orders = {s: server.orders(s) for s in SYMBOLS}
    # the lost response was resolved by its client id: one BUY per symbol, none sent twice
    assert sorted(posts) == sorted(SYMBOLS)
    for symbol in SYMBOLS:
        assert [(o["side"], o["status"]) for o in orders[symbol]] == [("BUY", "FILLED")]


def test_portfolio_kill_switch_flattens_every_position_of_the_book(portfolio_registry, tmp_path):
    lines: list[str] = []
    journal = tmp_path / "j.sqlite"
    with portfolio_exchange(portfolio_frames(crash_from=NOW_ROW + 2)) as server:
        cerebro, strat = _session(
            server,
            portfolio_registry,
            journal,
            lines,
            max_bars=6,
            kill_switch=KillSwitch(max_daily_loss=None, max_drawdown=0.05),
            stop_loss=0.5,  # the stop-losses stay below the 40 % fall: the switch acts alone
        )
        balances = {s: server.balance(BASES[s]) for s in SYMBOLS}
        orders = {s: server.orders(s) for s in SYMBOLS}
    assert cerebro.broker.killed
    roles = {(_venue(r["symbol"]), json.loads(r["info"])["role"]) for r in _journal_orders(journal)}
    for symbol in SYMBOLS:
        sides = [(o["side"], o["status"]) for o in orders[symbol]]
        assert sides == [("BUY", "FILLED"), ("SELL", "FILLED")], sides
        assert (symbol, "kill_switch_flatten") in roles
        assert balances[symbol] == (Decimal(0), Decimal(0))
        data = next(d for d in cerebro.datas if d._name == symbol)
        assert strat.getposition(data).size == 0


def test_portfolio_kill_switch_with_no_flatten_keeps_every_position(portfolio_registry, tmp_path):
    lines: list[str] = []
    journal = tmp_path / "j.sqlite"
    with portfolio_exchange(portfolio_frames(crash_from=NOW_ROW + 2)) as server:
        cerebro, strat = _session(
            server,
            portfolio_registry,
            journal,
            lines,
            max_bars=6,
            kill_switch=KillSwitch(max_daily_loss=None, max_drawdown=0.05, flatten=False),
            stop_loss=0.5,
        )
        balances = {s: server.balance(BASES[s]) for s in SYMBOLS}
        sells = [o for s in SYMBOLS for o in server.orders(s) if o["side"] == "SELL"]
    assert cerebro.broker.risk.killed
    assert sells == []
    assert all(free > 0 for free, _ in balances.values())
    assert {json.loads(r["info"])["role"] for r in _journal_orders(journal)} == {"entry"}
    for data in cerebro.datas:  # each position kept, as the exchange holds it
        assert strat.getposition(data).size == pytest.approx(float(balances[data._name][0]))


def test_portfolio_with_max_gross_exposure_refuses_the_entry_beyond_it(
    portfolio_registry, tmp_path
):
    limits = KillSwitch(max_daily_loss=None, max_drawdown=None, max_gross_exposure=0.3)
    with portfolio_exchange(portfolio_frames()) as server:
        cerebro, strat = _session(
            server, portfolio_registry, tmp_path / "j", [], max_bars=1, kill_switch=limits
        )
        orders = {s: server.orders(s) for s in SYMBOLS}
    notional = {s: sum(float(o["cummulativeQuoteQty"]) for o in orders[s]) for s in SYMBOLS}
    # BTC (~4 % of the value, sized by its confidence) and ETH (20 %) fit in 30 %; SOL's 20 %
    # more would not, so it is refused before it is sent
    assert [len(orders[s]) for s in SYMBOLS] == [1, 1, 0]
    assert 1_000 < notional["BTCUSDT"] + notional["ETHUSDT"] < 3_000  # + SOL's ~2,000 > 3,000
    sol = next(d for d in cerebro.datas if d._name == "SOLUSDT")
    assert strat.getposition(sol).size == 0 and not cerebro.broker.killed


def test_portfolio_with_max_symbol_share_refuses_every_entry_beyond_it(
    portfolio_registry, tmp_path
):
    limits = KillSwitch(max_daily_loss=None, max_drawdown=None, max_symbol_share=0.1)
    with portfolio_exchange(portfolio_frames()) as server:
        _session(
            server, portfolio_registry, tmp_path / "j.sqlite", [], max_bars=1, kill_switch=limits
        )
        orders = server.orders()
    # ETH and SOL entries are 20 % of the value each, over the 10 % a symbol may have; BTC's
    # (sized down by its low confidence) is under it
    assert [o["symbol"] for o in orders] == ["BTCUSDT"]
    assert float(orders[0]["cummulativeQuoteQty"]) < 1_000


def test_portfolio_restart_mid_session_recovers_every_symbol(portfolio_registry, tmp_path):
    journal = tmp_path / "j.sqlite"
    with portfolio_exchange(portfolio_frames()) as server:
        _session(server, portfolio_registry, journal, [], max_bars=2)
        held = {s: server.balance(BASES[s])[0] for s in SYMBOLS}
        buys_before = {s: len(server.orders(s)) for s in SYMBOLS}
        lines: list[str] = []
        cerebro, strat = _session(server, portfolio_registry, journal, lines, max_bars=2)
        buys_after = {s: [o for o in server.orders(s) if o["side"] == "BUY"] for s in SYMBOLS}
        balances = {s: server.balance(BASES[s]) for s in SYMBOLS}
    for symbol in SYMBOLS:
        assert held[symbol] > 0
        data = next(d for d in cerebro.datas if d._name == symbol)
        # seeded per asset from the account; the holding is adopted, not bought again
        assert len(buys_after[symbol]) == buys_before[symbol] == 1
        assert strat.getposition(data).size == pytest.approx(float(balances[symbol][0]))
    rows = _journal_orders(journal)
    assert {_venue(r["symbol"]) for r in rows} == set(SYMBOLS)
    assert all(r["state"] == "closed" for r in rows)


# ------------------------------------------------------------------ open orders in the limits


class Plan(bt.Strategy):
    """Calls ``plan[n](self)`` on the n-th bar where every feed is live; records each order's
    notifications (status and reject reason)."""

    params = (("plan", None),)

    def __init__(self) -> None:
        self.live_bars = 0
        self.events: list[tuple[str, str, str, str | None]] = []
        self.placed: dict[str, bt.Order] = {}
        self.days: list[tuple[Any, str | None, float | None, float]] = []

    def notify_order(self, order: bt.Order) -> None:
        name, status = order.data._name, order.getstatusname()
        self.events.append((name, order.info.get("role"), status, order.info.get("reject_reason")))

    def next(self) -> None:
        if any(d._laststatus != d.LIVE for d in self.datas):
            return
        self.live_bars += 1
        risk = self.broker.risk  # what the kill switch watched on this bar (before deciding)
        stamp = bt.num2date(max(d.datetime[0] for d in self.datas))
        self.days.append((stamp, risk.day, risk.day_start_value, self.broker.getvalue()))
        action = (self.p.plan or {}).get(self.live_bars)
        if action is not None:
            action(self)

    def feed(self, symbol: str) -> Any:
        return self.getdatabyname(symbol)

    def order(self, role: str, symbol: str, side: str, notional: float, **kwargs: Any) -> None:
        data = self.feed(symbol)
        price = kwargs.get("price") or float(data.close[0])
        size = round(notional / price, 5)
        self.placed[role] = getattr(self, side)(data=data, size=size, role=role, **kwargs)


def _run_plan(
    server: Any, journal: Path, plan: dict[int, Any], kill_switch: KillSwitch, max_bars: int
) -> tuple[Any, Plan]:
    store = CcxtStore(
        exchange="binance", config=server.ccxt_config(rate_limit_ms=1), retry_delay=0.01
    )
    cerebro = bt.Cerebro(quicknotify=True, stdstats=False)
    for symbol in SYMBOLS:
        data = store.getdata(
            dataname=symbol, bar="1h", backfill_bars=5, max_live_bars=max_bars, **FEED_OPTIONS
        )
        cerebro.adddata(data, name=symbol)
    cerebro.addstore(store)
    broker = store.getbroker(
        journal=str(journal),
        kill_switch=kill_switch,
        order_poll=0.0,
        balance_refresh=0.0,
        on_stop="keep",
    )
    cerebro.setbroker(broker)
    cerebro.addstrategy(Plan, plan=plan)
    return cerebro, cerebro.run()[0]


def test_portfolio_limits_count_an_unfilled_limit_entry_and_never_refuse_an_exit(tmp_path):
    limits = KillSwitch(max_daily_loss=None, max_drawdown=None, max_gross_exposure=0.3)

    def first(s: Plan) -> None:  # a limit entry far below the market, then a small ETH buy
        btc = float(s.feed("BTCUSDT").close[0])
        s.order("btc_limit", "BTCUSDT", "buy", 2_000, exectype=bt.Order.Limit, price=btc / 2)
        s.order("eth_entry", "ETHUSDT", "buy", 800)

    def second(s: Plan) -> None:  # 800 held + 2,000 open + 500 > 3,000; without the open 1,300
        s.order("sol_entry", "SOLUSDT", "buy", 500)

    def third(s: Plan) -> None:  # the whole ETH position: 800 more would break the limit as
        # an entry (800 + 2,000 + 800 > 3,000); an exit is not new risk
        held = s.getposition(s.feed("ETHUSDT")).size
        s.placed["eth_exit"] = s.sell(data=s.feed("ETHUSDT"), size=held, role="eth_exit")

    with portfolio_exchange(portfolio_frames()) as server:
        cerebro, strat = _run_plan(
            server, tmp_path / "j.sqlite", {1: first, 2: second, 3: third}, limits, 4
        )
        orders = {
            s: [(o["side"], o["type"], o["status"]) for o in server.orders(s)] for s in SYMBOLS
        }
    assert orders["BTCUSDT"] == [("BUY", "LIMIT", "NEW")]  # open the whole session, unfilled
    assert orders["ETHUSDT"] == [("BUY", "MARKET", "FILLED"), ("SELL", "MARKET", "FILLED")]
    assert orders["SOLUSDT"] == []  # refused before it was sent
    (refused,) = [e for e in strat.events if e[2] == "Rejected"]
    assert refused[:2] == ("SOLUSDT", "sol_entry")
    reason = refused[3]
    assert "\n" not in reason
    found = re.fullmatch(
        r"gross exposure (\S+) \(positions (\S+) \+ open entry orders (\S+) \+ this order "
        r"(\S+)\) would exceed max_gross_exposure 30 % of the value (\S+)",
        reason,
    )
    assert found, reason
    total, held, pending, mine, value = (float(x) for x in found.groups())
    assert pending == pytest.approx(2_000, rel=1e-3)  # the BTC limit entry, at its price
    assert 700 < held < 900 and 450 < mine < 550
    assert held + mine < 0.3 * value < total  # refused only because the open entry counts
    assert ("ETHUSDT", "eth_exit", "Completed", None) in strat.events
    assert not cerebro.broker.killed


def test_daily_loss_day_turns_at_the_first_bar_of_a_new_utc_day_and_survives_a_restart(
    tmp_path,
):
    # the first live bar closes at 22:00 UTC: bars 1-2 are on day one, bar 3 closes at 00:00
    limits = KillSwitch(max_daily_loss=0.5, max_drawdown=None)
    journal = tmp_path / "j.sqlite"

    def buy(s: Plan) -> None:  # a position, so the value moves from bar to bar
        s.order("entry", "BTCUSDT", "buy", 5_000)

    with portfolio_exchange(portfolio_frames(), now_row=NOW_ROW - 3) as server:
        _, first = _run_plan(server, journal, {1: buy}, limits, 4)
        _, second = _run_plan(server, journal, {}, limits, 2)  # a restart, later that day
    stamps = [stamp.strftime("%Y-%m-%d %H:%M") for stamp, *_ in first.days]
    assert stamps == [
        "2024-01-05 22:00",
        "2024-01-05 23:00",
        "2024-01-06 00:00",
        "2024-01-06 01:00",
    ]
    days = [day for _, day, _, _ in first.days]
    assert days == ["2024-01-05", "2024-01-05", "2024-01-06", "2024-01-06"]  # market time
    starts = [start for _, _, start, _ in first.days]
    values = [value for *_, value in first.days]
    assert starts[0] == starts[1] == pytest.approx(values[0])  # day one: its first value
    assert starts[2] == starts[3] == pytest.approx(values[2])  # reset at 00:00's bar
    assert starts[2] != pytest.approx(starts[0], abs=0.01)
    # the restart on the same journal keeps the new day's start, not its own first value
    assert [day for _, day, _, _ in second.days] == ["2024-01-06", "2024-01-06"]
    assert [start for _, _, start, _ in second.days] == [pytest.approx(starts[2])] * 2
    assert second.days[0][3] != pytest.approx(starts[2], abs=0.01)
    book = Journal(journal)
    try:
        assert book.day_start_value("2024-01-06", 1.0) == pytest.approx(starts[2])
    finally:
        book.close()


# ------------------------------------------------------------------ the session's end


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo_args(registry: Path, tmp_path: Path, *args: str) -> list[str]:
    return [
        *("live", "ml_basic", "--symbols", ",".join(SYMBOLS), "--exchange", "loopback"),
        *("--demo-clock", "lockstep", "--paper", "--max-bars", "1", "--backfill-bars", "100"),
        *("--registry", str(registry), "--journal", str(tmp_path / "s" / "journal.sqlite")),
        *("--log-file", str(tmp_path / "live.log"), *args),
    ]


def test_atb_live_dashboard_is_shut_down_when_the_session_returns(portfolio_registry, tmp_path):
    port = _free_port()
    args = _demo_args(portfolio_registry, tmp_path, "--dashboard", f"127.0.0.1:{port}")
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"dashboard: http://127.0.0.1:{port}/" in result.output  # it served the session
    assert not [t for t in threading.enumerate() if t.name == "atb-dashboard"]
    with socket.socket() as again:  # no SO_REUSEADDR: a socket still listening would refuse
        again.bind(("127.0.0.1", port))
        again.listen()


# ------------------------------------------------------------------ shadows per symbol


def test_atb_live_with_symbols_and_shadows_keeps_a_book_per_symbol_and_model(make_bundle, tmp_path):
    champion, challengers = "2026-01-03_1h_v3", ["2026-01-02_1h_v2", "2026-01-01_1h_v1"]
    for i, symbol in enumerate(SYMBOLS):  # each challenger differs from its champion
        for k, version in enumerate(challengers):
            make_bundle(symbol=symbol, seed=10 * i + k, version=version, promote=False)
        make_bundle(symbol=symbol, seed=10 * i + 2, version=champion)  # latest
    registry = tmp_path / "models"
    shadows = [arg for v in challengers for arg in ("--shadow", v)]
    args = _demo_args(registry, tmp_path, *shadows, "--long-threshold", "0.0005")
    args[args.index("--max-bars") + 1] = "4"
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "s"
    rows = pd.read_csv(folder / "shadow.csv")
    assert rows["session"].nunique() == 1
    # a row per bar, symbol and model: the champion's virtual twin and each challenger
    assert len(rows) == 4 * len(SYMBOLS) * 3
    for (_, symbol), bar in rows.groupby(["time", "symbol"]):
        keys = {f"{symbol}/basic@{v}" for v in [champion, *challengers]}
        assert set(bar["model_key"]) == keys
        assert list(bar["role"]) == ["champion", "shadow", "shadow"]
    # the twin of each symbol decides on that symbol's own prediction, as the session did
    shown = {}
    for line in result.output.splitlines():
        found = re.match(rf"^({TIME}) (\S+) close=.* ret=(\S+)% .*signal=(\S+) ", line)
        if found:
            shown[(found[1], found[2])] = (float(found[3]), found[4])
    twins = rows[rows["role"] == "champion"]
    assert len(shown) == len(twins) == 4 * len(SYMBOLS)
    for twin in twins.itertuples():
        ret, signal = shown[(twin.time[:16].replace("T", " "), twin.symbol)]
        assert 100 * twin.predicted_return == pytest.approx(ret, abs=6e-5)
        assert twin.signal == signal
    # the comparison, at stop and again from the file: a block per symbol, a line per book
    for output in (
        result.output,
        CliRunner().invoke(cli, ["live", "report", str(folder)], catch_exceptions=False).output,
    ):
        table = output[output.index("role     model") :].splitlines()
        for symbol in SYMBOLS:
            block = table[table.index(f"{symbol}:") + 1 :][:3]
            assert [line.split()[:3] for line in block] == [
                [role, f"{symbol}/basic@{v}", "4"]
                for role, v in [("champion", champion), *(("shadow", v) for v in challengers)]
            ]
    assert (folder / "shadow.png").read_bytes()[:4] == b"\x89PNG"


def test_atb_live_with_symbols_and_a_shadow_missing_for_one_symbol_is_one_line(
    make_bundle, tmp_path
):
    for i, symbol in enumerate(SYMBOLS):
        make_bundle(symbol=symbol, seed=i)
    make_bundle(symbol="BTCUSDT", seed=9, version="2026-01-02_1h_v2", promote=False)
    args = _demo_args(tmp_path / "models", tmp_path, "--shadow", "2026-01-02_1h_v2")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert error.startswith(
        "error: ModelNotFoundError: --shadow 2026-01-02_1h_v2 (every symbol of --symbols needs "
        "it): ETHUSDT/basic has no version '2026-01-02_1h_v2'"
    ), error
    assert "demo exchange (loopback) at" not in result.output  # refused before connecting


# ------------------------------------------------------------------ sentiment per symbol

SENTIMENT_LINE = rf"^({TIME}) (\S+) close=.* sent=(\S+) age=(\S+)h model=\S+/sentiment@"


def _sentiment_session(tmp_path: Path, *args: str) -> dict[tuple[str, str], tuple[float, float]]:
    """``atb live ml_sentiment`` on BTCUSDT and ETHUSDT (the shipped sentiment models) on the
    demo exchange: ``{(close time, symbol): (sentiment, age in hours)}`` from its status."""
    result = CliRunner().invoke(
        cli,
        [
            *("live", "ml_sentiment", "--symbols", "BTCUSDT,ETHUSDT", "--exchange", "loopback"),
            *("--demo-clock", "lockstep", "--paper", "--max-bars", "2", *args),
            *("--registry", str(Path(__file__).resolve().parents[2] / "models")),
            *("--journal", str(tmp_path / "s" / "journal.sqlite")),
            *("--log-file", str(tmp_path / "live.log")),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    found = [re.match(SENTIMENT_LINE, line) for line in result.output.splitlines()]
    return {(m[1], m[2]): (float(m[3]), float(m[4])) for m in found if m}


def test_atb_live_ml_sentiment_with_symbols_gives_each_feed_its_own_synthetic_index(tmp_path):
    shown = _sentiment_session(tmp_path, "--synthetic-sentiment", "--backfill-bars", "800")
    closes = sorted({close for close, _ in shown})
    assert len(shown) == 4 and len(closes) == 2  # a line per symbol and live bar
    # the demo index is made from a feed's own candles: a poller per symbol, never shared
    for close in closes:
        assert shown[(close, "BTCUSDT")][0] != shown[(close, "ETHUSDT")][0]


def test_atb_live_ml_sentiment_with_symbols_reads_one_csv_index_for_every_symbol(tmp_path):
    days = pd.date_range("2023-11-01", "2024-06-01", freq="1D")
    index = pd.Series((days.day_of_year * 7) % 100, index=days)  # a value a day, at 00:00 UTC
    csv = tmp_path / "fng.csv"
    pd.DataFrame({"timestamp": days, "value": index.to_numpy()}).to_csv(csv, index=False)
    shown = _sentiment_session(tmp_path, "--sentiment", str(csv), "--backfill-bars", "100")
    assert len(shown) == 4
    for (close, _symbol), (value, age) in shown.items():
        stamp = pd.Timestamp(close)
        published = index.loc[:stamp].index[-1]  # the latest value published at the close
        assert value == index[published]
        assert age == pytest.approx((stamp - published) / pd.Timedelta(hours=1))


def test_build_live_cerebro_with_one_sentiment_poller_for_several_symbols_is_one_line(tmp_path):
    from atb_strategies.sentiment import SentimentPoller, SyntheticSentimentSource
    from atb_strategies.strategies.ml_sentiment import MlSentiment

    poller = SentimentPoller(SyntheticSentimentSource(seed=0))
    store = CcxtStore(exchange="binance")  # nothing connects: refused while wiring
    with pytest.raises(ConfigurationError, match=r"one poller for 3 symbols: .* one per symbol"):
        build_live_cerebro(
            MlSentiment,
            store=store,
            symbol=SYMBOLS,
            timeframe="1h",
            paper=True,
            cash=10_000.0,
            journal=None,
            backfill_bars=10,
            max_bars=1,
            kill_switch=None,
            on_stop="cancel",
            feed_options={"sentiment": poller},
        )


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("symbols", "message"),
    [
        ("BTCUSDT,ETHUSDT,BTCUSDT", "lists BTCUSDT more than once"),
        ("BTCUSDT,ETHBTC", "here USDT (that of BTCUSDT); ETHBTC would need another"),
        ("BTCUSDT,,ETHUSDT", "names separated by commas"),
        ("BTCUSDT,DOGE", "quote currency of 'DOGE'"),
    ],
)
def test_session_symbols_with_bad_lists_say_what_is_wrong(symbols, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        session_symbols("BTCUSDT", symbols, None)


def test_session_symbols_split_the_quote_currency_by_the_longest_match():
    assert session_symbols("X", "BTCUSDT,ETHUSDT", None) == ["BTCUSDT", "ETHUSDT"]
    assert session_symbols("X", "XBTUSD,ETH/USD", None) == ["XBTUSD", "ETH/USD"]
    with pytest.raises(ConfigurationError, match=r"mixes quote currencies \(USD, USDT\)"):
        session_symbols("X", "BTCUSD,ETHUSDT", None)


def test_session_symbols_from_a_file_with_comments(tmp_path):
    path = tmp_path / "symbols.txt"
    path.write_text("# my book\nbtcusdt\nETHUSDT, SOLUSDT  # alts\n\n")
    assert session_symbols("XRPUSDT", None, path) == SYMBOLS
    path.write_text("# nothing\n")
    with pytest.raises(ConfigurationError, match="lists no symbol"):
        session_symbols("XRPUSDT", None, path)


def test_session_symbols_beyond_the_rate_limit_are_refused_with_the_numbers():
    allowed = max_symbols(60, 50)  # one-minute bars, one request per 50 ms
    assert allowed == int(0.5 * 60_000 / 50 / 6)
    names = ",".join(f"C{i}USDT" for i in range(allowed + 1))
    with pytest.raises(ConfigurationError, match=f"lists {allowed + 1} symbols.*at most {allowed}"):
        session_symbols("BTCUSDT", names, None, timeframe_s=60, rate_limit_ms=50)
    assert len(session_symbols("BTCUSDT", names, None, timeframe_s=3600, rate_limit_ms=50)) == (
        allowed + 1
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--symbols", "BTCUSDT,ETHUSDT,ETHUSDT"), "lists ETHUSDT more than once"),
        (("--symbols", "BTCUSDT,ETHEUR"), "mixes quote currencies (EUR, USDT)"),
        (("--symbols", "BTCUSDT,ETHUSDT", "--timeframe", "1s"), "at most"),
        (("--symbols", "BTCUSDT,SOLUSDT"), "SOLUSDT"),  # no model for SOLUSDT in models/
    ],
)
def test_atb_live_with_bad_symbols_prints_one_error_line(tmp_path, args, message):
    registry = Path(__file__).resolve().parents[2] / "models"
    result = CliRunner().invoke(
        cli,
        [
            "live",
            "ml_basic",
            "--exchange",
            "loopback",
            "--paper",
            "--journal",
            str(tmp_path / "j.sqlite"),
            "--log-file",
            str(tmp_path / "live.log"),
            "--registry",
            str(registry),
            *args,
        ],
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "demo exchange (loopback) at" not in result.output  # refused before connecting


@pytest.mark.slow
def test_atb_live_with_symbols_on_the_demo_exchange_prints_a_block_per_bar(
    portfolio_registry, tmp_path
):
    symbols_file = tmp_path / "book.txt"
    symbols_file.write_text("\n".join(SYMBOLS) + "\n")
    done = run_atb(
        [
            *("live", "ml_basic", "--symbols-file", str(symbols_file), "--exchange", "loopback"),
            *("--demo-clock", "lockstep", "--paper", "--max-bars", "2", "--backfill-bars", "100"),
            *("--registry", str(portfolio_registry)),
        ],
        tmp_path,
        script=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"PAPER: ml_basic {', '.join(SYMBOLS)} (3 symbols) 1h on loopback" in done.stdout
    status = [line for line in done.stdout.splitlines() if re.match(rf"^{TIME} \S+ ", line)]
    names = [line[17:].split(" ", 1)[0] for line in status]
    assert names == [*SYMBOLS, "BOOK"] * 2
    assert len({line[:16] for line in status[:4]}) == 1
