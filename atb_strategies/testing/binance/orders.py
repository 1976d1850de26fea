"""Orders: the order record, new-order parameter parsing and Binance's order JSON shapes."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from atb_strategies.testing.binance.protocol import (
    ZERO,
    BinanceApiError,
    decimal_param,
    fmt,
    mandatory,
)

if TYPE_CHECKING:
    from atb_strategies.testing.binance.clock import MarketClock

__all__ = [
    "LIMIT_TYPES",
    "ORDER_TYPES",
    "STOP_TYPES",
    "Order",
    "cancel_json",
    "order_json",
    "parse_new_order",
]

_CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})

#: Order types the server accepts, as listed in ``exchangeInfo``.
ORDER_TYPES = (
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
)
#: Order types that wait for ``stopPrice`` before working.
STOP_TYPES = frozenset({"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"})
#: Order types with a limit ``price``.
LIMIT_TYPES = frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})


@dataclass
class Order:
    """One order and its matching state (Binance's fields plus reservation and fault state)."""

    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    orig_qty: Decimal
    price: Decimal
    stop_price: Decimal
    orig_quote_qty: Decimal
    time: int
    update_time: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cumm_quote: Decimal = ZERO
    working: bool = True
    working_time: int = -1
    reserve_asset: str = ""
    reserve_price: Decimal = ZERO
    reserved: Decimal = ZERO
    partial_fraction: float | None = None
    deferred_price: Decimal | None = None
    deferred_after: int = 0
    deferred_maker: bool = False
    hidden_reads: int = 0
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        """Quantity still to fill."""
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        """True while ``NEW`` or ``PARTIALLY_FILLED``."""
        return self.status in _OPEN_STATUSES

    @property
    def trigger_below(self) -> bool:
        """True when the stop triggers as the price falls to ``stop_price``."""
        stop_loss = self.type.startswith("STOP_LOSS")
        return stop_loss == (self.side == "SELL")


def parse_new_order(params: Mapping[str, str], clock: MarketClock) -> Order:
    """A new :class:`Order` (id 0) from ``POST /api/v3/order`` parameters, or a Binance error.

    Parameters
    ----------
    params : mapping of str to str
        Request parameters; the symbol is checked by the caller.
    clock : MarketClock
        The market clock; its time once the parameters pass is the order's ``time``.

    Returns
    -------
    Order
        Checked for types, time in force and mandatory fields, not for filters or balances.
    """
    side = params.get("side")
    if not side:
        raise mandatory("side")
    if side not in ("BUY", "SELL"):
        raise BinanceApiError(-1117, "Invalid side.")
    order_type = params.get("type")
    if not order_type:
        raise mandatory("type")
    if order_type not in ORDER_TYPES:
        raise BinanceApiError(-1116, "Invalid orderType.")
    client_id = params.get("newClientOrderId") or "atb" + secrets.token_hex(11)
    if not _CLIENT_ID_RE.match(client_id):
        raise BinanceApiError(
            -1100,
            "Illegal characters found in parameter "
            "'newClientOrderId'; legal range is "
            "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
        )
    quantity = decimal_param(params, "quantity")
    quote_qty = decimal_param(params, "quoteOrderQty")
    price = decimal_param(params, "price")
    stop = decimal_param(params, "stopPrice")
    tif = params.get("timeInForce") or ""
    if order_type == "MARKET":
        if quantity is None and quote_qty is None:
            raise BinanceApiError(
                -1102,
                "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
            )
        tif = "GTC"
    elif quantity is None:
        raise mandatory("quantity")
    if order_type in LIMIT_TYPES and price is None:
        raise mandatory("price")
    if order_type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
        if not tif:
            raise mandatory("timeInForce")
        if tif not in ("GTC", "IOC", "FOK"):
            raise BinanceApiError(-1115, "Invalid timeInForce.")
    elif order_type != "MARKET":
        tif = "GTC"
    if order_type in STOP_TYPES and stop is None:
        raise mandatory("stopPrice")
    now = clock.now_ms
    return Order(
        order_id=0,
        client_order_id=client_id,
        side=side,
        type=order_type,
        time_in_force=tif,
        orig_qty=quantity or ZERO,
        price=price or ZERO,
        stop_price=stop or ZERO,
        orig_quote_qty=quote_qty or ZERO,
        time=now,
        update_time=now,
        working=order_type not in STOP_TYPES,
        working_time=-1 if order_type in STOP_TYPES else now,
    )


def order_json(order: Order, symbol: str) -> dict[str, Any]:
    """Binance's ``GET /api/v3/order`` JSON of ``order``."""
    return {
        "symbol": symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": fmt(order.price),
        "origQty": fmt(order.orig_qty),
        "executedQty": fmt(order.executed_qty),
        "cummulativeQuoteQty": fmt(order.cumm_quote),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
        "stopPrice": fmt(order.stop_price),
        "icebergQty": "0.00000000",
        "time": order.time,
        "updateTime": order.update_time,
        "isWorking": order.working,
        "workingTime": order.working_time,
        "origQuoteOrderQty": fmt(order.orig_quote_qty),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def cancel_json(order: Order, symbol: str, cancel_id: str | None) -> dict[str, Any]:
    """Binance's ``DELETE /api/v3/order`` JSON; ``cancel_id`` is the cancel's client id."""
    body = order_json(order, symbol)
    for key in ("time", "updateTime", "isWorking", "workingTime", "icebergQty"):
        body.pop(key)
    body["origClientOrderId"] = order.client_order_id
    body["clientOrderId"] = cancel_id or "atbcancel" + secrets.token_hex(8)
    body["transactTime"] = order.update_time
    return body
