"""Credentials with stray whitespace, and tracebacks that would show them.

A key read from a secrets file often ends with a newline: ``requests`` then refuses the header
and puts the key in its message, and ``atb -v`` used to print that traceback (and the signed URL,
``signature=...``) unmasked. Keys are stripped now; a key that is still no valid header value
is refused before any request; every traceback the CLI or a thread prints is masked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError, TemporaryExchangeError
from atb_strategies.exchange.client import create_exchange
from atb_strategies.exchange.errors import ccxt_errors
from atb_strategies.exchange.redaction import install_excepthooks
from atb_strategies.testing.binance import BinanceServer
from tests.conftest import loopback_exchange

REPO = Path(__file__).resolve().parents[2]
ATB = Path(sys.executable).with_name("atb")
HOUR = 3_600_000
WRONG_SECRET = "wrong-S3CRET-must-never-be-printed-91c2"
SIGNED = {"/api/v3/account", "/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades"}


@pytest.fixture(scope="module")
def server() -> Iterator[BinanceServer]:
    hourly = generate_ohlcv(420, seed=3)
    start = int(hourly.index[330].value // 1_000_000) + HOUR // 2
    with loopback_exchange(hourly, start_time_ms=start, clock_speed=0.0) as srv:
        yield srv


def signatures(server: BinanceServer) -> set[str]:
    return {r.params["signature"] for r in server.requests if "signature" in r.params}


# ---------------------------------------------------------------- Python: create_exchange


@pytest.mark.parametrize("source", ["config", "environ"])
def test_create_exchange_with_key_ending_in_newline_strips_it_and_signs_requests(server, source):
    config = server.ccxt_config(rate_limit_ms=1)
    key, secret = config.pop("apiKey"), config.pop("secret")
    environ: dict[str, str] = {}
    if source == "config":
        config.update(apiKey=key + "\n", secret=f"  {secret}\n")
    else:
        environ.update(ATB_BINANCE_API_KEY=key + "\r\n", ATB_BINANCE_API_SECRET=secret + "\n")
    exchange = create_exchange("binance", config, environ=environ)
    try:
        assert (exchange.apiKey, exchange.secret) == (key, secret)
        exchange.load_markets()
        balance = exchange.fetch_balance()  # signed, and accepted by the exchange
    finally:
        exchange.close()
    assert "USDT" in balance["total"]


@pytest.mark.parametrize(
    ("source", "where"),
    [("config", "the config argument"), ("environ", "ATB_BINANCE_API_KEY")],
)
def test_create_exchange_with_line_break_inside_key_refuses_it_without_a_request(
    server, source, where
):
    config = server.ccxt_config(rate_limit_ms=1)
    bad = "atb-loop\nback-api-key"
    environ: dict[str, str] = {}
    if source == "config":
        config["apiKey"] = bad
    else:
        del config["apiKey"]
        environ["ATB_BINANCE_API_KEY"] = bad
    before = len(server.requests)
    with pytest.raises(ConfigurationError) as info:
        create_exchange("binance", config, environ=environ)
    assert len(server.requests) == before
    message = str(info.value)
    assert where in message and "apiKey" in message and "HTTP header" in message
    assert "atb-loop" not in message and "back-api-key" not in message


def test_exchange_error_from_a_signed_request_masks_the_signature(server):
    exchange = create_exchange("binance", server.ccxt_config(rate_limit_ms=1))
    try:
        exchange.load_markets()
        server.faults.queue("/api/v3/account", "500")
        with pytest.raises(TemporaryExchangeError) as info, ccxt_errors("binance.fetch_balance()"):
            exchange.fetch_balance()
    finally:
        exchange.close()
    sent = signatures(server)
    assert sent, "no signed request reached the exchange"
    # ccxt's message carries the signed URL; the atb error keeps the URL, not the signature
    assert any(s in str(info.value.__cause__) for s in sent)
    assert "/api/v3/account" in str(info.value) and "signature=***" in str(info.value)
    assert not any(s in str(info.value) for s in sent)


def test_ccxt_verbose_output_goes_through_logging_masked(server, capsys, caplog):
    from atb_strategies.exchange.redaction import RedactSecrets

    config = server.ccxt_config(rate_limit_ms=1)
    config["verbose"] = True  # ccxt would print() every request with its headers
    exchange = create_exchange("binance", config)
    caplog.handler.addFilter(RedactSecrets())
    try:
        with caplog.at_level("DEBUG", logger="atb_strategies.exchange.client"):
            exchange.load_markets()
            exchange.fetch_balance()
    finally:
        exchange.close()
    out = capsys.readouterr()
    assert config["apiKey"] not in out.out + out.err
    logged = caplog.text
    assert "fetch Request:" in logged and "X-MBX-APIKEY" in logged
    assert config["apiKey"] not in logged and not any(s in logged for s in signatures(server))


# ---------------------------------------------------------------- the console script


def run_atb(server: BinanceServer, tmp_path: Path, key: str, secret: str) -> tuple[int, str]:
    config = tmp_path / "exchange.json"
    config.write_text(json.dumps({"binance": server.ccxt_config(rate_limit_ms=1, with_keys=False)}))
    log = tmp_path / "live.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "ATB_EXCHANGE_CONFIG": str(config),
        "ATB_BINANCE_API_KEY": key,
        "ATB_BINANCE_API_SECRET": secret,
        "MPLBACKEND": "Agg",
    }
    args = ["-v", "live", "ml_basic", "--live", "--i-understand-the-risks", "--max-bars", "1"]
    args += ["--backfill-bars", "300", "--poll-grace", "0", "--clock-check", "0.05"]
    args += ["--journal", str(tmp_path / "j.sqlite"), "--log-file", str(log)]
    args += ["--registry", str(REPO / "models")]
    done = subprocess.run(
        [str(ATB), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    text = done.stdout + done.stderr + (log.read_text() if log.exists() else "")
    return done.returncode, text


@pytest.mark.slow
def test_atb_verbose_live_with_refused_key_prints_a_masked_traceback(server, tmp_path):
    key = server.ccxt_config()["apiKey"]
    code, text = run_atb(server, tmp_path, key + "\n", WRONG_SECRET + "\n")
    assert code == 1, text[-3000:]
    assert "Traceback" in text and "ExchangeAuthError" in text  # -v shows the traceback
    sent = signatures(server)
    assert sent, "no signed request reached the exchange"
    assert "signature=***" in text  # ccxt's signed URL is in the chained errors, masked
    assert not any(s in text for s in sent)
    assert key not in text and WRONG_SECRET not in text


@pytest.mark.slow
def test_atb_verbose_live_with_line_break_inside_key_exits_1_before_any_request(server, tmp_path):
    bad = "atb-loop\nback-api-key"
    before = len(server.requests)
    code, text = run_atb(server, tmp_path, bad, WRONG_SECRET)
    assert code == 1, text[-3000:]
    assert len(server.requests) == before  # refused before connecting
    assert "ConfigurationError" in text and "ATB_BINANCE_API_KEY" in text
    assert "atb-loop" not in text and "back-api-key" not in text and WRONG_SECRET not in text


# ---------------------------------------------------------------- excepthooks


def test_install_excepthooks_masks_a_thread_traceback(capsys, monkeypatch):
    from atb_strategies.exchange.redaction import register_secret

    secret = "thread-S3CRET-4b1d9e"
    register_secret(secret)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    install_excepthooks()

    def fail() -> None:
        raise RuntimeError(f"GET /api/v3/account?signature=abc123 failed for key {secret}")

    thread = threading.Thread(target=fail, name="poller")
    thread.start()
    thread.join()
    err = capsys.readouterr().err
    assert "Exception in thread poller" in err and "RuntimeError" in err
    assert secret not in err and "abc123" not in err and "signature=***" in err
