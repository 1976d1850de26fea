"""``download_ohlcv`` and ``atb data download`` / ``atb train model`` driven through the real
``ccxt.binance`` client against the loopback Binance server (nothing in ccxt is patched).

The server serves seeded hourly candles from 2024-01-01 00:00 UTC; its clock starts half-way
through candle ``NOW_ROW`` (so candles ``0 .. NOW_ROW - 1`` are closed and ``NOW_ROW`` is
forming). Faults are armed with ``server.faults.queue``; a ``timeout`` fault with ``delay=0``
answers normally and is used as a pass-through placeholder to aim a later fault at page 3.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import ccxt
import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from atb_strategies.data.download import cache_path, download_ohlcv
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import (
    AtbError,
    CandleDataError,
    ExchangeError,
    InvalidOrderError,
    TemporaryExchangeError,
)
from atb_strategies.exchange.client import create_exchange
from atb_strategies.testing.binance_server import BinanceServer
from tests.conftest import loopback_exchange

HOUR = 3_600_000
T0 = int(pd.Timestamp("2024-01-01", tz="UTC").timestamp() * 1000)
N_CANDLES = 300
NOW_ROW = 250
NOW = T0 + NOW_ROW * HOUR + 30 * 60_000  # 2024-01-11 10:30, half-way through row 250
KLINES = "/api/v3/klines"


def _served(frame: pd.DataFrame) -> pd.DataFrame:
    """The candles as the server answers them (numbers as 8-decimal strings)."""
    return frame.map(lambda v: float(f"{v:.8f}"))


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return generate_ohlcv(N_CANDLES, timeframe="1h", seed=11, start="2024-01-01")


@pytest.fixture
def server(candles: pd.DataFrame) -> Iterator[BinanceServer]:
    with loopback_exchange(candles, timeframe="1h", start_time_ms=NOW) as srv:
        yield srv


def _exchange(server: BinanceServer) -> ccxt.Exchange:
    return create_exchange("binance", server.ccxt_config(rate_limit_ms=1), environ={})


@pytest.fixture
def exchange(server: BinanceServer) -> Iterator[ccxt.Exchange]:
    client = _exchange(server)
    yield client
    client.close()


def _klines(server: BinanceServer) -> list[dict[str, str]]:
    return [r.params for r in server.requests if r.path == KLINES]


def _start_times(server: BinanceServer) -> list[int]:
    return [int(p["startTime"]) for p in _klines(server)]


def _download(exchange: ccxt.Exchange, data_dir: Path, start="2024-01-01", end=None, **kw):
    kw.setdefault("progress", False)
    return download_ohlcv(exchange, "BTCUSDT", "1h", start, end, data_dir=data_dir, **kw)


def _cached(data_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(cache_path(data_dir, "binance", "BTCUSDT", "1h"))


def _assert_candles(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    got = frame.astype("float64")
    got.index = got.index.as_unit("ns")
    want = _served(expected)
    want.index = want.index.as_unit("ns")
    pd.testing.assert_frame_equal(got, want, check_freq=False, check_exact=True)


# ------------------------------------------------------------------------ closed candles


def test_download_ohlcv_with_clock_mid_candle_returns_every_closed_candle_exactly(
    server, exchange, candles, tmp_path
):
    frame = _download(exchange, tmp_path)

    _assert_candles(frame, candles.iloc[:NOW_ROW])
    assert frame.index[-1] == pd.Timestamp("2024-01-11 09:00")
    assert frame.attrs["timeframe"] == "1h"
    assert "binance BTC/USDT" in frame.attrs["source"]
    _assert_candles(_cached(tmp_path), candles.iloc[:NOW_ROW])
    assert _klines(server) == [
        {"interval": "1h", "limit": "1000", "symbol": "BTCUSDT", "startTime": str(T0)}
    ]
    # The server did answer the forming candle; the download dropped it.
    rows = exchange.fetch_ohlcv("BTC/USDT", "1h", since=T0 + (NOW_ROW - 1) * HOUR)
    assert [r[0] for r in rows] == [T0 + (NOW_ROW - 1) * HOUR, T0 + NOW_ROW * HOUR]


def test_download_ohlcv_with_clock_on_candle_boundary_includes_candle_just_closed(
    server, exchange, candles, tmp_path
):
    server.clock.set_time(T0 + 251 * HOUR)  # candle 250 closes now, candle 251 opens now

    frame = _download(exchange, tmp_path)

    _assert_candles(frame, candles.iloc[:251])


def test_download_ohlcv_with_empty_cache_returns_float64_columns(exchange, tmp_path):
    frame = _download(exchange, tmp_path)

    assert frame.dtypes.tolist() == ["float64"] * 5


def test_download_ohlcv_with_small_page_limit_pages_to_same_candles(
    server, exchange, candles, tmp_path
):
    frame = _download(exchange, tmp_path, page_limit=100)

    _assert_candles(frame, candles.iloc[:NOW_ROW])
    assert _start_times(server) == [T0, T0 + 100 * HOUR, T0 + 200 * HOUR]
    assert {p["limit"] for p in _klines(server)} == {"100"}


# --------------------------------------------------------------------------------- re-runs


def test_download_ohlcv_with_rerun_after_clock_advance_fetches_only_new_candles(
    server, exchange, candles, tmp_path
):
    _download(exchange, tmp_path)
    assert len(_cached(tmp_path)) == NOW_ROW
    server.clear_requests()

    _download(exchange, tmp_path)  # nothing new yet
    assert _klines(server) == []

    server.clock.advance(5 * HOUR)
    frame = _download(exchange, tmp_path)

    assert _start_times(server) == [T0 + NOW_ROW * HOUR]
    _assert_candles(frame, candles.iloc[: NOW_ROW + 5])
    _assert_candles(_cached(tmp_path), candles.iloc[: NOW_ROW + 5])


def test_download_ohlcv_with_earlier_start_than_cache_fetches_only_missing_head(
    server, exchange, candles, tmp_path
):
    _download(exchange, tmp_path, start="2024-01-05")
    assert _cached(tmp_path).index[0] == pd.Timestamp("2024-01-05")
    server.clear_requests()

    frame = _download(exchange, tmp_path, start="2024-01-01")

    assert _start_times(server) == [T0]
    _assert_candles(frame, candles.iloc[:NOW_ROW])
    assert len(_cached(tmp_path)) == NOW_ROW


@pytest.mark.parametrize(
    ("kind", "options", "retries", "raised"),
    [
        ("error", {"status": 400, "code": -1121, "msg": "Invalid symbol."}, 4, InvalidOrderError),
        ("disconnect", {}, 0, TemporaryExchangeError),
    ],
    ids=["non-retryable-code", "disconnect-no-retries"],
)
def test_download_ohlcv_with_page_three_failing_resumes_from_cache_on_rerun(
    server, candles, tmp_path, kind, options, retries, raised
):
    server.faults.queue(KLINES, "timeout", count=2, delay=0.0)  # pages 1 and 2 pass
    server.faults.queue(KLINES, kind, **options)  # page 3 fails
    first = _exchange(server)
    try:
        with pytest.raises(raised) as info:
            _download(first, tmp_path, page_limit=100, retries=retries, retry_delay=0.001)
    finally:
        first.close()

    assert "binance.fetch_ohlcv('BTC/USDT', '1h', since=2024-01-09 08:00:00)" in str(info.value)
    assert [r.fault for r in server.requests if r.path == KLINES] == ["timeout", "timeout", kind]
    _assert_candles(_cached(tmp_path), candles.iloc[:200])
    server.clear_requests()

    second = _exchange(server)
    try:
        frame = _download(second, tmp_path, page_limit=100, retries=retries)
    finally:
        second.close()

    assert _start_times(server) == [T0 + 200 * HOUR]
    _assert_candles(frame, candles.iloc[:NOW_ROW])


# ---------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["429", "418", "503", "504", "disconnect"])
def test_download_ohlcv_with_transient_faults_retries_and_succeeds(
    server, exchange, candles, tmp_path, kind
):
    server.faults.queue(KLINES, kind, count=2)

    frame = _download(exchange, tmp_path, page_limit=100, retry_delay=0.001)

    _assert_candles(frame, candles.iloc[:NOW_ROW])
    assert [f[0] for f in server.faults.fired] == [kind, kind]
    assert server.count(KLINES) == 3 + 2
    assert _start_times(server)[:3] == [T0, T0, T0]  # the failed page was asked again


def test_download_ohlcv_with_persistent_503_gives_up_after_retries_without_cache(
    server, exchange, tmp_path
):
    server.faults.queue(KLINES, "503", count=50)

    with pytest.raises(TemporaryExchangeError, match="Gave up after 3 attempts") as info:
        _download(exchange, tmp_path, retries=2, retry_delay=0.001)

    assert "fetch_ohlcv('BTC/USDT', '1h'" in str(info.value)
    assert isinstance(info.value.__cause__.__cause__, ccxt.ExchangeNotAvailable)
    assert server.count(KLINES) == 3
    assert not cache_path(tmp_path, "binance", "BTCUSDT", "1h").exists()


@pytest.mark.parametrize(
    ("page", "since"), [(1, "2024-01-01 00:00:00"), (2, "2024-01-05 04:00:00")]
)
def test_download_ohlcv_with_not_json_answer_raises_candle_data_error_naming_request(
    server, exchange, tmp_path, page, since
):
    if page > 1:
        server.faults.queue(KLINES, "timeout", count=page - 1, delay=0.0)  # pass-through
    server.faults.queue(KLINES, "not_json")

    with pytest.raises(CandleDataError) as info:
        _download(exchange, tmp_path, page_limit=100)

    assert f"binance.fetch_ohlcv('BTC/USDT', '1h', since={since})" in str(info.value)
    assert server.count(KLINES) == page  # garbage is not retried


def test_download_ohlcv_with_not_json_answer_never_caches_garbage(
    server, exchange, candles, tmp_path
):
    server.faults.queue(KLINES, "timeout", count=1, delay=0.0)  # page 1 passes
    server.faults.queue(KLINES, "not_json")  # page 2 is garbage
    with contextlib.suppress(CandleDataError):  # raising is the fix; either way no garbage
        _download(exchange, tmp_path, page_limit=100)

    assert server.faults.fired[-1][0] == "not_json"
    _assert_candles(_cached(tmp_path), candles.iloc[:100])


# ------------------------------------------------------------------------- start and end


def test_download_ohlcv_with_start_before_first_candle_returns_from_first_candle(
    server, exchange, candles, tmp_path
):
    frame = _download(exchange, tmp_path, start="2023-12-20")

    _assert_candles(frame, candles.iloc[:NOW_ROW])
    assert _start_times(server)[0] == int(pd.Timestamp("2023-12-20", tz="UTC").value // 10**6)


def test_download_ohlcv_with_start_mid_candle_starts_at_next_candle(exchange, candles, tmp_path):
    frame = _download(exchange, tmp_path, start="2024-01-01 00:30")

    _assert_candles(frame, candles.iloc[1:NOW_ROW])


def test_download_ohlcv_with_end_date_includes_that_whole_day(exchange, candles, tmp_path):
    frame = _download(exchange, tmp_path, end="2024-01-05")

    _assert_candles(frame, candles.iloc[: 5 * 24])
    assert frame.index[-1] == pd.Timestamp("2024-01-05 23:00")
    assert _cached(tmp_path).index[-1] == pd.Timestamp("2024-01-05 23:00")


def test_download_ohlcv_with_end_time_includes_candle_opening_then(exchange, candles, tmp_path):
    frame = _download(exchange, tmp_path, start="2024-01-02", end="2024-01-02 05:00")

    _assert_candles(frame, candles.iloc[24:30])


def test_download_ohlcv_with_utc_aware_start_returns_same_candles(exchange, candles, tmp_path):
    frame = _download(exchange, tmp_path, start="2024-01-01T00:00Z")

    _assert_candles(frame, candles.iloc[:NOW_ROW])


# -------------------------------------------------------------------- wrong timeframe/symbol


@pytest.mark.parametrize("timeframe", ["7m", "2d"])
def test_download_ohlcv_with_timeframe_exchange_lacks_raises_before_fetching(
    server, exchange, tmp_path, timeframe
):
    with pytest.raises(AtbError) as info:
        download_ohlcv(exchange, "BTCUSDT", timeframe, "2024-01-01", data_dir=tmp_path)

    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert f"binance has no {timeframe!r} candles" in message
    assert "'1h'" in message  # lists what is offered
    assert server.count(KLINES) == 0


def test_download_ohlcv_with_malformed_timeframe_raises_configuration_error(exchange, tmp_path):
    with pytest.raises(AtbError, match="'7x' is not understood"):
        download_ohlcv(exchange, "BTCUSDT", "7x", "2024-01-01", data_dir=tmp_path)


def test_download_ohlcv_with_interval_server_refuses_raises_naming_request(
    server, exchange, tmp_path
):
    # ccxt lists 1m for binance, but this market only has hourly candles: Binance -1120.
    with pytest.raises(ExchangeError) as info:
        download_ohlcv(exchange, "BTCUSDT", "1m", "2024-01-11", data_dir=tmp_path, progress=False)

    message = str(info.value)
    assert "fetch_ohlcv('BTC/USDT', '1m'" in message
    assert "Invalid interval" in message
    assert server.count(KLINES) == 1  # a refusal is not retried


def test_download_ohlcv_with_unknown_symbol_raises_without_fetching(server, exchange, tmp_path):
    with pytest.raises(AtbError, match="ETH/USDT"):
        download_ohlcv(exchange, "ETHUSDT", "1h", "2024-01-01", data_dir=tmp_path)

    assert server.count(KLINES) == 0


# ------------------------------------------------------------------------------------- CLI

CLI_CANDLES = 2500
CLI_NOW_ROW = 2400


@pytest.fixture(scope="module")
def cli_candles() -> pd.DataFrame:
    return generate_ohlcv(CLI_CANDLES, timeframe="1h", seed=12, start="2024-01-01")


@pytest.fixture
def cli_env(cli_candles, tmp_path, monkeypatch) -> Iterator[tuple[BinanceServer, Path]]:
    """A loopback server reached through ATB_EXCHANGE_CONFIG; no other ATB_* settings."""
    for var in list(os.environ):
        if var.startswith("ATB_"):
            monkeypatch.delenv(var)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    start = T0 + CLI_NOW_ROW * HOUR + 30 * 60_000
    with BinanceServer(cli_candles, timeframe="1h", start_time_ms=start) as srv:
        config = tmp_path / "exchange.json"
        config.write_text(json.dumps({"binance": srv.ccxt_config(rate_limit_ms=1)}))
        monkeypatch.setenv("ATB_EXCHANGE_CONFIG", str(config))
        yield srv, tmp_path
        assert srv.internal_errors == []


def _train_args(data_dir: Path, registry: Path) -> list[str]:
    return [
        "train",
        "model",
        "BTCUSDT",
        "--timeframe",
        "1h",
        "--data-dir",
        str(data_dir),
        "--registry",
        str(registry),
        "--sequence-length",
        "24",
        "--epochs",
        "2",
        "--no-backtest",
        "--force-promote",
    ]


@pytest.mark.slow
def test_cli_data_download_with_exchange_config_caches_candles_then_train_uses_cache(
    cli_env, cli_candles
):
    server, root = cli_env
    data_dir, registry = root / "data", root / "registry"

    result = CliRunner().invoke(
        cli,
        [
            "data",
            "download",
            "BTCUSDT",
            "--timeframe",
            "1h",
            "--start-date",
            "2024-01-01",
            "--data-dir",
            str(data_dir),
            "--no-progress",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "2400 bars from 2024-01-01 00:00:00 to 2024-04-09 23:00:00" in result.stdout
    assert str(cache_path(data_dir, "binance", "BTCUSDT", "1h")) in result.stdout
    _assert_candles(_cached(data_dir), cli_candles.iloc[:CLI_NOW_ROW])
    assert server.count(KLINES) == 3  # 1000 per page
    server.clear_requests()

    trained = CliRunner().invoke(cli, _train_args(data_dir, registry))

    assert trained.exit_code == 0, trained.output
    assert "registered BTCUSDT/basic@" in trained.stdout
    assert server.requests == []  # trained from the cache, offline
    metadata = json.loads((registry / "BTCUSDT" / "basic" / "latest" / "metadata.json").read_text())
    data = metadata["training"]["data"]
    assert data["rows"] == CLI_NOW_ROW
    assert data["last_bar"] == "2024-04-09 23:00:00"
    assert str(cache_path(data_dir, "binance", "BTCUSDT", "1h")) in data["source"]


def test_cli_train_model_without_cache_fails_telling_to_run_data_download(cli_env):
    server, root = cli_env

    result = CliRunner().invoke(cli, _train_args(root / "empty", root / "registry"))

    assert result.exit_code == 1
    assert "error: ConfigurationError" in result.stderr
    assert "atb data download BTCUSDT --timeframe 1h --start-date" in result.stderr
    assert str(cache_path(root / "empty", "binance", "BTCUSDT", "1h")) in result.stderr
    assert server.requests == []
    assert not (root / "registry").exists() or not any((root / "registry").rglob("*.onnx"))


def test_cli_data_download_with_unknown_timeframe_exits_with_error_message(cli_env):
    server, root = cli_env

    result = CliRunner().invoke(
        cli,
        [
            "data",
            "download",
            "BTCUSDT",
            "--timeframe",
            "7m",
            "--start-date",
            "2024-01-01",
            "--data-dir",
            str(root / "data"),
            "--no-progress",
        ],
    )

    assert result.exit_code == 1
    assert "binance has no '7m' candles" in result.stderr
    assert server.count(KLINES) == 0
