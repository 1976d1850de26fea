"""The REST endpoints: Binance spot v3 public market data and signed account/order routes.

Public (no key): ``GET /api/v3/ping``, ``/time``, ``/exchangeInfo``, ``/klines``,
``/ticker/price``, ``/ticker/24hr``. Signed: ``GET /api/v3/account``, ``POST /api/v3/order``,
``POST /api/v3/order/test``, ``GET``/``DELETE /api/v3/order``, ``GET``/``DELETE
/api/v3/openOrders``, ``GET /api/v3/allOrders``, ``GET /api/v3/myTrades``. Every handler takes a
:class:`~atb_strategies.testing.binance.protocol.Request` and returns the JSON payload or raises
:class:`~atb_strategies.testing.binance.protocol.BinanceApiError`; the caller holds the lock,
has authenticated signed requests and has matched resting orders up to the clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from atb_strategies.testing.binance.auth import TimeSync
from atb_strategies.testing.binance.candles import CandleBook, interval_open, interval_to_ms
from atb_strategies.testing.binance.clock import MarketClock
from atb_strategies.testing.binance.faults import FaultInjector
from atb_strategies.testing.binance.lockstep import Lockstep
from atb_strategies.testing.binance.market import MarketSpec
from atb_strategies.testing.binance.matching import MatchingEngine
from atb_strategies.testing.binance.orders import STOP_TYPES, Order, cancel_json, order_json
from atb_strategies.testing.binance.protocol import (
    ZERO,
    BinanceApiError,
    Request,
    dec,
    fmt,
    int_param,
    mandatory,
)

__all__ = ["Endpoints", "Handler"]

#: An endpoint: the request in, the JSON payload out.
Handler = Callable[[Request], Any]


class Endpoints:
    """The route table and its handlers, over the server's market, candles and account.

    Parameters
    ----------
    market : MarketSpec
        Trading rules of the symbol.
    book : CandleBook
        The candles.
    clock : MarketClock
        The market clock.
    engine : MatchingEngine
        Balances, orders and trades.
    faults : FaultInjector
        Read for ``partial_fill_fraction`` when an order is placed.
    sync : TimeSync
        Records what ``/time`` told the clients.
    lockstep : Lockstep
        Told when ``/klines`` showed every closed candle; steps the clock on ``/time``.
    """

    def __init__(
        self,
        market: MarketSpec,
        book: CandleBook,
        clock: MarketClock,
        engine: MatchingEngine,
        faults: FaultInjector,
        sync: TimeSync,
        lockstep: Lockstep,
    ) -> None:
        self.market, self.book, self.clock = market, book, clock
        self.engine, self.faults, self.sync = engine, faults, sync
        self.lockstep = lockstep
        #: The endpoints of every symbol the server serves, this one first (symbol-less routes
        #: such as ``exchangeInfo`` and ``openOrders`` answer for all of them).
        self.peers: list[Endpoints] = [self]

    def routes(self) -> dict[tuple[str, str], tuple[Handler, bool]]:
        """``{(method, path): (handler, signed)}`` of every implemented endpoint."""
        return {
            ("GET", "/api/v3/ping"): (self.ping, False),
            ("GET", "/api/v3/time"): (self.time, False),
            ("GET", "/api/v3/exchangeInfo"): (self.exchange_info, False),
            ("GET", "/api/v3/klines"): (self.klines, False),
            ("GET", "/api/v3/ticker/price"): (self.ticker_price, False),
            ("GET", "/api/v3/ticker/24hr"): (self.ticker_24hr, False),
            ("GET", "/api/v3/account"): (self.account, True),
            ("POST", "/api/v3/order"): (self.post_order, True),
            ("POST", "/api/v3/order/test"): (self.post_order_test, True),
            ("GET", "/api/v3/order"): (self.get_order, True),
            ("DELETE", "/api/v3/order"): (self.delete_order, True),
            ("GET", "/api/v3/openOrders"): (self.open_orders, True),
            ("DELETE", "/api/v3/openOrders"): (self.delete_open_orders, True),
            ("GET", "/api/v3/allOrders"): (self.all_orders, True),
            ("GET", "/api/v3/myTrades"): (self.my_trades, True),
        }

    # ------------------------------------------------------------------ public routes

    def ping(self, request: Request) -> dict[str, Any]:
        """``GET /api/v3/ping``."""
        return {}

    def time(self, request: Request) -> dict[str, Any]:
        """``GET /api/v3/time``: the market clock plus ``clock.skew_ms`` (in lockstep, first
        stepped to the next close when an up-to-date client asks for the second time)."""
        self.lockstep.on_time_request()
        now = self.clock.now_ms
        self.sync.record(now)
        return {"serverTime": now + int(self.clock.skew_ms)}

    def exchange_info(self, request: Request) -> dict[str, Any]:
        """``GET /api/v3/exchangeInfo`` (optionally ``symbol`` or ``symbols``)."""
        served = {peer.market.symbol: peer.market for peer in self.peers}
        wanted = list(served)
        if request.params.get("symbol"):
            self.market.check_symbol(request.params)  # the server routed it to its market
            wanted = [self.market.symbol]
        symbols = request.params.get("symbols")
        if symbols:
            try:
                wanted = json.loads(symbols)
            except ValueError:
                raise BinanceApiError(
                    -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
            if not isinstance(wanted, list) or not wanted or not set(wanted) <= set(served):
                raise BinanceApiError(-1121, "Invalid symbol.")
        return {
            "timezone": "UTC",
            "serverTime": self.clock.now_ms,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": [served[symbol].symbol_info() for symbol in wanted],
        }

    def klines(self, request: Request) -> list[list[Any]]:
        """``GET /api/v3/klines`` (``symbol, interval, limit, startTime, endTime``)."""
        params = request.params
        self.market.check_symbol(params)
        interval = params.get("interval")
        if not interval:
            raise mandatory("interval")
        interval_ms = interval_to_ms(interval)
        if interval_ms is None or interval_ms % self.book.tf != 0:
            raise BinanceApiError(-1120, "Invalid interval.")
        limit = min(max(int_param(params, "limit", 500), 1), 1000)
        start = int_param(params, "startTime", None)
        end = int_param(params, "endTime", None)
        if start is not None and end is not None and start > end:
            raise BinanceApiError(-1023, "Start time is greater than end time.")
        now = self.clock.now_ms
        rows = self.book.klines(now, interval_ms, start, end, limit)
        last_closed = interval_open(now, interval_ms) - interval_ms
        shown_until = int(rows[-1][0]) + interval_ms if rows else (start or 0)
        if (end is None or end >= last_closed) and not self.book.has_open_in(
            shown_until, last_closed + interval_ms
        ):
            request.shown_interval = interval_ms  # nothing closed is left unseen
        return rows

    def ticker_price(self, request: Request) -> dict[str, Any]:
        """``GET /api/v3/ticker/price``."""
        self.market.check_symbol(request.params)
        return {"symbol": self.market.symbol, "price": fmt(self.engine.require_price())}

    def ticker_24hr(self, request: Request) -> dict[str, Any]:
        """``GET /api/v3/ticker/24hr``: statistics of the price path over the last 24 hours."""
        self.market.check_symbol(request.params)
        book = self.book
        now = self.clock.now_ms
        last = self.engine.require_price()
        start = now - 86_400_000
        first_price = book.price_at(start)
        open_price = first_price if first_price is not None else float(book.o[0])
        high = low = open_price
        for _, p0, _, p1 in book.segments(start, now):
            high, low = max(high, p0, p1), min(low, p0, p1)
        rows = book.klines(now, book.tf, start + 1, now, 1000)
        volume = sum(float(r[5]) for r in rows)
        quote_volume = sum(float(r[7]) for r in rows)
        change = last - dec(round(open_price, 8))
        trades = [t for t in self.engine.trades if t["time"] > start]
        return {
            "symbol": self.market.symbol,
            "priceChange": fmt(change),
            "priceChangePercent": f"{float(change) / open_price * 100:.3f}",
            "weightedAvgPrice": fmt(quote_volume / volume if volume else float(last)),
            "prevClosePrice": fmt(open_price),
            "lastPrice": fmt(last),
            "lastQty": "0.00000000",
            "bidPrice": fmt(last),
            "bidQty": "1.00000000",
            "askPrice": fmt(last + self.market.tick_size),
            "askQty": "1.00000000",
            "openPrice": fmt(open_price),
            "highPrice": fmt(high),
            "lowPrice": fmt(low),
            "volume": fmt(volume),
            "quoteVolume": fmt(quote_volume),
            "openTime": start,
            "closeTime": now,
            "firstId": trades[0]["id"] if trades else -1,
            "lastId": trades[-1]["id"] if trades else -1,
            "count": len(trades),
        }

    # ------------------------------------------------------------------ signed routes

    def account(self, request: Request) -> dict[str, Any]:
        """``GET /api/v3/account`` (``omitZeroBalances``)."""
        engine = self.engine
        fees = self.market.fees
        rate = fmt(fees)
        omit_zero = request.params.get("omitZeroBalances", "false").lower() == "true"
        balances = [
            {
                "asset": asset,
                "free": fmt(engine.free[asset]),
                "locked": fmt(engine.locked.get(asset, ZERO)),
            }
            for asset in sorted(engine.free)
        ]
        if omit_zero:
            balances = [b for b in balances if Decimal(b["free"]) or Decimal(b["locked"])]
        bps = int(fees * 10_000)
        return {
            "makerCommission": bps,
            "takerCommission": bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": rate,
                "taker": rate,
                "buyer": "0.00000000",
                "seller": "0.00000000",
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.clock.now_ms,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 354937868,
        }

    def post_order_test(self, request: Request) -> dict[str, Any]:
        """``POST /api/v3/order/test``: validate a new order without placing it."""
        self.engine.validate_new_order(request.params)
        return {}

    def post_order(self, request: Request) -> dict[str, Any]:
        """``POST /api/v3/order``, answered as ``newOrderRespType`` ACK, RESULT or FULL."""
        params = request.params
        symbol = self.market.symbol
        order, current = self.engine.validate_new_order(params)
        self.engine.place(
            order,
            current,
            hide_reads=request.hide_reads,
            partial_fraction=self.faults.partial_fill_fraction,
        )
        fills = list(order.fills)
        response_type = params.get("newOrderRespType") or (
            "FULL" if order.type in ("MARKET", "LIMIT") else "ACK"
        )
        head = {
            "symbol": symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time,
        }
        if response_type == "ACK":
            return head
        body = {
            **head,
            **{
                k: v
                for k, v in order_json(order, symbol).items()
                if k not in ("time", "updateTime", "isWorking", "icebergQty")
            },
        }
        if order.type not in STOP_TYPES:
            body.pop("stopPrice", None)
        if response_type == "FULL":
            body["fills"] = fills
        return body

    def get_order(self, request: Request) -> dict[str, Any]:
        """``GET /api/v3/order`` by ``orderId`` or ``origClientOrderId``."""
        order = self._find_order(request.params)
        if order is None or not _visible(order):
            raise BinanceApiError(-2013, "Order does not exist.")
        return order_json(order, self.market.symbol)

    def delete_order(self, request: Request) -> dict[str, Any]:
        """``DELETE /api/v3/order`` by ``orderId`` or ``origClientOrderId``."""
        order = self._find_order(request.params)
        if order is None or not order.is_open:
            raise BinanceApiError(-2011, "Unknown order sent.")
        self.engine.close(order, "CANCELED", self.clock.now_ms)
        return cancel_json(order, self.market.symbol, request.params.get("newClientOrderId"))

    def open_orders(self, request: Request) -> list[dict[str, Any]]:
        """``GET /api/v3/openOrders`` (of every symbol without ``symbol``)."""
        self.market.check_symbol(request.params, required=False)
        peers = [self] if request.params.get("symbol") else self.peers
        found = [
            (o, peer.market.symbol)
            for peer in peers
            for o in peer.engine.orders
            if o.is_open and _visible(o)
        ]
        return [order_json(o, symbol) for o, symbol in sorted(found, key=lambda x: x[0].order_id)]

    def delete_open_orders(self, request: Request) -> list[dict[str, Any]]:
        """``DELETE /api/v3/openOrders``: cancel every open order."""
        self.market.check_symbol(request.params)
        open_orders = [o for o in self.engine.orders if o.is_open]
        if not open_orders:
            raise BinanceApiError(-2011, "Unknown order sent.")
        now = self.clock.now_ms
        for order in open_orders:
            self.engine.close(order, "CANCELED", now)
        return [cancel_json(o, self.market.symbol, None) for o in open_orders]

    def all_orders(self, request: Request) -> list[dict[str, Any]]:
        """``GET /api/v3/allOrders`` (``orderId, startTime, endTime, limit``)."""
        params = request.params
        self.market.check_symbol(params)
        orders = [o for o in self.engine.orders if _visible(o)]
        from_id = int_param(params, "orderId", None)
        start = int_param(params, "startTime", None)
        end = int_param(params, "endTime", None)
        if from_id is not None:
            orders = [o for o in orders if o.order_id >= from_id]
        if start is not None:
            orders = [o for o in orders if o.time >= start]
        if end is not None:
            orders = [o for o in orders if o.time <= end]
        limit = min(max(int_param(params, "limit", 500), 1), 1000)
        chosen = orders[:limit] if (from_id is not None or start is not None) else orders[-limit:]
        return [order_json(o, self.market.symbol) for o in chosen]

    def my_trades(self, request: Request) -> list[dict[str, Any]]:
        """``GET /api/v3/myTrades`` (``orderId, startTime, endTime, fromId, limit``)."""
        params = request.params
        self.market.check_symbol(params)
        orders = self.engine.orders
        hidden = {o.order_id for o in orders if o.hidden_reads > 0 and not _visible(o)}
        trades = [t for t in self.engine.trades if t["orderId"] not in hidden]
        order_id = int_param(params, "orderId", None)
        start = int_param(params, "startTime", None)
        end = int_param(params, "endTime", None)
        from_id = int_param(params, "fromId", None)
        if order_id is not None:
            trades = [t for t in trades if t["orderId"] == order_id]
        if start is not None:
            trades = [t for t in trades if t["time"] >= start]
        if end is not None:
            trades = [t for t in trades if t["time"] <= end]
        if from_id is not None:
            trades = [t for t in trades if t["id"] >= from_id]
        limit = min(max(int_param(params, "limit", 500), 1), 1000)
        ascending = from_id is not None or start is not None
        chosen = trades[:limit] if ascending else trades[-limit:]
        return [dict(t) for t in chosen]

    def _find_order(self, params: Mapping[str, str]) -> Order | None:
        self.market.check_symbol(params)
        order_id = params.get("orderId")
        client_id = params.get("origClientOrderId")
        if not order_id and not client_id:
            raise BinanceApiError(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        if order_id:
            try:
                wanted = int(order_id)
            except ValueError:
                raise mandatory("orderId") from None
            matches = [o for o in self.engine.orders if o.order_id == wanted]
        else:
            matches = [o for o in self.engine.orders if o.client_order_id == client_id]
        return matches[-1] if matches else None


def _visible(order: Order) -> bool:
    """False (and one hidden read used up) while a ``hide_order`` fault hides ``order``."""
    if order.hidden_reads > 0:
        order.hidden_reads -= 1
        return False
    return True
