"""The loopback Binance server driven by the real ``ccxt.binance`` client (nothing is patched).

Every test talks HTTP to ``BinanceServer`` on 127.0.0.1 through ccxt's own signing, parsing,
error mapping and rate limiter. The candles are seeded one-minute candles (``generate_ohlcv``) from
2024-01-01 00:00 UTC; the clock starts half-way through the 05:00 candle (row 300).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import ccxt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.data import generate_ohlcv
from atb_strategies.testing import binance, binance_server
from atb_strategies.testing.binance import (
    FAULT_KINDS,
    BinanceServer,
    MarketClock,
    synthetic_candles,
)
from tests.conftest import loopback_exchange

SYMBOL = "BTC/USDT"
MINUTE = 60_000
T0 = int(pd.Timestamp("2024-01-01", tz="UTC").timestamp() * 1000)
NOW_ROW = 300
START = T0 + NOW_ROW * MINUTE + 30_000  # 05:00:30, half-way through row 300


@pytest.fixture(scope="module")
def minute_candles() -> pd.DataFrame:
    return synthetic_candles(600, timeframe="1m", seed=6)


@pytest.fixture
def server(minute_candles: pd.DataFrame) -> Iterator[BinanceServer]:
    with loopback_exchange(minute_candles, start_time_ms=START) as srv:
        yield srv


def _client(server: BinanceServer, **config: object) -> ccxt.binance:
    settings = server.ccxt_config(rate_limit_ms=1)
    settings.update(config)
    return ccxt.binance(settings)


@pytest.fixture
def exchange(server: BinanceServer) -> Iterator[ccxt.binance]:
    client = _client(server)
    client.load_markets()
    yield client
    client.close()


def _ms(stamp: pd.Timestamp) -> int:
    return int((stamp - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1))


def _future_low(candles: pd.DataFrame, minutes: int) -> float:
    return float(candles["low"].iloc[NOW_ROW + 1 : NOW_ROW + 1 + minutes].min())


def _limit_between(server: BinanceServer, candles: pd.DataFrame, minutes: int = 60) -> float:
    """A price below the current one that the next ``minutes`` candles are sure to cross."""
    current = float(server.current_price())
    low = _future_low(candles, minutes)
    limit = round((current + low) / 2, 2)
    assert low < limit < current, "seeded candles must dip below the current price"
    return limit


# ------------------------------------------------------------------------------ markets, time


def test_binance_server_module_with_old_import_path_reexports_the_package():
    assert binance_server.__all__ == binance.__all__
    for name in binance.__all__:
        assert getattr(binance_server, name) is getattr(binance, name)


def test_synthetic_candles_with_server_defaults_come_from_generate_ohlcv():
    frame = synthetic_candles(50, timeframe="5m", seed=4, start="2024-02-01", price=100.0)
    expected = generate_ohlcv(50, timeframe="5m", seed=4, start="2024-02-01", start_price=100.0)
    pd.testing.assert_frame_equal(frame, expected)
    assert len(synthetic_candles(1)) == 1
    with pytest.raises(ValueError, match="one minute or longer"):
        synthetic_candles(10, timeframe="1s")


def test_ccxt_config_with_every_binance_url_points_at_loopback(server):
    config = server.ccxt_config()
    client = ccxt.binance(config)
    try:
        for section in ("api", "test", "demo"):
            for name, url in client.urls[section].items():
                assert url.startswith(server.url + "/"), (section, name, url)
        assert client.urls["api"]["public"] == server.url + "/api/v3"
        assert urlsplit(client.urls["api"]["sapi"]).path == "/sapi/v1"
        assert client.options["adjustForTimeDifference"] is True
    finally:
        client.close()


def test_load_markets_with_loopback_config_parses_filters_without_sapi_calls(server):
    client = _client(server)
    try:
        markets = client.load_markets()
    finally:
        client.close()
    assert list(markets) == [SYMBOL]
    market = markets[SYMBOL]
    assert market["spot"] is True and market["active"] is True
    assert market["precision"]["amount"] == 1e-05 and market["precision"]["price"] == 0.01
    assert market["limits"]["cost"]["min"] == 5.0
    assert market["limits"]["amount"]["min"] == 1e-05
    assert {r.path for r in server.requests} == {"/api/v3/exchangeInfo", "/api/v3/time"}
    assert server.count("/api/v3/exchangeInfo", "GET") == 1


def test_fetch_time_with_frozen_clock_follows_set_and_advance(server, exchange):
    assert exchange.fetch_time() == START
    server.clock.advance(3_600_000)
    assert exchange.fetch_time() == START + 3_600_000
    server.clock.set_time("2024-01-01 02:00")
    assert exchange.fetch_time() == T0 + 2 * 3_600_000


def test_market_clock_with_speed_runs_faster_than_wall_time():
    clock = MarketClock(1_000_000, speed=0.0)
    assert clock.now_ms == 1_000_000
    clock.set_speed(600.0)
    time.sleep(0.2)
    assert clock.now_ms >= 1_000_000 + 0.2 * 600 * 1000
    clock.set_speed(0.0)
    frozen = clock.now_ms
    time.sleep(0.02)
    assert clock.now_ms == frozen
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


# ---------------------------------------------------------------------------------- lockstep


@pytest.fixture
def stepped(minute_candles: pd.DataFrame) -> Iterator[tuple[BinanceServer, ccxt.binance]]:
    """A lockstep server at 05:00:30 and a client that has loaded the markets."""
    with loopback_exchange(minute_candles, start_time_ms=START, lockstep=True) as srv:
        client = _client(srv)
        client.load_markets()
        yield srv, client
        client.close()


def test_lockstep_with_client_shown_every_closed_candle_steps_to_next_close_on_time(stepped):
    server, client = stepped
    assert client.fetch_time() == START  # nothing seen yet: the clock stays
    rows = client.fetch_ohlcv(SYMBOL, "1m", since=T0 + 290 * MINUTE)
    assert rows[-2][0] == T0 + (NOW_ROW - 1) * MINUTE  # the last closed candle was shown
    assert server.clock.now_ms == START  # klines alone never move the clock
    assert client.fetch_time() == START  # the client learns it has to wait ...
    assert client.fetch_time() == T0 + (NOW_ROW + 1) * MINUTE  # ... then the 05:00 candle closes
    assert client.fetch_time() == T0 + (NOW_ROW + 1) * MINUTE  # one step per candle seen
    assert server.lockstep.steps == 1
    rows = client.fetch_ohlcv(SYMBOL, "1m", since=T0 + NOW_ROW * MINUTE)
    assert [r[0] for r in rows] == [T0 + NOW_ROW * MINUTE, T0 + (NOW_ROW + 1) * MINUTE]
    assert rows[1][5] == 0.0  # the next candle opens exactly now: nothing of it is revealed
    assert client.fetch_time() == T0 + (NOW_ROW + 1) * MINUTE
    assert client.fetch_time() == T0 + (NOW_ROW + 2) * MINUTE


def test_lockstep_with_any_poll_pace_shows_each_candle_closing_once_in_order(stepped):
    server, client = stepped
    seen: list[int] = []
    since = T0 + (NOW_ROW - 1) * MINUTE
    now = client.fetch_time()
    for poll in range(12):
        if poll:  # wait for the next close, asking the time as often as it likes
            asked, last = 0, now
            while now == last and asked < 5:
                now, asked = client.fetch_time(), asked + 1
            assert asked == 2
            for _ in range(poll % 3):
                assert client.fetch_time() == now
        closed = [
            r[0] for r in client.fetch_ohlcv(SYMBOL, "1m", since=since) if r[0] + MINUTE <= now
        ]
        seen += closed
        since = closed[-1] + MINUTE
    assert seen == [T0 + (NOW_ROW - 1 + k) * MINUTE for k in range(12)]
    assert server.lockstep.steps == 11


def test_lockstep_with_truncated_page_or_old_range_does_not_step(stepped):
    server, client = stepped
    client.fetch_ohlcv(SYMBOL, "1m", since=T0, limit=100)  # a first page of the backfill
    client.fetch_ohlcv(SYMBOL, "1m", params={"endTime": T0 + 200 * MINUTE})
    assert client.fetch_time() == START and server.lockstep.armed is None
    client.fetch_ohlcv(SYMBOL, "1m", since=T0 + 200 * MINUTE, limit=100)  # the last page
    assert server.lockstep.armed == MINUTE
    assert [client.fetch_time() for _ in range(2)] == [START, T0 + (NOW_ROW + 1) * MINUTE]


def test_lockstep_with_5m_candles_steps_to_the_next_5m_close(stepped):
    server, client = stepped
    client.fetch_ohlcv(SYMBOL, "5m", limit=3)
    assert [client.fetch_time() for _ in range(2)] == [START, T0 + (NOW_ROW + 5) * MINUTE]
    server.lockstep.enabled = False
    client.fetch_ohlcv(SYMBOL, "5m", limit=3)
    assert {client.fetch_time() for _ in range(3)} == {T0 + (NOW_ROW + 5) * MINUTE}  # frozen


def test_lockstep_with_faulted_klines_or_a_test_moving_the_clock_does_not_step(stepped):
    server, client = stepped
    server.faults.queue("/api/v3/klines", "503")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        client.fetch_ohlcv(SYMBOL, "1m", limit=5)
    assert {client.fetch_time() for _ in range(3)} == {START}  # the client saw nothing
    client.fetch_ohlcv(SYMBOL, "1m", limit=5)
    client.fetch_time()
    server.clock.advance(10 * MINUTE)  # candles closed that the client has not seen
    assert server.lockstep.armed is None
    assert {client.fetch_time() for _ in range(3)} == {START + 10 * MINUTE}


def test_lockstep_after_the_last_candle_keeps_stepping_an_up_to_date_client(minute_candles):
    end = T0 + len(minute_candles) * MINUTE
    with loopback_exchange(minute_candles, start_time_ms=end - MINUTE, lockstep=True) as srv:
        client = _client(srv)
        try:
            client.load_markets()
            client.fetch_ohlcv(SYMBOL, "1m", limit=2)
            assert [client.fetch_time() for _ in range(2)] == [end - MINUTE, end]
            assert client.fetch_ohlcv(SYMBOL, "1m", since=end) == []  # no candle after the data
            assert [client.fetch_time() for _ in range(2)] == [end, end + MINUTE]
        finally:
            client.close()


def test_lockstep_with_running_clock_raises_value_error(minute_candles):
    with pytest.raises(ValueError, match="lockstep drives a frozen clock"):
        BinanceServer(minute_candles, lockstep=True, clock_speed=60.0)


def test_fault_with_advance_ms_moves_the_clock_each_time_it_fires(server, exchange):
    server.faults.queue("/api/v3/klines", "503", count=3, advance_ms=15 * MINUTE)
    for _ in range(3):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            exchange.fetch_ohlcv(SYMBOL, "1m", limit=1)
    assert [r.time_ms for r in server.requests[-3:]] == [START + k * 15 * MINUTE for k in range(3)]
    assert exchange.fetch_time() == START + 45 * MINUTE
    with pytest.raises(ValueError, match="advance_ms"):
        server.faults.queue("/api/v3/klines", "503", advance_ms=-1)


def test_signed_request_after_many_clock_jumps_seen_by_others_still_passes(server, exchange):
    other = _client(server)
    try:
        for _ in range(100):  # more remembered syncs than the server used to keep
            server.clock.advance(3_600_000)
            other.fetch_time()
    finally:
        other.close()
    assert exchange.fetch_balance()["USDT"]["free"] == 10000.0  # synced once, never since


# ------------------------------------------------------------------------------------ klines


def test_fetch_ohlcv_with_clock_mid_candle_returns_only_opened_candles_last_forming(
    server, exchange, minute_candles
):
    rows = exchange.fetch_ohlcv(SYMBOL, "1m")
    stamps = [r[0] for r in rows]
    assert len(rows) == NOW_ROW + 1
    assert max(stamps) <= server.clock.now_ms
    assert stamps[-1] == T0 + NOW_ROW * MINUTE
    assert stamps[-1] + MINUTE > server.clock.now_ms  # still forming
    closed = np.array([r[1:] for r in rows[:-1]])
    np.testing.assert_allclose(closed, minute_candles.iloc[:NOW_ROW].to_numpy(), rtol=1e-9)
    forming = rows[-1]
    source = minute_candles.iloc[NOW_ROW]
    assert forming[1] == pytest.approx(source["open"])
    assert forming[4] == float(server.current_price())
    assert forming[3] <= min(forming[1], forming[4]) <= max(forming[1], forming[4]) <= forming[2]
    assert forming[5] == pytest.approx(source["volume"] / 2)

    server.clock.advance(30_000)  # the 05:00 candle closes, the 05:01 one opens
    rows = exchange.fetch_ohlcv(SYMBOL, "1m", limit=2)
    assert [r[0] for r in rows] == [T0 + NOW_ROW * MINUTE, T0 + (NOW_ROW + 1) * MINUTE]
    np.testing.assert_allclose(rows[0][1:], source.to_numpy(), rtol=1e-9)


def test_fetch_ohlcv_with_since_and_limit_pages_without_gaps_or_duplicates(server, exchange):
    since, pages, collected = T0, 0, []
    while True:
        rows = exchange.fetch_ohlcv(SYMBOL, "1m", since=since, limit=100)
        pages += 1
        collected += rows
        if len(rows) < 100:
            break
        since = rows[-1][0] + MINUTE
    stamps = [r[0] for r in collected]
    assert stamps == [T0 + i * MINUTE for i in range(NOW_ROW + 1)]
    assert pages == 4 == server.count("/api/v3/klines")
    sent = [r.params for r in server.requests if r.path == "/api/v3/klines"]
    assert [p["startTime"] for p in sent] == [str(T0 + i * 100 * MINUTE) for i in range(4)]
    assert {p["limit"] for p in sent} == {"100"}


def test_fetch_ohlcv_with_until_sends_end_time_and_stops_there(server, exchange):
    rows = exchange.fetch_ohlcv(SYMBOL, "1m", since=T0, params={"until": T0 + 9 * MINUTE})
    assert [r[0] for r in rows] == [T0 + i * MINUTE for i in range(10)]
    assert server.requests[-1].params["endTime"] == str(T0 + 9 * MINUTE)


def test_fetch_ohlcv_with_multiple_of_base_interval_aggregates_candles(exchange, minute_candles):
    rows = exchange.fetch_ohlcv(SYMBOL, "5m", since=T0, limit=10)
    expected = (
        minute_candles.iloc[:50]
        .resample("5min")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    )
    assert [r[0] for r in rows] == [_ms(t) for t in expected.index]
    np.testing.assert_allclose(np.array([r[1:] for r in rows]), expected.to_numpy(), rtol=1e-9)
    hourly = exchange.fetch_ohlcv(SYMBOL, "1h")
    assert [r[0] for r in hourly] == [T0 + h * 3_600_000 for h in range(6)]
    assert hourly[-1][4] == float(exchange.fetch_ticker(SYMBOL)["last"])


def test_fetch_ohlcv_with_interval_not_multiple_of_base_raises_bad_request(exchange):
    with pytest.raises(ccxt.BadRequest, match="-1120"):
        exchange.fetch_ohlcv(SYMBOL, "1s")


def test_fetch_ohlcv_with_clock_before_first_candle_returns_nothing_and_market_is_closed(
    minute_candles,
):
    with BinanceServer(minute_candles, start_time_ms=T0 - MINUTE) as srv:
        client = _client(srv)
        try:
            assert client.fetch_ohlcv(SYMBOL, "1m") == []
            with pytest.raises(ccxt.MarketClosed):
                client.create_order(SYMBOL, "market", "buy", 0.01)
        finally:
            client.close()


# ------------------------------------------------------------------------- balance, orders


def test_fetch_balance_with_default_balances_reports_free_used_total(exchange):
    balance = exchange.fetch_balance()
    assert {k: balance["USDT"][k] for k in ("free", "used", "total")} == {
        "free": 10000.0,
        "used": 0.0,
        "total": 10000.0,
    }
    assert balance["BTC"]["free"] == 1.0
    assert balance["total"] == {"BTC": 1.0, "USDT": 10000.0}


def test_create_market_order_with_full_response_is_closed_with_fee_and_moves_balances(
    server, exchange
):
    price = server.current_price()
    order = exchange.create_order(SYMBOL, "market", "buy", 0.01)
    assert order["status"] == "closed"
    assert order["filled"] == 0.01 and order["remaining"] == 0.0
    assert order["average"] == float(price)
    cost = Decimal("0.01") * price
    fee = (cost * Decimal("0.001")).quantize(Decimal("1e-8"))
    assert order["fee"] == {"currency": "USDT", "cost": float(fee)}
    assert len(order["trades"]) == 1
    sent = server.requests[-1].params
    assert sent["type"] == "MARKET" and sent["newOrderRespType"] == "FULL"
    assert sent["newClientOrderId"] == order["clientOrderId"]
    assert server.balance("USDT") == (Decimal("10000") - cost - fee, Decimal(0))
    assert server.balance("BTC") == (Decimal("1.01"), Decimal(0))


def test_create_market_order_with_slippage_and_received_fee_asset_fills_worse_in_base(
    minute_candles,
):
    with BinanceServer(
        minute_candles, start_time_ms=START, slippage=0.01, fee_asset="received"
    ) as srv:
        client = _client(srv)
        try:
            current = srv.current_price()
            order = client.create_order(SYMBOL, "market", "buy", 0.01)
        finally:
            client.close()
    assert order["average"] == pytest.approx(float(current) * 1.01, abs=0.01)
    assert order["average"] > float(current)
    assert order["fee"]["currency"] == "BTC"
    assert order["fee"]["cost"] == pytest.approx(0.01 * 0.001)


def test_create_limit_order_below_market_rests_then_fills_at_limit_after_advance(
    server, exchange, minute_candles
):
    limit = _limit_between(server, minute_candles)
    order = exchange.create_order(SYMBOL, "limit", "buy", 0.01, limit)
    assert order["status"] == "open" and order["filled"] == 0.0
    assert [o["id"] for o in exchange.fetch_open_orders(SYMBOL)] == [order["id"]]
    locked = (Decimal("0.01") * Decimal(str(limit)) * Decimal("1.001")).quantize(Decimal("1e-8"))
    assert server.balance("USDT")[1] == locked

    server.clock.advance(60 * MINUTE)
    filled = exchange.fetch_order(order["id"], SYMBOL)
    assert filled["status"] == "closed"
    assert filled["average"] == limit and filled["filled"] == 0.01
    trades = exchange.fetch_order_trades(order["id"], SYMBOL)
    assert len(trades) == 1 and trades[0]["takerOrMaker"] == "maker"
    assert START < trades[0]["timestamp"] <= server.clock.now_ms
    assert exchange.fetch_open_orders(SYMBOL) == []
    assert server.balance("USDT")[1] == Decimal(0)


def test_create_stop_loss_limit_order_triggers_when_price_falls_through_stop(
    server, exchange, minute_candles
):
    stop = _limit_between(server, minute_candles)
    order = exchange.create_order(SYMBOL, "limit", "sell", 0.01, stop - 5, {"stopLossPrice": stop})
    assert server.requests[-1].params["type"] == "STOP_LOSS_LIMIT"
    assert order["status"] == "open"
    assert server.balance("BTC") == (Decimal("0.99"), Decimal("0.01"))
    server.clock.advance(60 * MINUTE)
    filled = exchange.fetch_order(order["id"], SYMBOL)
    assert filled["status"] == "closed"
    assert filled["average"] == stop  # triggered at the stop, marketable against its limit


def test_create_stop_loss_limit_order_with_stop_above_market_raises_immediately_fillable(
    server, exchange
):
    above = float(server.current_price()) + 100
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        exchange.create_order(SYMBOL, "limit", "sell", 0.01, above - 5, {"stopLossPrice": above})


def test_fetch_order_with_client_order_id_returns_the_order_placed_with_it(
    server, exchange, minute_candles
):
    limit = _limit_between(server, minute_candles)
    placed = exchange.create_order(SYMBOL, "limit", "buy", 0.01, limit, {"clientOrderId": "bt-7"})
    assert placed["clientOrderId"] == "bt-7"
    by_cid = exchange.fetch_order(None, SYMBOL, {"clientOrderId": "bt-7"})
    by_id = exchange.fetch_order(placed["id"], SYMBOL)
    assert by_cid["id"] == by_id["id"] == placed["id"]
    assert by_cid["clientOrderId"] == "bt-7" and by_cid["price"] == limit
    lookups = [r.params for r in server.requests if r.path == "/api/v3/order" and r.method == "GET"]
    assert lookups[0]["origClientOrderId"] == "bt-7" and "orderId" not in lookups[0]
    assert lookups[1]["orderId"] == placed["id"]


def test_cancel_order_with_open_limit_releases_funds_and_second_cancel_raises(
    server, exchange, minute_candles
):
    limit = _limit_between(server, minute_candles)
    placed = exchange.create_order(SYMBOL, "limit", "buy", 0.01, limit, {"clientOrderId": "c-1"})
    assert server.balance("USDT")[1] > 0
    canceled = exchange.cancel_order(placed["id"], SYMBOL)
    assert canceled["status"] == "canceled"
    assert server.balance("USDT") == (Decimal("10000"), Decimal(0))
    assert exchange.fetch_order(placed["id"], SYMBOL)["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        exchange.cancel_order(placed["id"], SYMBOL)
    server.clock.advance(60 * MINUTE)  # a canceled order never fills
    assert exchange.fetch_my_trades(SYMBOL) == []


def test_fetch_open_orders_with_symbol_lists_only_open_orders(server, exchange, minute_candles):
    limit = _limit_between(server, minute_candles)
    resting = exchange.create_order(SYMBOL, "limit", "buy", 0.01, limit)
    exchange.create_order(SYMBOL, "market", "buy", 0.01)
    far = exchange.create_order(SYMBOL, "limit", "buy", 0.01, round(limit / 2, 2))
    exchange.cancel_order(far["id"], SYMBOL)
    open_orders = exchange.fetch_open_orders(SYMBOL)
    assert [o["id"] for o in open_orders] == [resting["id"]]
    assert open_orders[0]["status"] == "open"
    assert server.requests[-1].params["symbol"] == "BTCUSDT"
    assert [o["id"] for o in exchange.fetch_open_orders()] == [resting["id"]]
    assert "symbol" not in server.requests[-1].params
    assert len(exchange.fetch_orders(SYMBOL)) == 3


def test_fetch_my_trades_with_since_and_order_filters_returns_matching_fills(server, exchange):
    first = exchange.create_order(SYMBOL, "market", "buy", 0.01)
    server.clock.advance(10 * MINUTE)
    second = exchange.create_order(SYMBOL, "market", "sell", 0.02)
    trades = exchange.fetch_my_trades(SYMBOL)
    assert [t["order"] for t in trades] == [first["id"], second["id"]]
    assert [t["side"] for t in trades] == ["buy", "sell"]
    assert trades[1]["fee"]["currency"] == "USDT"
    later = exchange.fetch_my_trades(SYMBOL, since=START + 1)
    assert [t["order"] for t in later] == [second["id"]]
    assert server.requests[-1].params["startTime"] == str(START + 1)
    assert [t["order"] for t in exchange.fetch_order_trades(first["id"], SYMBOL)] == [first["id"]]
    from_id = exchange.fetch_my_trades(SYMBOL, params={"fromId": trades[1]["id"]})
    assert [t["id"] for t in from_id] == [trades[1]["id"]]


def test_partial_fill_fraction_with_market_order_fills_rest_on_next_advance_in_two_trades(
    server, exchange
):
    server.faults.partial_fill_fraction = 0.4
    order = exchange.create_order(SYMBOL, "market", "buy", 0.01)
    server.faults.partial_fill_fraction = None
    assert order["status"] == "open" and order["filled"] == 0.004
    assert [o["id"] for o in exchange.fetch_open_orders(SYMBOL)] == [order["id"]]
    assert len(exchange.fetch_order_trades(order["id"], SYMBOL)) == 1

    server.clock.advance(MINUTE)
    done = exchange.fetch_order(order["id"], SYMBOL)
    assert done["status"] == "closed" and done["filled"] == 0.01
    trades = exchange.fetch_order_trades(order["id"], SYMBOL)
    assert [t["amount"] for t in trades] == [0.004, 0.006]
    assert trades[0]["timestamp"] < trades[1]["timestamp"]
    assert sum(t["fee"]["cost"] for t in trades) == pytest.approx(0.01 * done["average"] * 0.001)


# ------------------------------------------------------------------------------- rejections


def test_create_order_with_duplicate_open_client_order_id_raises_invalid_order(
    server, exchange, minute_candles
):
    limit = _limit_between(server, minute_candles)
    first = exchange.create_order(SYMBOL, "limit", "buy", 0.01, limit, {"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        exchange.create_order(SYMBOL, "limit", "buy", 0.01, limit, {"clientOrderId": "dup"})
    assert len(server.orders()) == 1
    exchange.cancel_order(first["id"], SYMBOL)
    again = exchange.create_order(SYMBOL, "limit", "buy", 0.01, limit, {"clientOrderId": "dup"})
    assert again["id"] != first["id"]  # only an *open* order blocks its clientOrderId


def test_create_order_with_insufficient_balance_raises_insufficient_funds(server, exchange):
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(SYMBOL, "market", "buy", 1.0)
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(SYMBOL, "market", "sell", 2.0)
    assert server.orders() == []
    assert server.balance("USDT") == (Decimal("10000"), Decimal(0))


def test_create_order_below_min_notional_raises_bad_request_with_filter_name(exchange):
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
        exchange.create_order(SYMBOL, "market", "buy", 0.0001)


@pytest.mark.parametrize(
    ("quantity", "price", "failure"),
    [
        ("0.01", "30000.005", "PRICE_FILTER"),
        ("0.000015", "30000.00", "LOT_SIZE"),
        ("0.00001", "30000.00", "NOTIONAL"),
    ],
)
def test_raw_order_with_filter_violation_raises_filter_failure(
    server, exchange, quantity, price, failure
):
    request = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": quantity,
        "price": price,
    }
    with pytest.raises((ccxt.InvalidOrder, ccxt.BadRequest), match=f"Filter failure: {failure}"):
        exchange.private_post_order(request)
    assert server.requests[-1].status == 400
    assert server.orders() == []


def test_fetch_order_with_unknown_id_raises_order_not_found(exchange):
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        exchange.fetch_order("424242", SYMBOL)


def test_reject_next_order_fault_raises_invalid_order_without_placing(server, exchange):
    server.faults.reject_next_order()
    with pytest.raises(ccxt.InvalidOrder, match="rejected"):
        exchange.create_order(SYMBOL, "market", "buy", 0.01)
    assert server.orders() == []
    assert exchange.create_order(SYMBOL, "market", "buy", 0.01)["status"] == "closed"


# ------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("429", ccxt.DDoSProtection),
        ("418", ccxt.DDoSProtection),
        ("500", ccxt.ExchangeNotAvailable),
        ("502", ccxt.ExchangeNotAvailable),
        ("503", ccxt.ExchangeNotAvailable),
        ("504", ccxt.RequestTimeout),
        ("html", ccxt.ExchangeNotAvailable),
        ("error", ccxt.OperationFailed),
        ("disconnect", ccxt.NetworkError),
    ],
)
def test_queued_http_fault_raises_mapped_ccxt_error_once_then_clears(
    server, exchange, kind, expected
):
    server.faults.queue("/api/v3/klines", kind)
    with pytest.raises(expected):
        exchange.fetch_ohlcv(SYMBOL, "1m", limit=2)
    assert server.faults.pending == []
    assert len(exchange.fetch_ohlcv(SYMBOL, "1m", limit=2)) == 2
    assert [r.fault for r in server.requests if r.path == "/api/v3/klines"] == [kind, None]


def test_rate_limit_fault_sends_binance_code_and_retry_after(server, exchange):
    server.faults.queue("/api/v3/", "429", count=2, retry_after=7)
    for _ in range(2):
        with pytest.raises(ccxt.DDoSProtection, match="-1003"):
            exchange.fetch_time()
    assert exchange.last_response_headers["Retry-After"] == "7"
    assert exchange.fetch_time() == START


def test_not_json_fault_with_ohlcv_gives_ccxt_rows_of_none(server, exchange):
    server.faults.queue("/api/v3/klines", "not_json")
    rows = exchange.fetch_ohlcv(SYMBOL, "1m", limit=2)
    assert rows  # ccxt does not raise on a 200 with garbage: callers must validate rows
    assert all(row == [None] * 6 for row in rows)
    assert server.requests[-1].fault == "not_json"


def test_timeout_fault_on_post_order_raises_request_timeout_while_order_exists(server):
    client = _client(server, timeout=500)
    try:
        client.load_markets()
        server.faults.queue("/api/v3/order", "timeout", method="POST", delay=1.0)
        with pytest.raises(ccxt.RequestTimeout):
            client.create_order(SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": "t-1"})
        assert server.count("/api/v3/order", "POST") == 1
        found = client.fetch_order(None, SYMBOL, {"clientOrderId": "t-1"})
    finally:
        client.close()
    assert found["status"] == "closed" and found["filled"] == 0.01


def test_error_fault_with_process_places_order_but_answers_bad_gateway(server, exchange):
    server.faults.queue("/api/v3/order", "502", method="POST", process=True)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.create_order(SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": "gw-1"})
    assert exchange.fetch_order(None, SYMBOL, {"clientOrderId": "gw-1"})["status"] == "closed"


def test_hide_order_fault_makes_new_order_invisible_for_some_reads(server, exchange):
    server.faults.queue("/api/v3/order", "hide_order", method="POST", reads=2)
    exchange.create_order(SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": "late-1"})
    for _ in range(2):
        with pytest.raises(ccxt.OrderNotFound):
            exchange.fetch_order(None, SYMBOL, {"clientOrderId": "late-1"})
    assert exchange.fetch_order(None, SYMBOL, {"clientOrderId": "late-1"})["filled"] == 0.01


def test_fault_queue_with_unknown_kind_or_unbounded_count_raises_value_error(server):
    with pytest.raises(ValueError, match="kind"):
        server.faults.queue("/api/v3/klines", "explode")
    with pytest.raises(ValueError, match="count"):
        server.faults.queue("/api/v3/klines", "429", count=0)
    assert {
        "429",
        "418",
        "500",
        "502",
        "503",
        "504",
        "html",
        "not_json",
        "timeout",
        "reject_order",
        "hide_order",
    } <= set(FAULT_KINDS)


# ------------------------------------------------------------------------- authentication


def test_signed_request_with_wrong_secret_raises_authentication_error(server):
    client = _client(server, secret="not-the-secret")
    try:
        client.load_markets()
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            client.fetch_balance()
    finally:
        client.close()


def test_signed_request_with_unknown_api_key_raises_authentication_error(server):
    client = _client(server, apiKey="someone-else")
    try:
        client.load_markets()
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            client.fetch_balance()
    finally:
        client.close()
    assert server.requests[-1].status == 401


def test_clock_skew_with_synced_client_raises_invalid_nonce_until_resync(server, exchange):
    server.clock.skew_ms = 5_000  # /time now claims the exchange is 5 s ahead
    exchange.load_time_difference()
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        exchange.fetch_balance()
    server.clock.skew_ms = 0
    exchange.load_time_difference()
    assert exchange.fetch_balance()["USDT"]["free"] == 10000.0


def test_clock_advance_with_strict_timestamps_needs_resync_but_lenient_does_not(minute_candles):
    for strict in (False, True):
        with BinanceServer(minute_candles, start_time_ms=START, strict_timestamps=strict) as srv:
            client = _client(srv)
            try:
                client.load_markets()
                srv.clock.advance(3_600_000)
                if strict:
                    with pytest.raises(ccxt.InvalidNonce, match="recvWindow"):
                        client.fetch_balance()
                    client.load_time_difference()
                assert client.fetch_balance()["USDT"]["free"] == 10000.0
            finally:
                client.close()


def test_request_log_with_signed_call_records_method_path_and_params(server, exchange):
    exchange.fetch_balance()
    record = server.requests[-1]
    assert (record.method, record.path, record.status) == ("GET", "/api/v3/account", 200)
    assert {"timestamp", "recvWindow", "signature"} <= set(record.params)
    assert record.time_ms == START
    server.clear_requests()
    assert server.requests == [] and server.count("/api/v3/account") == 0


@pytest.mark.parametrize("interval", ["1m", "3m", "5m", "15m", "1h", "4h"])
def test_raw_klines_with_random_ranges_match_pandas_resample(minute_candles, interval):
    end_of_data = T0 + len(minute_candles) * MINUTE
    step = pd.Timedelta(interval.replace("m", "min"))
    expected = (
        minute_candles.resample(step, origin="epoch")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna()
    )
    opens = np.array([_ms(t) for t in expected.index])
    rng = np.random.default_rng(len(interval))
    with BinanceServer(minute_candles, start_time_ms=end_of_data) as srv:
        client = _client(srv)
        try:
            for _ in range(8):
                start = (
                    int(rng.integers(T0 - 30 * MINUTE, end_of_data)) if rng.random() < 0.7 else None
                )
                end = (
                    int(rng.integers(T0, end_of_data + 30 * MINUTE)) if rng.random() < 0.5 else None
                )
                if start is not None and end is not None and start > end:
                    start, end = end, start
                limit = int(rng.integers(1, 40))
                params = {"symbol": "BTCUSDT", "interval": interval, "limit": limit}
                params.update(
                    {k: v for k, v in (("startTime", start), ("endTime", end)) if v is not None}
                )
                rows = client.public_get_klines(params)
                keep = np.ones(len(opens), dtype=bool)
                if start is not None:
                    keep &= opens >= start
                if end is not None:
                    keep &= opens <= end
                chosen = (
                    expected[keep].head(limit) if start is not None else expected[keep].tail(limit)
                )
                assert [r[0] for r in rows] == [_ms(t) for t in chosen.index], params
                assert all(r[6] == r[0] + step // pd.Timedelta(milliseconds=1) - 1 for r in rows)
                got = np.array([[float(x) for x in r[1:6]] for r in rows]).reshape(-1, 5)
                np.testing.assert_allclose(got, chosen.to_numpy(), rtol=1e-9)
        finally:
            client.close()
