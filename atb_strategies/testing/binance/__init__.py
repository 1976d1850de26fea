"""A stateful Binance spot REST server on loopback, for driving the real ``ccxt.binance`` in tests.

``BinanceServer`` runs a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` (port 0, so the OS picks
a free port) in a background thread. It speaks the subset of the Binance spot v3 REST API that
``ccxt.binance`` 4.5 calls, with Binance's JSON shapes (numbers as strings), error bodies
(``{"code": -2010, "msg": ...}``) and HTTP statuses, so tests exercise ccxt's real signing,
parsing, error mapping and rate limiter instead of patched methods. ``ccxt_config()`` returns
the constructor dict that points every ccxt REST base URL at the server: nothing can leak to
the real exchange.

What is implemented
-------------------
Public endpoints (no key):
    ``GET /api/v3/ping``, ``/time``, ``/exchangeInfo`` (every symbol, realistic filters),
    ``/klines`` (``symbol, interval, limit, startTime, endTime``), ``/ticker/price``,
    ``/ticker/24hr``.
Signed endpoints (``X-MBX-APIKEY`` header plus HMAC-SHA256 ``signature`` over the query
string followed by the body, ``timestamp`` checked against the clock with ``recvWindow``):
    ``GET /api/v3/account``; ``POST /api/v3/order`` (form body; ``MARKET`` by ``quantity`` or
    ``quoteOrderQty``, ``LIMIT`` GTC/IOC/FOK, ``LIMIT_MAKER``, ``STOP_LOSS``, ``TAKE_PROFIT``,
    ``STOP_LOSS_LIMIT``, ``TAKE_PROFIT_LIMIT``; ``newClientOrderId``; ``newOrderRespType``
    ACK/RESULT/FULL); ``POST /api/v3/order/test``; ``GET /api/v3/order`` (``orderId`` or
    ``origClientOrderId``); ``DELETE /api/v3/order``; ``GET /api/v3/openOrders``;
    ``DELETE /api/v3/openOrders``; ``GET /api/v3/allOrders``; ``GET /api/v3/myTrades``
    (``orderId, startTime, endTime, fromId, limit``).
Anything else answers HTTP 404 with ``{"code": -1020, "msg": "This operation is not
supported."}``.

Market clock and candles
------------------------
``server.clock`` (:class:`MarketClock`) is the exchange's time. It is frozen by default and
moves only through ``set_time``/``advance``; ``set_speed(factor)`` makes it run at ``factor``
times wall speed instead ("fast" mode). ``BinanceServer(..., lockstep=True)`` (or
``server.lockstep.enabled = True``) drives the frozen clock from the client instead: once a
``/klines`` answer has shown every closed candle of an interval, the first ``/time`` request
after it is answered unchanged (the client waits) and the second first moves the clock to that
interval's next close (:class:`Lockstep`), so a polling client sees every candle close in turn
at any machine speed; live tests use this mode. Candles are an OHLCV
frame indexed by candle **open** time (UTC) at a fixed base timeframe. ``/klines`` returns only
candles whose open time is at or before the clock; intervals that are multiples of the base
timeframe are aggregated (aligned to the UTC epoch, weeks to Monday), others answer ``-1120``.

Inside each base candle the price follows a deterministic path through four points at 0, 1/3,
2/3 and 1 of the candle: open, low, high, close for a rising candle and open, high, low, close
for a falling one. The candle containing "now" is returned **partially revealed**: open as
given, close = the path price now, high/low = the extremes of the path so far, volume
pro rata. A candle is complete once ``open + timeframe <= now``.

Matching
--------
The "current price" is the path price at the clock (after the last candle it stays at the
last close; before the first candle there is none and market orders answer ``-1013 Market is
closed.``). Market orders fill at once at the current price, moved against the taker by
``slippage``, rounded to the tick. Limit orders that are marketable on arrival fill at once at
the current price (capped by the limit); the others rest and fill at their limit price as soon
as the price path crosses them. Stop orders trigger when the path touches ``stopPrice``, then
behave as a limit order (``*_LIMIT``) or fill at the trigger price (``STOP_LOSS``,
``TAKE_PROFIT``). Resting orders are matched on every request and on every clock change.
Balances are per asset (``free``/``locked``); funds are locked when an order is accepted.
Fees are ``fees`` times the fill, charged in the quote asset (``fee_asset="quote"``), the base
asset (``"base"``) or the received asset as Binance does (``"received"``).

``faults.partial_fill_fraction`` makes each new order fill that fraction first and the rest
at the same price on the next clock change (two trades).

Faults
------
``server.faults.queue(path_prefix, kind, count=1, method=None, **options)`` arms a bounded
fault; see :data:`FAULT_KINDS`. ``server.clock.skew_ms`` shifts what ``/time`` reports away from
the clock that validates signed timestamps. ``server.requests`` logs every request.

Not implemented
---------------
Order books and public trades (``depth``, ``trades``, ``aggTrades``, ``bookTicker``,
``avgPrice``), OCO/order lists, cancel-replace, SOR, ``sapi``/futures/margin endpoints,
websockets, iceberg and trailing orders, self-trade prevention, per-account rate-limit
accounting (weights are reported in headers but never enforced), monthly (``1M``) candles, and
markets in more than one quote asset (``markets=`` adds symbols of the same quote).

Modules
-------
``server`` (:class:`BinanceServer`, HTTP plumbing), ``endpoints`` (the routes), ``auth``
(API key, signature, timestamp window), ``matching`` (balances, fills, resting orders),
``orders`` (order record, parsing, JSON), ``market`` (symbol rules and filters), ``candles``
(intervals, synthetic candles, the candle book and price path), ``clock`` (:class:`MarketClock`),
``lockstep`` (:class:`Lockstep`),
``faults`` (:class:`FaultInjector`), ``protocol`` (errors, parameters, number strings) and
``ccxt_config`` (the loopback ``ccxt.binance`` config).
"""

from atb_strategies.testing.binance.auth import DEFAULT_API_KEY, DEFAULT_SECRET
from atb_strategies.testing.binance.candles import interval_to_ms, synthetic_candles
from atb_strategies.testing.binance.clock import MarketClock
from atb_strategies.testing.binance.faults import FAULT_KINDS, FaultInjector
from atb_strategies.testing.binance.lockstep import Lockstep
from atb_strategies.testing.binance.protocol import BinanceApiError, RequestRecord
from atb_strategies.testing.binance.server import BinanceServer

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET",
    "FAULT_KINDS",
    "BinanceApiError",
    "BinanceServer",
    "FaultInjector",
    "Lockstep",
    "MarketClock",
    "RequestRecord",
    "interval_to_ms",
    "synthetic_candles",
]
