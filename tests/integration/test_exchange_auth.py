"""Credentials against the loopback exchange: a refused key or secret becomes
``ExchangeAuthError`` whose message never holds the credential."""

from __future__ import annotations

from collections.abc import Iterator

import ccxt
import pytest

from atb_strategies.exceptions import ExchangeAuthError
from atb_strategies.exchange.client import create_exchange
from atb_strategies.exchange.errors import ccxt_errors
from atb_strategies.testing.binance import BinanceServer, synthetic_candles
from tests.conftest import loopback_exchange

# ---------------------------------------------------------------- credentials (loopback)

SECRET = "S3CRET-must-never-be-printed-7f3a9c01d2"
API_KEY = "KEY-must-never-be-printed-55e1b0a4"


@pytest.fixture(scope="module")
def server() -> Iterator[BinanceServer]:
    with loopback_exchange(synthetic_candles(120, timeframe="1m", seed=5)) as srv:
        yield srv


@pytest.mark.parametrize("source", ["config", "environ"])
def test_ccxt_errors_with_wrong_secret_raises_auth_error_without_secret(server, source):
    config = server.ccxt_config(rate_limit_ms=1)
    environ: dict[str, str] = {}
    if source == "config":
        config["secret"] = SECRET
    else:
        del config["secret"]
        environ["ATB_BINANCE_API_SECRET"] = SECRET
    exchange = create_exchange("binance", config, environ=environ)
    try:
        assert exchange.secret == SECRET
        exchange.load_markets()
        with pytest.raises(ExchangeAuthError) as info, ccxt_errors("binance.fetch_balance()"):
            exchange.fetch_balance()
    finally:
        exchange.close()

    assert isinstance(info.value.__cause__, ccxt.AuthenticationError)
    message = str(info.value)
    assert message.startswith("binance.fetch_balance(): authentication refused")
    assert "-1022" in message  # the exchange's reason is kept
    assert SECRET not in message and SECRET not in repr(info.value)
    assert server.api_key not in message


def test_ccxt_errors_with_unknown_api_key_raises_auth_error_without_key(server):
    config = server.ccxt_config(rate_limit_ms=1)
    config["apiKey"] = API_KEY
    config["secret"] = SECRET
    exchange = create_exchange("binance", config)
    try:
        exchange.load_markets()
        with pytest.raises(ExchangeAuthError) as info, ccxt_errors("binance.fetch_balance()"):
            exchange.fetch_balance()
    finally:
        exchange.close()

    message = str(info.value)
    assert "-2015" in message
    assert API_KEY not in message and SECRET not in message
