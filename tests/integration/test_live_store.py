"""CcxtStore: not a singleton, serialised calls, events for strategies, clock resync."""

from __future__ import annotations

import pytest

from atb_strategies.exceptions import RateLimitError, TemporaryExchangeError
from atb_strategies.live.store import CcxtStore
from atb_strategies.testing.binance_server import BinanceServer
from tests.conftest import loopback_exchange


@pytest.fixture
def server():
    with loopback_exchange() as srv:
        yield srv


def _store(server: BinanceServer, **kwargs) -> CcxtStore:
    return CcxtStore(
        exchange="binance", config=server.ccxt_config(rate_limit_ms=1), retry_delay=0.01, **kwargs
    )


def test_store_with_two_configs_gives_two_independent_stores(server) -> None:
    a, b = _store(server), _store(server, retries=1)
    assert a is not b and a.exchange is not b.exchange and b.p.retries == 1
    assert CcxtStore.shared("binance", "x", config=server.ccxt_config()) is CcxtStore.shared(
        "binance", "x"
    )
    assert CcxtStore.shared("binance", "x") is not CcxtStore.shared(
        "binance", "y", config=server.ccxt_config()
    )


def test_store_with_rate_limits_notifies_each_retry_and_succeeds(server) -> None:
    store = _store(server)
    store.load_markets()
    server.faults.queue("/api/v3/time", "429", count=2)
    assert store.now_ms() > 0
    events = store.get_notifications()
    assert [e[0] for e in events] == ["RATE_LIMITED", "RATE_LIMITED"]
    assert events[0][1][0] == "binance.fetch_time()" and events[0][1][2] == 1


def test_store_with_exhausted_retries_notifies_unavailable_and_raises(server) -> None:
    store = _store(server, retries=2)
    store.load_markets()
    server.faults.queue("/api/v3/time", "503", count=3)
    with pytest.raises(TemporaryExchangeError, match="Gave up after 3 attempts"):
        store.now_ms()
    kinds = [e[0] for e in store.get_notifications()]
    assert kinds == ["RETRYING", "RETRYING", "EXCHANGE_UNAVAILABLE"]
    assert server.count("/api/v3/time") == 1 + 3  # load_markets learnt the clock once


def test_store_write_is_never_retried(server) -> None:
    store = _store(server)
    store.load_markets()
    server.faults.queue("/api/v3/order", "429", count=1, method="POST")
    with pytest.raises(RateLimitError):
        store.call(
            "create_order",
            "BTC/USDT",
            "market",
            "buy",
            0.001,
            None,
            {"clientOrderId": "atbtest1"},
            idempotent=False,
        )
    assert server.count("/api/v3/order", "POST") == 1
    assert server.orders() == []
