"""Translate ccxt exceptions into this project's, in one place, most specific first.

=========================================================  ==============================
ccxt exception                                             atb exception
=========================================================  ==============================
``DDoSProtection``, ``RateLimitExceeded``                  ``RateLimitError`` (retried)
``InsufficientFunds``                                      ``InsufficientFundsError``
``OrderNotFound``                                          ``OrderNotFoundError``
``InvalidOrder``, ``BadRequest``, ``BadSymbol``,           ``InvalidOrderError``
``OperationRejected``
``AuthenticationError``, ``PermissionDenied``,             ``ExchangeAuthError`` (fatal)
``AccountSuspended``
``InvalidNonce``                                           ``TemporaryExchangeError`` (the
                                                           caller resyncs the clock)
``RequestTimeout`` / ``NetworkError`` / ``OperationFailed``  ``TemporaryExchangeError``; on a
                                                           write: ``OrderStateUnknownError``
other ``ExchangeError``                                    ``ExchangeError``
=========================================================  ==============================

Some exchanges answer HTTP 429 with ``DDoSProtection`` rather than ``RateLimitExceeded``
(Binance does); both are rate limits here. Credentials never appear in messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ccxt

from atb_strategies.exceptions import (
    ExchangeAuthError,
    ExchangeError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    OrderStateUnknownError,
    RateLimitError,
    TemporaryExchangeError,
)
from atb_strategies.exchange.redaction import redact

_TABLE: tuple[tuple[type[Exception], type[ExchangeError], str], ...] = (
    (ccxt.DDoSProtection, RateLimitError, "rate limited"),
    (ccxt.RateLimitExceeded, RateLimitError, "rate limited"),
    (ccxt.InsufficientFunds, InsufficientFundsError, "insufficient funds"),
    (ccxt.OrderNotFound, OrderNotFoundError, "order not found"),
    (ccxt.InvalidOrder, InvalidOrderError, "order refused"),
    (ccxt.BadSymbol, InvalidOrderError, "unknown symbol"),
    (ccxt.BadRequest, InvalidOrderError, "request refused"),
    (ccxt.OperationRejected, InvalidOrderError, "operation rejected"),
    (ccxt.PermissionDenied, ExchangeAuthError, "permission denied"),
    (ccxt.AccountSuspended, ExchangeAuthError, "account suspended"),
    (ccxt.AuthenticationError, ExchangeAuthError, "authentication refused"),
    (ccxt.InvalidNonce, TemporaryExchangeError, "clock out of sync"),
    (ccxt.OperationFailed, TemporaryExchangeError, "temporary failure"),
    (ccxt.ExchangeError, ExchangeError, "exchange error"),
)

_ADVICE: dict[type[ExchangeError], str] = {
    RateLimitError: "Reduce polling or wait before retrying; the limit is shared by every "
    "process using this API key.",
    ExchangeAuthError: "Check the API key, secret and their permissions.",
    InsufficientFundsError: "Check the account balance.",
    TemporaryExchangeError: "It may pass on retry.",
    InvalidOrderError: "Check the symbol, the order size and price against the market's "
    "precision and limits.",
    ExchangeError: "See the exchange's message above.",
}


def translate(error: Exception, action: str, *, write: bool = False) -> ExchangeError:
    """The atb exception for ccxt ``error`` raised by ``action`` (e.g. "fetch_ohlcv(...)")."""
    atb_cls, what = next(
        ((atb, text) for ccxt_cls, atb, text in _TABLE if isinstance(error, ccxt_cls)),
        (TemporaryExchangeError, "network failure"),
    )
    if write and atb_cls is TemporaryExchangeError:
        return OrderStateUnknownError(
            f"{action} failed with {type(error).__name__}: the order may or may not have been "
            "placed. Reconcile by client order id before sending anything again."
        )
    detail = redact(str(error))[:300]  # ccxt puts signed URLs (signature=...) in messages
    advice = _ADVICE.get(atb_cls, "")
    if atb_cls is InvalidOrderError and not _is_order_call(action):
        # a read refused as a bad request (Binance -1121 "Invalid symbol" on klines): the
        # advice about order size and price does not fit the call that failed
        advice = "Check the symbol (as the exchange lists it) and the request's parameters."
    return atb_cls(f"{action}: {what} ({type(error).__name__}: {detail}). {advice}".strip())


def _is_order_call(action: str) -> bool:
    name = action.split("(")[0].rsplit(".", 1)[-1]
    return name in {"create_order", "cancel_order", "edit_order"} or (
        "order" in name and (name.startswith(("create", "cancel", "edit")))
    )


@contextlib.contextmanager
def ccxt_errors(action: str, *, write: bool = False) -> Iterator[None]:
    """Translate any ccxt exception raised inside the block; chain the original."""
    try:
        yield
    except ccxt.BaseError as e:
        raise translate(e, action, write=write) from e
