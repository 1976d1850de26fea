"""``atb live`` and ``examples/paper_trade.py`` against the loopback exchange.

The console script runs in a subprocess (``PYTHONPATH`` points at this working tree) with
``ATB_EXCHANGE_CONFIG`` aiming the real ``ccxt.binance`` at a ``BinanceServer`` running in the
test process. The server's clock runs in lockstep with the CLI's feed (``--clock-check 0.05``
makes it ask the time while it waits): each wait closes exactly the next candle, so every
candle after the backfill is a live bar, at any machine speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.live.journal import Journal
from atb_strategies.live.runner import build_live_cerebro, run_until_stopped
from atb_strategies.live.store import CcxtStore
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.testing.binance_server import BinanceServer
from tests.conftest import loopback_exchange

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "models"
ATB = Path(sys.executable).with_name("atb")
HOUR = 3_600_000
NOW_ROW = 330
FEED_OPTIONS = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}
EXAMPLE_ARGS = ("--bars", "3", "--clock", "lockstep")
SUBPROCESS_TIMEOUT = 600  # a guard against a hang only: on a busy machine a run takes long
STATUS_LINE = (
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} BTCUSDT close=\S+ pred=\S+ ret=\S+ conf=\S+ "
    r"signal=\w+ action=\w+ pos=\S+ value=\S+ pnl=\S+ model=BTCUSDT/basic@\S+$"
)

pytestmark = pytest.mark.slow  # trains, runs the examples or runs live sessions


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(420, seed=3)


@pytest.fixture
def server(hourly: pd.DataFrame) -> Iterator[BinanceServer]:
    start = int(hourly.index[NOW_ROW].value // 1_000_000) + HOUR // 2
    balances = {"USDT": 10_000, "BTC": 0}
    with loopback_exchange(hourly, start_time_ms=start, lockstep=True, balances=balances) as srv:
        yield srv


def exchange_config(server: BinanceServer, path: Path, **options: Any) -> Path:
    path.write_text(json.dumps({"binance": server.ccxt_config(rate_limit_ms=1, **options)}))
    return path


def run_atb(*args: str, cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "ATB_EXCHANGE_CONFIG": str(config),
        "MPLBACKEND": "Agg",
    }
    return subprocess.run(
        [
            str(ATB),
            "live",
            "ml_basic",
            "--symbol",
            "BTCUSDT",
            "--poll-grace",
            "0",
            "--clock-check",
            "0.05",
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


def status_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if " BTCUSDT close=" in line]


# ------------------------------------------------------------------ end to end


def test_atb_live_with_paper_prints_a_status_line_per_live_bar_and_writes_the_log(
    server, hourly, tmp_path
):
    config = exchange_config(server, tmp_path / "exchange.json", with_keys=False)
    done = run_atb(
        "--paper",
        "--max-bars",
        "5",
        "--backfill-bars",
        "300",
        "--registry",
        str(REGISTRY),
        "--log-file",
        str(tmp_path / "live.log"),
        cwd=tmp_path,
        config=config,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("PAPER: ml_basic BTCUSDT 1h on binance")
    assert f"log: {tmp_path / 'live.log'}" in out
    assert "journal:" not in out
    lines = status_lines(out)
    assert len(lines) == 5
    for line in lines:
        assert pd.Series([line]).str.match(STATUS_LINE).all(), line
    # every candle closed after the backfill, stamped with its close time, in order: in
    # lockstep none is skipped (a candle caught up behind a newer one would print no line)
    stamps = [pd.Timestamp(line[:16]) for line in lines]
    assert stamps == list(hourly.index[NOW_ROW + 1 : NOW_ROW + 6])
    assert out.splitlines()[-1].startswith("stopped (5 live bar(s) done (max bars)): value")
    log = (tmp_path / "live.log").read_text()
    assert "backfilled 300 closed bar(s)" in log
    signed = {"/api/v3/account", "/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades"}
    assert not signed & {r.path for r in server.requests}  # paper: public data only


def test_atb_live_with_real_orders_prints_the_journal_and_places_orders(server, tmp_path):
    config = exchange_config(server, tmp_path / "exchange.json")
    journal = tmp_path / "state" / "journal.sqlite"
    done = run_atb(
        "--live",
        "--i-understand-the-risks",
        "--max-bars",
        "3",
        "--backfill-bars",
        "300",
        "--long-threshold",
        "-1",  # enter on the first live bar, whatever the model says
        "--journal",
        str(journal),
        "--log-file",
        str(tmp_path / "live.log"),
        "--registry",
        str(REGISTRY),
        cwd=tmp_path,
        config=config,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("LIVE (real orders): ml_basic BTCUSDT 1h on binance")
    assert f"journal: {journal}" in done.stdout
    assert len(status_lines(done.stdout)) == 3
    orders = server.orders()
    assert orders, "no order reached the exchange"
    entry = orders[0]
    assert (entry["side"], entry["type"], entry["status"]) == ("BUY", "MARKET", "FILLED")
    assert entry["clientOrderId"].startswith("atb")
    assert server.count("/api/v3/order", "POST") == len(orders)
    book = Journal(journal)
    try:
        rows = book.orders()
        fills = book.fills()
    finally:
        book.close()
    assert rows[0]["client_id"] == entry["clientOrderId"] and rows[0]["state"] == "closed"
    assert sorted(f["trade_id"] for f in fills) == sorted(str(t["id"]) for t in server.trades())


def test_atb_verbose_live_with_keys_never_writes_them_to_stderr_or_the_log(server, tmp_path):
    config = exchange_config(server, tmp_path / "exchange.json")
    key, secret = server.ccxt_config()["apiKey"], server.ccxt_config()["secret"]
    log = tmp_path / "live.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "ATB_EXCHANGE_CONFIG": str(config),
        "ATB_BINANCE_API_KEY": key,
        "ATB_BINANCE_API_SECRET": secret,
        "MPLBACKEND": "Agg",
    }
    args = ["live", "ml_basic", "--live", "--i-understand-the-risks", "--max-bars", "2"]
    args += ["--backfill-bars", "300", "--long-threshold", "-1", "--poll-grace", "0"]
    args += ["--clock-check", "0.05", "--journal", str(tmp_path / "j.sqlite")]
    args += ["--log-file", str(log), "--registry", str(REGISTRY)]
    done = subprocess.run(
        [str(ATB), "-v", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.orders(), "signed requests were made"
    text = done.stderr + done.stdout + log.read_text()
    assert "DEBUG" in text and "X-MBX-APIKEY" in text  # ccxt logged its signed requests
    assert key not in text and secret not in text
    assert "***" in text


# ------------------------------------------------------------------ argument errors


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["live", "ml_basic", *args])


@pytest.mark.parametrize(
    "flags",
    [[], ["--paper", "--live"], ["--paper", "--live", "--i-understand-the-risks"]],
    ids=["neither", "both", "both-with-risks"],
)
def test_atb_live_with_neither_or_both_modes_exits_1(server, tmp_path, monkeypatch, flags):
    monkeypatch.setenv("ATB_EXCHANGE_CONFIG", str(exchange_config(server, tmp_path / "x.json")))
    monkeypatch.chdir(tmp_path)
    result = invoke(*flags)
    assert result.exit_code == 1
    assert "error: ConfigurationError: Choose exactly one of --paper or --live." in result.stderr
    assert server.requests == []  # refused before connecting
    assert not (tmp_path / "out").exists()


def test_atb_live_with_live_and_no_risk_flag_exits_1_with_a_clear_message(
    server, tmp_path, monkeypatch
):
    monkeypatch.setenv("ATB_EXCHANGE_CONFIG", str(exchange_config(server, tmp_path / "x.json")))
    monkeypatch.chdir(tmp_path)
    result = invoke("--live")
    assert result.exit_code == 1
    assert "Real orders need --live --i-understand-the-risks. Try --paper first." in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert server.requests == []
    assert server.orders() == []


def test_atb_live_with_unknown_strategy_exits_1_listing_the_choices():
    result = CliRunner().invoke(cli, ["live", "ml_magic", "--paper"])
    assert result.exit_code == 1
    assert "ml_basic" in result.stderr and "ml_sentiment" in result.stderr


# ------------------------------------------------------------------ Ctrl-C


def test_run_until_stopped_with_ctrl_c_stops_after_the_current_bar_and_restores_handler(
    server,
):
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while live

    store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
    cerebro = build_live_cerebro(
        MlBasic,
        store=store,
        symbol="BTCUSDT",
        timeframe="1h",
        paper=True,
        cash=10_000.0,
        journal=None,
        backfill_bars=300,
        max_bars=None,  # only Ctrl-C ends this session
        kill_switch=None,
        on_stop="cancel",
        echo=echo,
        feed_options=FEED_OPTIONS,
        registry=str(REGISTRY),
    )
    before = signal.getsignal(signal.SIGINT)
    strategy = run_until_stopped(cerebro)[0]
    assert signal.getsignal(signal.SIGINT) is before
    assert len(lines) == 2 and len(strategy.decisions) == 2
    assert strategy.datas[0]._laststatus == bt.feed.DataBase.DISCONNECTED  # feed stopped


# ------------------------------------------------------------------ example


def test_example_paper_trade_with_loopback_exchange_runs_offline_and_prints_value(tmp_path):
    done = subprocess.run(
        [str(sys.executable), str(REPO / "examples" / "paper_trade.py"), *EXAMPLE_ARGS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "ATB_MODEL_REGISTRY_PATH": str(REGISTRY),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loopback exchange at http://127.0.0.1:" in done.stdout
    assert "paper value " in done.stdout
    assert "after 3 live bars" in done.stdout
    lines = [line for line in done.stdout.splitlines() if " BTCUSDT close=" in line]
    assert len(lines) == 3


# ------------------------------------------------------------------ kill switch and exit codes


def test_atb_live_kill_switch_exits_3_and_a_restart_refuses_until_cleared(hourly, tmp_path):
    # Live bar k is candle NOW_ROW + k - 1 and its orders fill at the next candle's open. Prices
    # fall 30 % at the open of candle NOW_ROW + 2 (a big entry follows on live bar 3), then
    # again at candle NOW_ROW + 4, which that position is held through: the drawdown trips.
    crashed = hourly.copy()
    crashed.iloc[NOW_ROW + 2 :, :4] *= 0.7
    crashed.iloc[NOW_ROW + 4 :, :4] *= 0.7
    start = int(crashed.index[NOW_ROW].value // 1_000_000) + HOUR // 2
    journal = tmp_path / "journal.sqlite"
    args = [
        "--live",
        "--i-understand-the-risks",
        "--max-bars",
        "6",
        "--backfill-bars",
        "300",
        "--long-threshold",
        "-1",
        "--journal",
        str(journal),
        "--max-daily-loss",
        "off",
        "--max-drawdown",
        "0.003",
        "--registry",
        str(REGISTRY),
        "--log-file",
        str(tmp_path / "live.log"),
    ]
    balances = {"USDT": 10_000, "BTC": 0}
    with loopback_exchange(crashed, start_time_ms=start, lockstep=True, balances=balances) as srv:
        config = exchange_config(srv, tmp_path / "exchange.json")
        done = run_atb(*args, cwd=tmp_path, config=config)
        posts = srv.count("/api/v3/order", "POST")
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("stopped (kill switch: drawdown ") and "beyond 0.3 %" in last
    assert len(status_lines(done.stdout)) == 5  # on the bar of the second fall, every run
    assert posts >= 2  # the entry and the flattening sell

    with loopback_exchange(hourly, start_time_ms=start, lockstep=True, balances=balances) as srv:
        config = exchange_config(srv, tmp_path / "exchange.json")
        again = run_atb(*args, cwd=tmp_path, config=config)
        assert srv.requests == []  # refused before connecting
    assert again.returncode == 3
    assert again.stderr.strip().count("\n") == 0
    assert "kill switch tripped at" in again.stderr and "--clear-kill-switch" in again.stderr


def test_atb_live_with_max_bars_exits_0_saying_why_it_stopped(server, tmp_path):
    config = exchange_config(server, tmp_path / "exchange.json", with_keys=False)
    done = run_atb(
        "--paper",
        "--max-bars",
        "2",
        "--backfill-bars",
        "300",
        "--registry",
        str(REGISTRY),
        "--max-drawdown",
        "none",
        cwd=tmp_path,
        config=config,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("stopped (2 live bar(s) done")
