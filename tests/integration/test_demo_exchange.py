"""The offline demo exchange: the loopback Binance with several symbols, and ``atb live ...
--exchange loopback`` (issue 20 item 6).

The server tests drive the real ``ccxt.binance`` against a 3-symbol ``BinanceServer``; the CLI
tests run the console script in a subprocess with the demo exchange in lockstep (one candle
per wait of the feed), so they never depend on wall-clock pacing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import ccxt
import pandas as pd
import pytest

from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.live.journal import Journal
from atb_strategies.testing.demo import demo_exchange, parse_demo_data
from tests.conftest import loopback_exchange

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "models"
ATB = Path(sys.executable).with_name("atb")
HOUR = 3_600_000
SUBPROCESS_TIMEOUT = 600  # a guard against a hang only


def _frames() -> dict[str, pd.DataFrame]:
    return {
        "BTCUSDT": generate_ohlcv(60, seed=1, start_price=30_000.0),
        "ETHUSDT": generate_ohlcv(60, seed=2, start_price=2_000.0),
        "SOLUSDT": generate_ohlcv(60, seed=3, start_price=100.0),
    }


def _three_symbols(**kwargs):
    frames = _frames()
    start = int(frames["BTCUSDT"].index[40].value // 1_000_000)
    return frames, loopback_exchange(
        frames["BTCUSDT"],
        markets={"ETHUSDT": frames["ETHUSDT"], "SOLUSDT": frames["SOLUSDT"]},
        start_time_ms=start,
        balances={"USDT": 10_000, "BTC": 0, "ETH": 0, "SOL": 0},
        **kwargs,
    )


# ------------------------------------------------------------------ the server, several symbols


def test_server_with_three_symbols_serves_each_its_own_candles_and_rules():
    frames, context = _three_symbols()
    with context as server:
        client = ccxt.binance(server.ccxt_config(with_keys=False))
        try:
            client.load_markets()
            assert {"BTC/USDT", "ETH/USDT", "SOL/USDT"} <= set(client.symbols)
            for symbol, frame in frames.items():
                ccxt_symbol = f"{symbol[:-4]}/USDT"
                rows = client.fetch_ohlcv(ccxt_symbol, "1h", limit=4)  # the last one forms
                closes = [row[4] for row in rows[:3]]
                assert closes == pytest.approx(frame["close"].iloc[37:40].tolist(), rel=1e-9)
                assert client.market(ccxt_symbol)["base"] == symbol[:-4]
        finally:
            client.close()
        assert server.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def test_server_with_three_symbols_keeps_one_account_and_one_order_id_sequence():
    _, context = _three_symbols()
    with context as server:
        client = ccxt.binance(server.ccxt_config())
        try:
            placed = [
                client.create_order(symbol, "market", "buy", amount)
                for symbol, amount in (("BTC/USDT", 0.01), ("ETH/USDT", 0.5), ("SOL/USDT", 5))
            ]
            resting = client.create_order("ETH/USDT", "limit", "buy", 10, 1.0)
            balance = client.fetch_balance()
            open_orders = client.fetch_open_orders()
        finally:
            client.close()
        ids = [int(o["id"]) for o in [*placed, resting]]
        assert len(set(ids)) == 4 and ids == sorted(ids)
        # one account: each coin bought lands in the same balance, paid from the same USDT
        for asset, amount in (("BTC", "0.01"), ("ETH", "0.5"), ("SOL", "5")):
            assert server.balance(asset)[0] == Decimal(amount)
            assert balance[asset]["free"] == pytest.approx(float(amount))
        cost = sum(Decimal(t["quoteQty"]) * Decimal("1.001") for t in server.trades())
        free, locked = server.balance("USDT")
        assert locked == Decimal("10.01")  # the resting ETH bid: 10 at 1.0 plus the fee
        assert free + locked == pytest.approx(Decimal(10_000) - cost, abs=Decimal("0.0001"))
        # per symbol on the server, all symbols without one
        assert [o["symbol"] for o in server.orders()] == [
            "BTCUSDT",
            "ETHUSDT",
            "SOLUSDT",
            "ETHUSDT",
        ]
        assert [o["symbol"] for o in server.orders("ETHUSDT")] == ["ETHUSDT", "ETHUSDT"]
        assert [o["symbol"] for o in open_orders] == ["ETH/USDT"]
        assert {t["symbol"] for t in server.trades()} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def test_server_with_three_symbols_refuses_an_unserved_symbol():
    _, context = _three_symbols()
    with context as server:
        client = ccxt.binance(server.ccxt_config(with_keys=False))
        try:
            with pytest.raises(ccxt.BadSymbol):
                client.public_get_klines({"symbol": "XRPUSDT", "interval": "1h"})
        finally:
            client.close()


def test_lockstep_with_three_symbols_steps_only_once_every_symbol_is_up_to_date():
    _, context = _three_symbols(lockstep=True)
    with context as server:
        client = ccxt.binance(server.ccxt_config(with_keys=False))
        try:
            start = server.clock.now_ms
            for symbol in ("BTC/USDT", "ETH/USDT"):  # SOL's feed has not started yet
                client.fetch_ohlcv(symbol, "1h", limit=5)
            for _ in range(3):
                client.fetch_time()
            assert server.clock.now_ms == start
            client.fetch_ohlcv("SOL/USDT", "1h", limit=5)
            client.fetch_time()  # the client waits
            client.fetch_time()  # the next candle closes
            assert server.clock.now_ms == start + HOUR
            for symbol in ("BTC/USDT", "SOL/USDT"):  # ETH's feed has not caught up
                client.fetch_ohlcv(symbol, "1h", limit=5)
            for _ in range(3):
                client.fetch_time()
            assert server.clock.now_ms == start + HOUR
            client.fetch_ohlcv("ETH/USDT", "1h", limit=5)
            client.fetch_time()
            client.fetch_time()
            assert server.clock.now_ms == start + 2 * HOUR
        finally:
            client.close()


def test_server_with_markets_in_another_quote_or_timeframe_is_refused():
    frames = _frames()
    with pytest.raises(ValueError, match="quoted in 'USDT'"):
        loopback_exchange(frames["BTCUSDT"], markets={"ETHBTC": frames["ETHUSDT"]}).__enter__()
    daily = generate_ohlcv(10, timeframe="1d", seed=1)
    with pytest.raises(ValueError, match="another timeframe"):
        loopback_exchange(frames["BTCUSDT"], markets={"ETHUSDT": daily}).__enter__()


# ------------------------------------------------------------------ demo_exchange


def test_demo_exchange_with_a_file_serves_its_candles_and_synthetic_ones_for_the_others(
    tmp_path,
):
    frame = generate_ohlcv(80, seed=9, start_price=50.0)
    path = tmp_path / "sol.csv"
    frame.rename_axis("timestamp").to_csv(path)
    server = demo_exchange(
        ["SOLUSDT", "BTCUSDT"], "1h", backfill_bars=50, clock="lockstep", data={"SOLUSDT": path}
    )
    try:
        assert server.clock.now() == frame.index[50].tz_localize("UTC")
        assert server.lockstep.enabled and server.symbols == ["SOLUSDT", "BTCUSDT"]
        client = ccxt.binance(server.ccxt_config(with_keys=False))
        try:
            sol = client.fetch_ohlcv("SOL/USDT", "1h", limit=51)[:50]  # the last one forms
            btc = client.fetch_ohlcv("BTC/USDT", "1h", limit=51)[:50]
        finally:
            client.close()
        assert [row[4] for row in sol] == pytest.approx(frame["close"].iloc[:50].tolist())
        assert [row[0] for row in btc] == [row[0] for row in sol]  # aligned on the same bars
        assert server.balance("USDT")[0] == Decimal(10_000)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("symbols", "data", "message"),
    [
        (["BTCUSDT", "ETHBTC"], {}, "quoted in BTC, USDT"),
        (["BTCUSDT"], {"ETHUSDT": Path("x.csv")}, "--demo-data names ETHUSDT"),
        (["BTC"], {}, "quote currency of 'BTC'"),
    ],
)
def test_demo_exchange_with_bad_input_says_what_to_do(symbols, data, message):
    with pytest.raises(ConfigurationError, match=message):
        demo_exchange(symbols, "1h", backfill_bars=10, data=data)


def test_parse_demo_data_without_a_file_is_refused():
    assert parse_demo_data(["btcusdt=a.csv"]) == {"BTCUSDT": Path("a.csv")}
    with pytest.raises(ConfigurationError, match="SYMBOL=FILE"):
        parse_demo_data(["BTCUSDT"])


# ------------------------------------------------------------------ atb live --exchange loopback


def _run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "MPLBACKEND": "Agg",
        **env,
    }
    return subprocess.run(
        [str(ATB), "live", "ml_basic", *args, "--registry", str(REGISTRY)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


@pytest.mark.slow
def test_atb_live_with_exchange_loopback_on_paper_trades_the_given_candles(tmp_path):
    frame = generate_ohlcv(400, seed=4)
    path = tmp_path / "btc.csv"
    frame.rename_axis("timestamp").to_csv(path)
    done = _run(
        "--exchange",
        "loopback",
        "--demo-data",
        f"BTCUSDT={path}",
        "--demo-clock",
        "lockstep",
        "--paper",
        "--max-bars",
        "3",
        "--backfill-bars",
        "300",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "demo exchange (loopback) at http://127.0.0.1:" in done.stdout
    assert "PAPER: ml_basic BTCUSDT 1h on loopback" in done.stdout
    lines = [line for line in done.stdout.splitlines() if " BTCUSDT close=" in line]
    assert len(lines) == 3
    for line in lines:  # each live bar is the file's candle that closed at that time
        closed = pd.Timestamp(line[:16]) - pd.Timedelta(hours=1)
        assert f"close={frame.loc[closed, 'close']:.2f}" in line


@pytest.mark.slow
def test_atb_live_with_exchange_loopback_and_live_orders_needs_no_keys(tmp_path):
    journal = tmp_path / "journal.sqlite"
    done = _run(
        "--exchange",
        "loopback",
        "--demo-clock",
        "lockstep",
        "--live",
        "--i-understand-the-risks",
        "--long-threshold",
        "-1",  # enter on the first live bar
        "--max-bars",
        "2",
        "--backfill-bars",
        "300",
        "--journal",
        str(journal),
        cwd=tmp_path,
        ATB_BINANCE_API_KEY="not-a-real-key",  # never read for the demo exchange
        ATB_BINANCE_API_SECRET="not-a-real-secret",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LIVE (real orders): ml_basic BTCUSDT 1h on loopback" in done.stdout
    book = Journal(journal)
    try:
        orders = book.orders()
    finally:
        book.close()
    assert orders and orders[0]["state"] == "closed"
    assert "not-a-real" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--demo-data", "BTCUSDT=x.csv"), "--demo-data is for --exchange loopback"),
        (("--exchange", "loopback", "--sandbox"), "drop --sandbox"),
        (("--exchange", "loopback", "--demo-data", "BTCUSDT"), "SYMBOL=FILE"),
    ],
)
def test_atb_live_with_bad_demo_options_prints_one_error_line(tmp_path, args, message):
    done = _run(*args, "--paper", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: ") and message in done.stderr
