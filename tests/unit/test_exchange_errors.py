"""The exchange boundary: ccxt exception translation, retries of temporary errors, symbols.

The translation table is checked with real ccxt exception classes (instantiated directly: no
market is faked). Credentials are checked against a real ``AuthenticationError`` answered by
the loopback Binance server through the real ``ccxt.binance`` client.
"""

from __future__ import annotations

from collections.abc import Iterator

import ccxt
import pytest
from ccxt.base.errors import error_hierarchy

from atb_strategies.exceptions import (
    AtbError,
    ConfigurationError,
    ExchangeAuthError,
    ExchangeError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    OrderStateUnknownError,
    RateLimitError,
    TemporaryExchangeError,
)
from atb_strategies.exchange.errors import ccxt_errors, translate
from atb_strategies.exchange.retry import call_with_retries
from atb_strategies.exchange.symbols import to_ccxt_symbol, to_venue_symbol

ACTION = "binance.fetch_ohlcv('BTC/USDT', '1h', since=2024-01-01 00:00:00)"

#: Every ccxt class named in the translation table, plus subclasses that must follow their
#: most specific listed ancestor, with the exact atb class expected.
TABLE = [
    (ccxt.DDoSProtection, RateLimitError),
    (ccxt.RateLimitExceeded, RateLimitError),
    (ccxt.InsufficientFunds, InsufficientFundsError),
    (ccxt.OrderNotFound, OrderNotFoundError),
    (ccxt.InvalidOrder, InvalidOrderError),
    (ccxt.DuplicateOrderId, InvalidOrderError),
    (ccxt.OrderNotFillable, InvalidOrderError),
    (ccxt.BadRequest, InvalidOrderError),
    (ccxt.BadSymbol, InvalidOrderError),
    (ccxt.OperationRejected, InvalidOrderError),
    (ccxt.MarketClosed, InvalidOrderError),
    (ccxt.AuthenticationError, ExchangeAuthError),
    (ccxt.PermissionDenied, ExchangeAuthError),
    (ccxt.AccountNotEnabled, ExchangeAuthError),
    (ccxt.AccountSuspended, ExchangeAuthError),
    (ccxt.InvalidNonce, TemporaryExchangeError),
    (ccxt.RequestTimeout, TemporaryExchangeError),
    (ccxt.NetworkError, TemporaryExchangeError),
    (ccxt.ExchangeNotAvailable, TemporaryExchangeError),
    (ccxt.OnMaintenance, TemporaryExchangeError),
    (ccxt.OperationFailed, TemporaryExchangeError),
    (ccxt.BadResponse, TemporaryExchangeError),
    (ccxt.NullResponse, TemporaryExchangeError),
    (ccxt.ExchangeError, ExchangeError),
    (ccxt.NotSupported, ExchangeError),
    (ccxt.ArgumentsRequired, ExchangeError),
]

TEMPORARY = [
    ccxt.InvalidNonce,
    ccxt.RequestTimeout,
    ccxt.NetworkError,
    ccxt.ExchangeNotAvailable,
    ccxt.OperationFailed,
    ccxt.BadResponse,
]

NOT_TEMPORARY = [
    (ccxt.InsufficientFunds, InsufficientFundsError),
    (ccxt.OrderNotFound, OrderNotFoundError),
    (ccxt.InvalidOrder, InvalidOrderError),
    (ccxt.BadSymbol, InvalidOrderError),
    (ccxt.AuthenticationError, ExchangeAuthError),
    (ccxt.ExchangeError, ExchangeError),
]


def _ccxt_classes(tree: dict[str, dict], parents: tuple[str, ...] = ()) -> Iterator[tuple]:
    for name, children in tree.items():
        yield name, parents
        yield from _ccxt_classes(children, (*parents, name))


def _names(cls: type) -> list[str]:
    return [c.__name__ for c in cls.__mro__]


# ------------------------------------------------------------------------------ translation


@pytest.mark.parametrize(("ccxt_cls", "atb_cls"), TABLE, ids=lambda v: v.__name__)
def test_translate_with_each_ccxt_class_returns_exact_atb_class(ccxt_cls, atb_cls):
    error = ccxt_cls("binance {'code': -1, 'msg': 'boom'}")

    result = translate(error, ACTION)

    assert type(result) is atb_cls, _names(type(result))
    assert isinstance(result, ExchangeError)
    assert isinstance(result, AtbError)


@pytest.mark.parametrize(
    ("ccxt_cls", "parent", "expected"),
    [
        (ccxt.InsufficientFunds, ccxt.ExchangeError, InsufficientFundsError),
        (ccxt.OrderNotFound, ccxt.InvalidOrder, OrderNotFoundError),
        (ccxt.DDoSProtection, ccxt.NetworkError, RateLimitError),
        (ccxt.RateLimitExceeded, ccxt.NetworkError, RateLimitError),
        (ccxt.AccountSuspended, ccxt.ExchangeError, ExchangeAuthError),
    ],
    ids=lambda v: v.__name__,
)
def test_translate_with_subclass_of_broader_ccxt_class_maps_most_specific_first(
    ccxt_cls, parent, expected
):
    # ccxt really nests these, so a table read broadest-first would answer with the
    # parent's class.
    assert issubclass(ccxt_cls, parent)

    child = type(translate(ccxt_cls("x"), ACTION))
    broad = type(translate(parent("x"), ACTION))

    assert child is expected
    assert broad is not expected


def test_translate_with_every_class_in_ccxt_hierarchy_keeps_retry_semantics():
    # Anything ccxt calls ExchangeError (the request was understood and refused) must not
    # be retried; anything under OperationFailed (transient) must be.
    seen = 0
    for name, parents in _ccxt_classes(error_hierarchy):
        cls = getattr(ccxt, name)
        result = translate(cls("detail"), ACTION)
        assert isinstance(result, ExchangeError), name
        if "ExchangeError" in parents or name == "ExchangeError":
            assert not isinstance(result, TemporaryExchangeError), name
        if "OperationFailed" in parents or name == "OperationFailed":
            assert isinstance(result, TemporaryExchangeError), name
        seen += 1
    assert seen >= 40


@pytest.mark.parametrize(
    ("ccxt_cls", "phrase"),
    [(ccxt.PermissionDenied, "permission denied"), (ccxt.AccountSuspended, "account suspended")],
    ids=["PermissionDenied", "AccountSuspended"],
)
def test_translate_with_auth_subclass_names_specific_reason(ccxt_cls, phrase):
    assert phrase in str(translate(ccxt_cls("binance -2015"), "fetch_balance()"))


@pytest.mark.parametrize("ccxt_cls", TEMPORARY, ids=lambda v: v.__name__)
def test_translate_with_write_and_temporary_error_returns_order_state_unknown(ccxt_cls):
    action = "create_order('BTC/USDT', 'market', 'buy', 0.01)"

    result = translate(ccxt_cls("timed out"), action, write=True)

    assert type(result) is OrderStateUnknownError
    assert not isinstance(result, TemporaryExchangeError)  # never retried blindly
    message = str(result)
    assert message.startswith(action)
    assert ccxt_cls.__name__ in message
    assert "may or may not have been placed" in message
    assert "client order id" in message


@pytest.mark.parametrize(("ccxt_cls", "atb_cls"), NOT_TEMPORARY, ids=lambda v: v.__name__)
def test_translate_with_write_and_refusal_keeps_refusal_class(ccxt_cls, atb_cls):
    result = translate(ccxt_cls("refused"), "create_order(...)", write=True)

    assert type(result) is atb_cls


def test_translate_with_read_and_timeout_stays_temporary():
    assert type(translate(ccxt.RequestTimeout("t"), ACTION)) is TemporaryExchangeError


def test_translate_message_with_ccxt_detail_names_action_class_detail_and_advice():
    error = ccxt.DDoSProtection('binance {"code":-1003,"msg":"Too much request weight used"}')

    message = str(translate(error, ACTION))

    assert message.startswith(ACTION + ": rate limited")
    assert "DDoSProtection" in message
    assert "-1003" in message and "Too much request weight used" in message
    assert "Reduce polling" in message


def test_translate_message_with_huge_ccxt_detail_is_truncated():
    error = ccxt.ExchangeNotAvailable("<html>" + "x" * 10_000 + "</html>")

    message = str(translate(error, ACTION))

    assert len(message) < len(ACTION) + 500
    assert "</html>" not in message


def test_ccxt_errors_with_ccxt_exception_raises_translated_and_chains_original():
    original = ccxt.InsufficientFunds("binance Account has insufficient balance")

    with pytest.raises(InsufficientFundsError) as info, ccxt_errors("create_order(...)"):
        raise original

    assert info.value.__cause__ is original
    assert str(info.value).startswith("create_order(...): insufficient funds")


def test_ccxt_errors_with_write_and_network_error_raises_order_state_unknown_chained():
    original = ccxt.NetworkError("connection reset")

    with pytest.raises(OrderStateUnknownError) as info, ccxt_errors("create_order(x)", write=True):
        raise original

    assert info.value.__cause__ is original


def test_ccxt_errors_with_non_ccxt_exception_lets_it_through_unchanged():
    original = KeyError("price")

    with pytest.raises(KeyError) as info, ccxt_errors("fetch_ticker()"):
        raise original

    assert info.value is original


def test_ccxt_errors_without_exception_returns_block_result():
    with ccxt_errors("fetch_time()"):
        value = 41 + 1
    assert value == 42


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InvalidOrderError, ValueError),
        (InsufficientFundsError, ValueError),
        (InsufficientFundsError, InvalidOrderError),
        (OrderNotFoundError, LookupError),
        (ConfigurationError, ValueError),
        (RateLimitError, TemporaryExchangeError),
        (OrderStateUnknownError, ExchangeError),
        (ExchangeAuthError, ExchangeError),
    ],
    ids=lambda v: v.__name__,
)
def test_atb_exchange_error_class_with_documented_parent_subclasses_it(cls, builtin):
    assert issubclass(cls, builtin)
    assert issubclass(cls, AtbError)


def test_translated_errors_with_builtin_except_clauses_are_caught():
    with pytest.raises(ValueError):
        raise translate(ccxt.InvalidOrder("x"), "create_order()")
    with pytest.raises(LookupError):
        raise translate(ccxt.OrderNotFound("x"), "fetch_order('1')")
    assert not issubclass(OrderStateUnknownError, TemporaryExchangeError)
    assert not issubclass(ExchangeAuthError, TemporaryExchangeError)


# ---------------------------------------------------------------------------------- retries


class Flaky:
    """Raises the queued errors one per call, then returns ``value``."""

    def __init__(self, *errors: Exception, value: object = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        self.args = (args, kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return self.value


class Always:
    def __init__(self, make_error) -> None:
        self.make_error = make_error
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        raise self.make_error()


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_call_with_retries_with_persistent_temporary_error_gives_up_after_retries(retries):
    fn = Always(lambda: TemporaryExchangeError("fetch_time(): temporary failure"))
    delays: list[float] = []

    with pytest.raises(TemporaryExchangeError) as info:
        call_with_retries(fn, action="fetch_time()", retries=retries, sleep=delays.append)

    assert fn.calls == retries + 1
    assert len(delays) == retries
    assert f"Gave up after {retries + 1} attempts" in str(info.value)
    assert str(info.value).startswith("fetch_time(): temporary failure")
    assert isinstance(info.value.__cause__, TemporaryExchangeError)


def test_call_with_retries_with_transient_errors_returns_value_and_passes_arguments():
    fn = Flaky(TemporaryExchangeError("a"), TemporaryExchangeError("b"), value=[1, 2])
    delays: list[float] = []

    result = call_with_retries(
        fn, "BTC/USDT", "1h", action="fetch_ohlcv()", retries=4, sleep=delays.append, limit=5
    )

    assert result == [1, 2]
    assert fn.calls == 3
    assert fn.args == (("BTC/USDT", "1h"), {"limit": 5})
    assert len(delays) == 2
    assert delays[0] > 0 and delays[1] > delays[0]  # exponential backoff


def test_call_with_retries_with_rate_limit_waits_longer_than_temporary_error():
    plain_delays: list[float] = []
    limited_delays: list[float] = []

    with pytest.raises(TemporaryExchangeError):
        call_with_retries(
            Always(lambda: TemporaryExchangeError("t")),
            action="a",
            retries=3,
            base_delay=0.5,
            sleep=plain_delays.append,
        )
    with pytest.raises(RateLimitError) as info:
        call_with_retries(
            Always(lambda: RateLimitError("r")),
            action="a",
            retries=3,
            base_delay=0.5,
            sleep=limited_delays.append,
        )

    assert type(info.value) is RateLimitError  # the class survives the give-up message
    assert len(plain_delays) == len(limited_delays) == 3
    assert all(lim > plain for lim, plain in zip(limited_delays, plain_delays, strict=True))
    assert all(d > 0 for d in plain_delays)


def test_call_with_retries_with_max_delay_caps_plain_backoff():
    delays: list[float] = []

    with pytest.raises(TemporaryExchangeError):
        call_with_retries(
            Always(lambda: TemporaryExchangeError("t")),
            action="a",
            retries=6,
            base_delay=1.0,
            max_delay=3.0,
            sleep=delays.append,
        )

    assert max(delays) <= 3.0
    assert delays[-1] == 3.0


@pytest.mark.parametrize(
    "make_error",
    [
        lambda: InvalidOrderError("refused"),
        lambda: InsufficientFundsError("no money"),
        lambda: ExchangeAuthError("bad key"),
        lambda: OrderStateUnknownError("maybe placed"),
        lambda: ExchangeError("other"),
        lambda: ValueError("not an exchange error"),
    ],
    ids=["invalid", "funds", "auth", "unknown", "generic", "valueerror"],
)
def test_call_with_retries_with_non_temporary_error_raises_at_once(make_error):
    fn = Always(make_error)
    delays: list[float] = []
    expected = type(make_error())

    with pytest.raises(expected) as info:
        call_with_retries(fn, action="create_order()", retries=4, sleep=delays.append)

    assert fn.calls == 1
    assert delays == []
    assert "Gave up" not in str(info.value)


# ---------------------------------------------------------------------------------- symbols


@pytest.mark.parametrize(
    ("venue", "unified"),
    [
        ("BTCUSDT", "BTC/USDT"),
        ("ETHBTC", "ETH/BTC"),
        ("ethusdt", "ETH/USDT"),
        ("BNBFDUSD", "BNB/FDUSD"),
        ("BTCEUR", "BTC/EUR"),
        ("SOLUSDC", "SOL/USDC"),
    ],
)
def test_to_ccxt_symbol_with_known_quote_splits_base_and_quote(venue, unified):
    assert to_ccxt_symbol(venue) == unified
    assert to_venue_symbol(unified) == venue.upper()


def test_to_ccxt_symbol_with_unified_symbol_returns_it_unchanged():
    assert to_ccxt_symbol("BTC/USDT") == "BTC/USDT"


def test_to_ccxt_symbol_with_market_list_disambiguates_split():
    # Without markets the longest known quote wins: TUSD.
    assert to_ccxt_symbol("BTCTUSD") == "BTC/TUSD"
    assert to_ccxt_symbol("BTCTUSD", ["ETH/USDT", "BTCT/USD"]) == "BTCT/USD"
    assert to_ccxt_symbol("BTCDAI", ["BTC/USDT", "BTC/DAI"]) == "BTC/DAI"


def test_to_ccxt_symbol_with_unknown_quote_raises_configuration_error():
    with pytest.raises(ConfigurationError, match=r"'BTCDAI'.*BASE/QUOTE"):
        to_ccxt_symbol("BTCDAI")
    with pytest.raises(ConfigurationError):
        to_ccxt_symbol("USDT")  # only a quote, no base
    with pytest.raises(ValueError):  # ConfigurationError is a ValueError
        to_ccxt_symbol("XYZ", ["BTC/USDT"])


def test_to_ccxt_symbol_with_spot_and_perpetual_markets_prefers_exact_spot():
    assert to_ccxt_symbol("BTCUSDT", ["BTC/USDT:USDT", "BTC/USDT"]) == "BTC/USDT"


def test_to_ccxt_symbol_with_only_perpetual_market_returns_it():
    assert to_ccxt_symbol("BTCUSDT", ["ETH/USDT", "BTC/USDT:USDT"]) == "BTC/USDT:USDT"


@pytest.mark.parametrize(
    ("unified", "venue"),
    [("BTC/USDT", "BTCUSDT"), ("BTC/USDT:USDT", "BTCUSDT"), ("eth/btc", "ETHBTC")],
)
def test_to_venue_symbol_with_unified_symbol_drops_slash_and_settle(unified, venue):
    assert to_venue_symbol(unified) == venue
