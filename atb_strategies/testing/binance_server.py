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
    ``GET /api/v3/ping``, ``/time``, ``/exchangeInfo`` (one symbol, realistic filters),
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
times wall speed instead ("fast" mode). Candles are an OHLCV frame indexed by candle **open**
time (UTC) at a fixed base timeframe. ``/klines`` returns only candles whose open time is at
or before the clock; intervals that are multiples of the base timeframe are aggregated (aligned
to the UTC epoch, weeks to Monday), others answer ``-1120``.

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
accounting (weights are reported in headers but never enforced), monthly (``1M``) candles and
multiple symbols.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from email.message import Message
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET",
    "FAULT_KINDS",
    "BinanceApiError",
    "BinanceServer",
    "FaultInjector",
    "MarketClock",
    "RequestRecord",
    "interval_to_ms",
    "synthetic_candles",
]

DEFAULT_API_KEY = "atb-loopback-api-key"
DEFAULT_SECRET = "atb-loopback-secret"

#: Fault kinds accepted by :meth:`FaultInjector.queue`, with what the server does.
FAULT_KINDS: dict[str, str] = {
    "429": "HTTP 429 with {'code': -1003} and Retry-After; ccxt raises DDoSProtection",
    "418": "HTTP 418 (IP ban) with {'code': -1003} and Retry-After; ccxt raises DDoSProtection",
    "500": "HTTP 500 with a plain-text body; ccxt raises ExchangeNotAvailable",
    "502": "HTTP 502 with a plain-text body; ccxt raises ExchangeNotAvailable",
    "503": "HTTP 503 with a plain-text body; ccxt raises ExchangeNotAvailable",
    "504": "HTTP 504 with a plain-text body; ccxt raises RequestTimeout",
    "html": "HTTP 503 with an HTML maintenance page; ccxt raises ExchangeNotAvailable",
    "not_json": "HTTP 200 whose body is not JSON",
    "error": "any Binance error: options status (400), code (-1000), msg",
    "disconnect": "close the connection without answering",
    "timeout": "process the request, then answer only after options delay seconds (2.0)",
    "reject_order": "reject the order with -2010 (options code, msg) without placing it",
    "hide_order": "place the order, but GET order/openOrders/myTrades miss it for options "
    "reads requests (2)",
}

_ERROR_KINDS = frozenset(
    {"429", "418", "500", "502", "503", "504", "html", "not_json", "error", "disconnect"}
)
_VALID_INTERVALS = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_WEEK_MS = _UNIT_MS["w"]
_MONDAY_OFFSET_MS = 4 * _UNIT_MS["d"]  # 1970-01-01 was a Thursday; Binance weeks start Monday
_PATH_FRACTIONS = np.array([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0])
_CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_E8 = Decimal("0.00000001")
_ZERO = Decimal(0)
_OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
_ORDER_TYPES = (
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
)
_STOP_TYPES = frozenset({"STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"})
_LIMIT_TYPES = frozenset({"LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})
_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head><body>"
    "<h1>503 Service Unavailable</h1><p>The service is under maintenance.</p></body></html>"
)


def interval_to_ms(interval: str) -> int | None:
    """Length of a Binance kline interval in milliseconds.

    Parameters
    ----------
    interval : str
        A Binance interval such as ``"1m"``, ``"4h"`` or ``"1w"``.

    Returns
    -------
    int or None
        The length, or None for ``"1M"`` (months have no fixed length) and for strings that
        are not Binance intervals.
    """
    if interval not in _VALID_INTERVALS or interval == "1M":
        return None
    return int(interval[:-1]) * _UNIT_MS[interval[-1]]


def synthetic_candles(
    periods: int = 2880,
    *,
    timeframe: str = "1m",
    start: str = "2024-01-01",
    seed: int = 0,
    price: float = 30000.0,
) -> pd.DataFrame:
    """Seeded random-walk OHLCV candles indexed by (tz-naive UTC) open time.

    Parameters
    ----------
    periods : int
        Number of candles.
    timeframe : str
        Binance interval of each candle.
    start : str
        Open time of the first candle.
    seed : int
        Random seed; the same arguments always give the same frame.
    price : float
        First open price.

    Returns
    -------
    pandas.DataFrame
        Columns ``open, high, low, close, volume``.
    """
    step = interval_to_ms(timeframe)
    if step is None:
        raise ValueError(f"timeframe must be a fixed-length Binance interval. Got {timeframe!r}.")
    rng = np.random.default_rng(seed)
    close = np.round(price * np.exp(np.cumsum(rng.normal(0.0, 0.002, periods))), 2)
    open_ = np.concatenate(([price], close[:-1]))
    spread = np.round(np.abs(rng.normal(0.0, 0.001, periods)) * close, 2) + 0.01
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = np.round(rng.lognormal(1.0, 0.5, periods), 5)
    index = pd.date_range(
        start, periods=periods, freq=pd.Timedelta(milliseconds=step), name="timestamp"
    )
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


class BinanceApiError(Exception):
    """A Binance error answer: HTTP status plus the ``{"code", "msg"}`` body.

    Parameters
    ----------
    code : int
        Binance error code (negative).
    msg : str
        Binance error message; ccxt matches some messages exactly.
    status : int
        HTTP status to answer with.
    """

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status


def _mandatory(name: str) -> BinanceApiError:
    return BinanceApiError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _dec(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _fmt(value: Decimal | float) -> str:
    return f"{_dec(value):.8f}" if isinstance(value, Decimal) else f"{value:.8f}"


def _q8(value: Decimal) -> Decimal:
    return value.quantize(_E8, rounding=ROUND_HALF_UP)


def _to_tick(value: Decimal, tick: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    return (value / tick).to_integral_value(rounding=rounding) * tick


def _floor_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def _touch(p0: float, p1: float, level: float, below: bool) -> float | None:
    """Fraction of the segment p0 -> p1 where ``price <= level`` (below) first holds."""
    if below:
        if p0 <= level:
            return 0.0
        return (p0 - level) / (p0 - p1) if p1 <= level else None
    if p0 >= level:
        return 0.0
    return (level - p0) / (p1 - p0) if p1 >= level else None


# --------------------------------------------------------------------------------------- clock


class MarketClock:
    """The exchange's controllable clock, in epoch milliseconds (UTC).

    Frozen by default: time moves only through :meth:`set_time` and :meth:`advance`. After
    ``set_speed(factor)`` it also runs at ``factor`` times wall-clock speed ("fast" mode; 1.0 is
    real time, 0.0 freezes it again).

    Parameters
    ----------
    start_ms : int
        Initial market time.
    speed : float
        Initial speed factor; 0.0 means frozen.

    Attributes
    ----------
    skew_ms : int
        Added to what ``GET /api/v3/time`` reports, but not to the clock the server validates
        signed ``timestamp`` values against. A client that syncs with the server
        (``adjustForTimeDifference``) while ``skew_ms`` exceeds its ``recvWindow`` (or 1000 ms
        ahead) gets ``-1021`` (ccxt ``InvalidNonce``).
    """

    def __init__(self, start_ms: int, speed: float = 0.0) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0. Got {speed!r} instead.")
        self._lock = threading.Lock()
        self._anchor_ms = int(start_ms)
        self._anchor_wall = time.monotonic()
        self._speed = float(speed)
        self._listeners: list[Callable[[], None]] = []
        self.skew_ms = 0

    @property
    def now_ms(self) -> int:
        """Current market time in epoch milliseconds."""
        with self._lock:
            return self._now_locked()

    @property
    def speed(self) -> float:
        """Market milliseconds per wall millisecond (0.0 when frozen)."""
        return self._speed

    def now(self) -> pd.Timestamp:
        """Current market time as a tz-aware UTC timestamp."""
        return pd.Timestamp(self.now_ms, unit="ms", tz="UTC")

    def set_time(self, ms: int | pd.Timestamp | str) -> None:
        """Jump to ``ms`` (epoch ms, or anything ``pandas.Timestamp`` accepts, naive = UTC)."""
        target = _to_ms(ms)
        with self._lock:
            self._anchor_ms = target
            self._anchor_wall = time.monotonic()
        self._notify()

    def advance(self, ms: int | pd.Timedelta) -> int:
        """Move forward by ``ms`` milliseconds (or a Timedelta) and return the new time."""
        step = int(ms / pd.Timedelta(milliseconds=1)) if isinstance(ms, pd.Timedelta) else int(ms)
        if step < 0:
            raise ValueError(f"advance() moves forward only; use set_time(). Got {step} ms.")
        with self._lock:
            self._anchor_ms = self._now_locked() + step
            self._anchor_wall = time.monotonic()
            now = self._anchor_ms
        self._notify()
        return now

    def set_speed(self, factor: float) -> None:
        """Run at ``factor`` times wall speed from now on (0.0 freezes the clock)."""
        if factor < 0:
            raise ValueError(f"factor must be >= 0. Got {factor!r} instead.")
        with self._lock:
            self._anchor_ms = self._now_locked()
            self._anchor_wall = time.monotonic()
            self._speed = float(factor)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every :meth:`set_time` and :meth:`advance`."""
        self._listeners.append(callback)

    def _now_locked(self) -> int:
        if self._speed == 0.0:
            return self._anchor_ms
        return self._anchor_ms + int((time.monotonic() - self._anchor_wall) * 1000 * self._speed)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()


def _to_ms(value: int | float | pd.Timestamp | str) -> int:
    if isinstance(value, int | float | np.integer):
        return int(value)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int((stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1))


# -------------------------------------------------------------------------------------- faults


@dataclass
class _Fault:
    path_prefix: str
    kind: str
    remaining: int
    method: str | None
    options: dict[str, Any]


class FaultInjector:
    """Thread-safe, bounded fault plans for :class:`BinanceServer`.

    Every armed fault fires a fixed number of times on requests whose path starts with its
    prefix (and whose method matches, when given), then disarms itself. Faults fire in the order
    they were queued.

    Attributes
    ----------
    partial_fill_fraction : float or None
        While set (0 < f < 1), every new order first fills ``f`` of its quantity (rounded down
        to the lot step) and the rest, at the same price, on the next clock change.
    fired : list of tuple
        ``(kind, method, path)`` of every fault that fired, oldest first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._partial: float | None = None
        self.fired: list[tuple[str, str, str]] = []

    @property
    def partial_fill_fraction(self) -> float | None:
        """Fraction filled first by each new order, or None for whole fills."""
        return self._partial

    @partial_fill_fraction.setter
    def partial_fill_fraction(self, value: float | None) -> None:
        if value is not None and not 0.0 < float(value) < 1.0:
            raise ValueError(f"partial_fill_fraction must be in (0, 1) or None. Got {value!r}.")
        self._partial = None if value is None else float(value)

    def queue(
        self,
        path_prefix: str,
        kind: str,
        count: int = 1,
        *,
        method: str | None = None,
        **options: Any,
    ) -> None:
        """Arm a fault.

        Parameters
        ----------
        path_prefix : str
            Requests whose path starts with this fire it, e.g. ``"/api/v3/order"`` or
            ``"/api/v3/"`` for every endpoint.
        kind : str
            One of :data:`FAULT_KINDS`.
        count : int
            How many matching requests it affects (1 to 1000).
        method : str, optional
            Only requests with this HTTP method, e.g. ``"POST"``.
        **options
            Per kind: ``process=True`` (error kinds: carry out the request, then answer with
            the fault anyway, like a gateway failing after the exchange acted), ``delay``
            seconds (``timeout``, at most 30), ``reads`` (``hide_order``), ``status``, ``code``
            and ``msg`` (``error``, ``reject_order``), ``retry_after`` seconds (429/418),
            ``body`` (5xx and ``not_json``).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}. Got {kind!r} instead.")
        if not 1 <= int(count) <= 1000:
            raise ValueError(f"count must be between 1 and 1000. Got {count!r} instead.")
        if not path_prefix.startswith("/"):
            raise ValueError(f"path_prefix must start with '/'. Got {path_prefix!r} instead.")
        delay = float(options.get("delay", 2.0))
        if not 0.0 <= delay <= 30.0:
            raise ValueError(f"delay must be between 0 and 30 seconds. Got {delay!r} instead.")
        with self._lock:
            self._faults.append(
                _Fault(
                    path_prefix,
                    kind,
                    int(count),
                    None if method is None else method.upper(),
                    dict(options),
                )
            )

    def reject_next_order(
        self, count: int = 1, *, code: int = -2010, msg: str = "Order rejected by the risk engine."
    ) -> None:
        """Reject the next ``count`` ``POST /api/v3/order`` requests without placing them."""
        self.queue("/api/v3/order", "reject_order", count, method="POST", code=code, msg=msg)

    def clear(self) -> None:
        """Disarm every fault and stop partial fills."""
        with self._lock:
            self._faults.clear()
        self._partial = None

    @property
    def pending(self) -> list[tuple[str, str, int]]:
        """``(path_prefix, kind, remaining)`` of every armed fault."""
        with self._lock:
            return [(f.path_prefix, f.kind, f.remaining) for f in self._faults]

    def _take(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix) and fault.method in (None, method):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    self.fired.append((fault.kind, method, path))
                    return fault
        return None


# ------------------------------------------------------------------------------------- candles


class _CandleBook:
    """Base candles as numpy arrays, the intra-candle price path, and kline aggregation."""

    def __init__(self, frame: pd.DataFrame, timeframe: str | None) -> None:
        if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex):
            raise ValueError(
                "candles must be a pandas DataFrame with a DatetimeIndex of candle open times."
            )
        if frame.empty:
            raise ValueError("candles is empty; pass at least one candle or None.")
        columns = {str(c).lower(): c for c in frame.columns}
        missing = [c for c in ("open", "high", "low", "close", "volume") if c not in columns]
        if missing:
            raise ValueError(
                f"candles lacks columns {missing}; expected open, high, low, close, "
                f"volume. Got {list(frame.columns)}."
            )
        index = frame.index
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        ts = ((index - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1)).to_numpy(np.int64)
        if len(ts) > 1 and not bool(np.all(np.diff(ts) > 0)):
            raise ValueError("candles index must be strictly increasing (no duplicates).")
        if timeframe is not None:
            step = interval_to_ms(timeframe)
            if step is None:
                raise ValueError(
                    f"timeframe must be a fixed-length Binance interval such as "
                    f"'1m' or '1h'. Got {timeframe!r} instead."
                )
        elif len(ts) > 1:
            step = int(np.diff(ts).min())
        else:
            raise ValueError("A single candle does not reveal its timeframe; pass timeframe=.")
        self.tf = step
        self.ts = ts
        self.tick = 0.0  # forming-candle prices are snapped to this tick when set
        values = {
            name: frame[columns[name]].to_numpy(np.float64)
            for name in ("open", "high", "low", "close", "volume")
        }
        if any(bool(np.isnan(v).any()) for v in values.values()):
            raise ValueError("candles contain NaN values.")
        self.o, self.h, self.l, self.c, self.v = (
            values["open"],
            values["high"],
            values["low"],
            values["close"],
            values["volume"],
        )

    @property
    def first_open(self) -> int:
        return int(self.ts[0])

    @property
    def end(self) -> int:
        return int(self.ts[-1]) + self.tf

    def _path(self, i: int) -> np.ndarray:
        o, h, lo, c = self.o[i], self.h[i], self.l[i], self.c[i]
        return np.array([o, lo, h, c] if c >= o else [o, h, lo, c])

    def _snap(self, price: float) -> float:
        return round(round(price / self.tick) * self.tick, 10) if self.tick else price

    def _partial(self, i: int, now: int) -> tuple[float, float, float, float, float]:
        progress = min(max((now - int(self.ts[i])) / self.tf, 0.0), 1.0)
        path = self._path(i)
        close = self._snap(float(np.interp(progress, _PATH_FRACTIONS, path)))
        seen = path[progress >= _PATH_FRACTIONS]
        high = max(float(seen.max()), close)
        low = min(float(seen.min()), close)
        return float(self.o[i]), high, low, close, float(self.v[i]) * progress

    def price_at(self, now: int) -> float | None:
        i = int(np.searchsorted(self.ts, now, side="right")) - 1
        if i < 0:
            return None
        if now < int(self.ts[i]) + self.tf:
            return self._partial(i, now)[3]
        return float(self.c[i])

    def segments(self, t_a: int, t_b: int) -> Iterator[tuple[float, float, float, float]]:
        """Linear pieces ``(t0, p0, t1, p1)`` of the price path over ``(t_a, t_b]``."""
        first = max(int(np.searchsorted(self.ts, t_a, side="right")) - 1, 0)
        last = int(np.searchsorted(self.ts, t_b, side="right")) - 1
        for i in range(first, last + 1):
            start = int(self.ts[i])
            if start > t_a and i > 0:
                yield float(start), float(self.c[i - 1]), float(start), float(self.o[i])
            path = self._path(i)
            times = start + _PATH_FRACTIONS * self.tf
            for k in range(3):
                lo, hi = max(times[k], t_a), min(times[k + 1], t_b)
                if hi > lo:
                    span = times[k + 1] - times[k]
                    p_lo = path[k] + (path[k + 1] - path[k]) * (lo - times[k]) / span
                    p_hi = path[k] + (path[k + 1] - path[k]) * (hi - times[k]) / span
                    yield float(lo), float(p_lo), float(hi), float(p_hi)

    def klines(
        self, now: int, interval: int, start: int | None, end: int | None, limit: int
    ) -> list[list[Any]]:
        offset = _MONDAY_OFFSET_MS if interval % _WEEK_MS == 0 else 0

        def bucket(t: int) -> int:
            return (t - offset) // interval * interval + offset

        n_visible = int(np.searchsorted(self.ts, now, side="right"))
        i0, i1 = 0, n_visible
        if end is not None:
            i1 = min(i1, int(np.searchsorted(self.ts, bucket(end) + interval, side="left")))
        if start is not None:
            first_bucket = bucket(start) if bucket(start) == start else bucket(start) + interval
            i0 = int(np.searchsorted(self.ts, first_bucket, side="left"))
            if i0 < i1:
                stop_t = bucket(int(self.ts[i0])) + limit * interval
                i1 = min(i1, int(np.searchsorted(self.ts, stop_t, side="left")))
        elif i1 > 0:
            lowest = bucket(int(self.ts[i1 - 1])) - (limit - 1) * interval
            i0 = max(i0, int(np.searchsorted(self.ts, lowest, side="left")))
        if i0 >= i1:
            return []
        ts = self.ts[i0:i1]
        o, h, lo, c, v = (a[i0:i1].copy() for a in (self.o, self.h, self.l, self.c, self.v))
        if int(ts[-1]) + self.tf > now:  # the base candle containing "now" is still forming
            o[-1], h[-1], lo[-1], c[-1], v[-1] = self._partial(i1 - 1, now)
        keys = (ts - offset) // interval * interval + offset
        starts = np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1))
        ends = np.concatenate((starts[1:], [len(ts)])) - 1
        typical = (h + lo + c) / 3.0
        rows = zip(
            keys[starts],
            o[starts],
            np.maximum.reduceat(h, starts),
            np.minimum.reduceat(lo, starts),
            c[ends],
            np.add.reduceat(v, starts),
            np.add.reduceat(v * typical, starts),
            ends - starts + 1,
            strict=True,
        )
        out = [
            [
                int(k),
                _fmt(float(bo)),
                _fmt(float(bh)),
                _fmt(float(bl)),
                _fmt(float(bc)),
                _fmt(float(bv)),
                int(k) + interval - 1,
                _fmt(float(qv)),
                int(n),
                _fmt(float(bv) / 2.0),
                _fmt(float(qv) / 2.0),
                "0",
            ]
            for k, bo, bh, bl, bc, bv, qv, n in rows
        ]
        return out[:limit] if start is not None else out[-limit:]


# -------------------------------------------------------------------------------------- orders


@dataclass
class _Order:
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
    executed_qty: Decimal = _ZERO
    cumm_quote: Decimal = _ZERO
    working: bool = True
    working_time: int = -1
    reserve_asset: str = ""
    reserve_price: Decimal = _ZERO
    reserved: Decimal = _ZERO
    partial_fraction: float | None = None
    deferred_price: Decimal | None = None
    deferred_after: int = 0
    deferred_maker: bool = False
    hidden_reads: int = 0
    fills: list[dict[str, Any]] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN_STATUSES

    @property
    def trigger_below(self) -> bool:
        stop_loss = self.type.startswith("STOP_LOSS")
        return stop_loss == (self.side == "SELL")


@dataclass
class RequestRecord:
    """One request received by :class:`BinanceServer`.

    Attributes
    ----------
    method : str
        HTTP method.
    path : str
        URL path without the query string, e.g. ``"/api/v3/order"``.
    params : dict of str to str
        Query string and form body parameters (including ``signature``).
    time_ms : int
        Market time when the request arrived.
    status : int
        HTTP status answered (0 if the connection was dropped).
    fault : str or None
        Kind of the fault that fired on this request.
    """

    method: str
    path: str
    params: dict[str, str]
    time_ms: int
    status: int = 0
    fault: str | None = None


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, str]
    raw_query: str
    raw_body: str
    headers: Message
    hide_reads: int = 0


# -------------------------------------------------------------------------------------- server


class BinanceServer:
    """A stateful loopback Binance spot REST server for one symbol.

    Parameters
    ----------
    candles : pandas.DataFrame, optional
        OHLCV candles (``open, high, low, close, volume``) indexed by candle open time (UTC;
        naive timestamps are taken as UTC) at a fixed timeframe. Gaps are allowed. None uses
        :func:`synthetic_candles` (2880 one-minute candles from 2024-01-01) with the clock at
        2024-01-02 00:00:30.
    symbol, base, quote : str
        The single market served, e.g. ``"BTCUSDT"`` = ``"BTC"`` + ``"USDT"``.
    timeframe : str, optional
        Base interval of ``candles``; inferred from the smallest index step when omitted.
    api_key, secret : str
        Credentials the signed endpoints accept.
    start_time_ms : int, optional
        Initial market time; defaults to the close of the last candle (all candles complete).
    clock_speed : float
        Initial :meth:`MarketClock.set_speed` factor; 0.0 (default) freezes the clock.
    balances : mapping of str to number, optional
        Initial free balances; default ``{quote: 10000, base: 1}``.
    fees : float or str
        Fee rate per fill, e.g. 0.001 for 0.1 %.
    fee_asset : {"quote", "base", "received"}
        Asset the fee is charged in; ``"received"`` is Binance's default (base on buys, quote
        on sells).
    slippage : float or str
        Market orders fill this fraction worse than the current price.
    tick_size, step_size, min_qty, max_qty, min_notional : str
        PRICE_FILTER, LOT_SIZE and NOTIONAL filter values.
    strict_timestamps : bool
        False (default): a signed ``timestamp`` passes when it is within ``recvWindow`` of the
        market clock, or of the market clock as seen through any earlier ``GET /api/v3/time``
        answer and extrapolated at wall speed, so clients need not resync after
        :meth:`MarketClock.advance`. True: only the market clock counts, as on the real
        exchange.

    Attributes
    ----------
    clock : MarketClock
        The market clock.
    faults : FaultInjector
        Fault plans.
    internal_errors : list of Exception
        Unexpected exceptions raised while answering (answered as HTTP 500, code -1000);
        a test can assert it stays empty.

    Examples
    --------
    >>> with BinanceServer(candles) as server:                      # doctest: +SKIP
    ...     exchange = ccxt.binance(server.ccxt_config())
    ...     exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    """

    def __init__(
        self,
        candles: pd.DataFrame | None = None,
        *,
        symbol: str = "BTCUSDT",
        base: str = "BTC",
        quote: str = "USDT",
        timeframe: str | None = None,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        start_time_ms: int | None = None,
        clock_speed: float = 0.0,
        balances: Mapping[str, float | str | Decimal] | None = None,
        fees: float | str = 0.001,
        fee_asset: str = "quote",
        slippage: float | str = 0.0,
        tick_size: str = "0.01",
        step_size: str = "0.00001",
        min_qty: str = "0.00001",
        max_qty: str = "9000",
        min_notional: str = "5",
        strict_timestamps: bool = False,
    ) -> None:
        if fee_asset not in ("quote", "base", "received"):
            raise ValueError(
                f"fee_asset must be 'quote', 'base' or 'received'. Got {fee_asset!r} instead."
            )
        if symbol != base + quote:
            raise ValueError(
                f"symbol must be base + quote. Got {symbol!r} for {base!r} + {quote!r}."
            )
        default_start: int | None = None
        if candles is None:
            candles = synthetic_candles()
            default_start = _to_ms("2024-01-02 00:00:30")
        self._book = _CandleBook(candles, timeframe)
        self._book.tick = float(tick_size)
        self.symbol, self.base, self.quote = symbol, base, quote
        self.api_key, self._secret = api_key, secret
        self.fees = _dec(fees)
        self.fee_asset = fee_asset
        self.slippage = _dec(slippage)
        self.tick_size, self.step_size = _dec(tick_size), _dec(step_size)
        self.min_qty, self.max_qty = _dec(min_qty), _dec(max_qty)
        self.min_notional = _dec(min_notional)
        self.min_price, self.max_price = self.tick_size, Decimal("1000000")
        self.strict_timestamps = strict_timestamps
        start = start_time_ms if start_time_ms is not None else default_start
        self.clock = MarketClock(self._book.end if start is None else int(start), clock_speed)
        self.faults = FaultInjector()
        self._lock = threading.RLock()
        initial = balances if balances is not None else {quote: "10000", base: "1"}
        self._free: dict[str, Decimal] = {base: _ZERO, quote: _ZERO}
        self._free.update({asset: _q8(_dec(amount)) for asset, amount in initial.items()})
        self._locked: dict[str, Decimal] = dict.fromkeys(self._free, _ZERO)
        self._orders: list[_Order] = []
        self._trades: list[dict[str, Any]] = []
        self._next_order_id = 1000
        self._next_trade_id = 500
        self._cursor = self.clock.now_ms
        self._sync_offsets: deque[int] = deque(maxlen=64)
        self._requests: list[RequestRecord] = []
        self.internal_errors: list[Exception] = []
        self._weights: deque[float] = deque()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._routes: dict[tuple[str, str], tuple[Callable[[_Request], Any], bool]] = {
            ("GET", "/api/v3/ping"): (self._ping, False),
            ("GET", "/api/v3/time"): (self._time, False),
            ("GET", "/api/v3/exchangeInfo"): (self._exchange_info, False),
            ("GET", "/api/v3/klines"): (self._klines, False),
            ("GET", "/api/v3/ticker/price"): (self._ticker_price, False),
            ("GET", "/api/v3/ticker/24hr"): (self._ticker_24hr, False),
            ("GET", "/api/v3/account"): (self._account, True),
            ("POST", "/api/v3/order"): (self._post_order, True),
            ("POST", "/api/v3/order/test"): (self._post_order_test, True),
            ("GET", "/api/v3/order"): (self._get_order, True),
            ("DELETE", "/api/v3/order"): (self._delete_order, True),
            ("GET", "/api/v3/openOrders"): (self._open_orders, True),
            ("DELETE", "/api/v3/openOrders"): (self._delete_open_orders, True),
            ("GET", "/api/v3/allOrders"): (self._all_orders, True),
            ("GET", "/api/v3/myTrades"): (self._my_trades, True),
        }
        self.clock.subscribe(self._on_clock_change)

    # ------------------------------------------------------------------------- lifecycle

    def start(self) -> BinanceServer:
        """Bind ``127.0.0.1`` on a free port and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.app = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"binance-loopback-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and release the port (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BinanceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """TCP port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("BinanceServer is not started; call start() first.")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def timeframe_ms(self) -> int:
        """Length of one base candle in milliseconds."""
        return self._book.tf

    def ccxt_config(
        self,
        *,
        timeout_ms: int = 10_000,
        rate_limit_ms: int | None = None,
        with_keys: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        """The ``ccxt.binance(config)`` dict that aims every REST URL at this server.

        All ``urls['api']``, ``urls['test']`` and ``urls['demo']`` entries of ccxt's binance
        class are rewritten to the loopback URL (path kept), so even endpoints the server does
        not implement cannot reach the internet, in or out of sandbox mode.

        Parameters
        ----------
        timeout_ms : int
            ccxt request timeout.
        rate_limit_ms : int, optional
            ccxt ``rateLimit`` (binance default 50 ms); the rate limiter stays enabled.
        with_keys : bool
            Include ``apiKey`` and ``secret``.
        **options
            Merged into ``options`` over the defaults ``fetchCurrencies=False``,
            ``fetchMargins=False``, ``fetchMarkets={'types': ['spot']}`` (no signed sapi or
            futures calls in ``load_markets``), ``adjustForTimeDifference=True`` (learn the
            market clock from ``/api/v3/time``) and
            ``warnOnFetchOpenOrdersWithoutSymbol=False``.

        Returns
        -------
        dict
            Constructor config for ``ccxt.binance``.
        """
        urls = {
            section: _rewrite_urls(values, self.url)
            for section, values in _ccxt_binance_urls().items()
        }
        config: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": int(timeout_ms),
            "urls": urls,
            "options": {
                "fetchCurrencies": False,
                "fetchMargins": False,
                "fetchMarkets": {"types": ["spot"]},
                "adjustForTimeDifference": True,
                "warnOnFetchOpenOrdersWithoutSymbol": False,
                **options,
            },
        }
        if rate_limit_ms is not None:
            config["rateLimit"] = int(rate_limit_ms)
        if with_keys:
            config["apiKey"] = self.api_key
            config["secret"] = self._secret
        return config

    # ------------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RequestRecord]:
        """Copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str, method: str | None = None) -> int:
        """Number of logged requests to exactly ``path`` (and ``method``, when given)."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if r.path == path and (method is None or r.method == method.upper())
            )

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        """``(free, locked)`` of ``asset`` after matching up to the current clock."""
        with self._lock:
            self._match()
            return self._free.get(asset, _ZERO), self._locked.get(asset, _ZERO)

    def set_balance(self, asset: str, free: float | str | Decimal) -> None:
        """Set the free balance of ``asset`` (locked funds are unchanged)."""
        with self._lock:
            self._free[asset] = _q8(_dec(free))
            self._locked.setdefault(asset, _ZERO)

    def orders(self) -> list[dict[str, Any]]:
        """Every order as Binance's ``GET /api/v3/order`` JSON, oldest first."""
        with self._lock:
            self._match()
            return [self._order_json(o) for o in self._orders]

    def trades(self) -> list[dict[str, Any]]:
        """Every fill as Binance's ``GET /api/v3/myTrades`` JSON, oldest first."""
        with self._lock:
            self._match()
            return [dict(t) for t in self._trades]

    def current_price(self) -> Decimal | None:
        """Last traded price at the current clock, rounded to the tick (None before data)."""
        price = self._book.price_at(self.clock.now_ms)
        return None if price is None else _to_tick(_dec(round(price, 10)), self.tick_size)

    # ------------------------------------------------------------------------ HTTP plumbing

    def _serve(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw_body = handler.rfile.read(length).decode("utf-8", "replace") if length else ""
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if raw_body and "x-www-form-urlencoded" in (handler.headers.get("Content-Type") or ""):
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        request = _Request(method, split.path, params, split.query, raw_body, handler.headers)
        record = RequestRecord(method, split.path, dict(params), self.clock.now_ms)
        with self._lock:
            self._requests.append(record)
        fault = self.faults._take(method, split.path)
        record.fault = None if fault is None else fault.kind
        if fault is not None and fault.kind in _ERROR_KINDS:
            if fault.options.get("process"):
                self._dispatch(request)
            if fault.kind == "disconnect":
                handler.close_connection = True
                return
            status, body, headers = self._fault_response(fault)
        elif fault is not None and fault.kind == "reject_order":
            error = BinanceApiError(
                int(fault.options.get("code", -2010)),
                str(fault.options.get("msg", "Order rejected.")),
                int(fault.options.get("status", 400)),
            )
            status, body, headers = error.status, _error_body(error), {}
        else:
            if fault is not None and fault.kind == "hide_order":
                request.hide_reads = int(fault.options.get("reads", 2))
            status, body, headers = self._dispatch(request)
            if fault is not None and fault.kind == "timeout":
                self._stopping.wait(float(fault.options.get("delay", 2.0)))
        record.status = status
        self._send(handler, status, body, headers)

    def _dispatch(self, request: _Request) -> tuple[int, str, dict[str, str]]:
        route = self._routes.get((request.method, request.path))
        try:
            if route is None:
                raise BinanceApiError(-1020, "This operation is not supported.", 404)
            func, signed = route
            with self._lock:
                if signed:
                    self._authenticate(request)
                self._match()
                payload = func(request)
            return 200, json.dumps(payload, separators=(",", ":")), {}
        except BinanceApiError as e:
            return e.status, _error_body(e), {}
        except Exception as e:  # a server bug: answer like Binance, keep it for the test
            with self._lock:
                self.internal_errors.append(e)
            error = BinanceApiError(-1000, f"Internal error in the loopback server: {e!r}", 500)
            return error.status, _error_body(error), {}

    def _fault_response(self, fault: _Fault) -> tuple[int, str, dict[str, str]]:
        kind, options = fault.kind, fault.options
        if kind in ("429", "418"):
            msg = (
                "Too much request weight used; current limit is 6000 request weight per 1 "
                "MINUTE. Please use WebSocket Streams for live updates to avoid polling the "
                "API."
                if kind == "429"
                else "Way too much request weight used; IP banned until "
                f"{self.clock.now_ms + 120_000}. Please use WebSocket Streams for live updates "
                "to avoid bans."
            )
            headers = {"Retry-After": str(options.get("retry_after", 1 if kind == "429" else 2))}
            return int(kind), json.dumps({"code": -1003, "msg": msg}), headers
        if kind in ("500", "502", "503", "504"):
            reasons = {
                "500": "Internal Server Error",
                "502": "Bad Gateway",
                "503": "Service Unavailable",
                "504": "Gateway Timeout",
            }
            return int(kind), str(options.get("body", f"{kind} {reasons[kind]}")), {}
        if kind == "html":
            return 503, _HTML_PAGE, {"Content-Type": "text/html"}
        if kind == "not_json":
            return 200, str(options.get("body", "<html><body>OK</body></html>")), {}
        error = BinanceApiError(
            int(options.get("code", -1000)),
            str(options.get("msg", "An unknown error occurred while processing the request.")),
            int(options.get("status", 400)),
        )
        return error.status, _error_body(error), {}

    def _send(self, handler: _Handler, status: int, body: str, headers: Mapping[str, str]) -> None:
        data = body.encode("utf-8")
        now = time.monotonic()
        with self._lock:
            self._weights.append(now)
            while self._weights and self._weights[0] < now - 60.0:
                self._weights.popleft()
            weight = len(self._weights)
        try:
            handler.send_response(status)
            handler.send_header(
                "Content-Type", headers.get("Content-Type", "application/json;charset=UTF-8")
            )
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("x-mbx-used-weight", str(weight))
            handler.send_header("x-mbx-used-weight-1m", str(weight))
            for name, value in headers.items():
                if name != "Content-Type":
                    handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:  # the client gave up (timeout) or the server is stopping
            handler.close_connection = True

    def _authenticate(self, request: _Request) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise BinanceApiError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key, self.api_key):
            raise BinanceApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        signature = request.params.get("signature")
        if not signature:
            raise _mandatory("signature")

        def unsigned(raw: str) -> str:
            return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))

        payload = unsigned(request.raw_query) + unsigned(request.raw_body)
        expected = hmac.new(self._secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise BinanceApiError(-1022, "Signature for this request is not valid.")
        try:
            stamp = int(request.params["timestamp"])
        except (KeyError, ValueError):
            raise _mandatory("timestamp") from None
        try:
            window = int(request.params.get("recvWindow", "5000"))
        except ValueError:
            raise _mandatory("recvWindow") from None
        if window > 60_000:
            raise BinanceApiError(-1131, "recvWindow must be less than 60000")
        now = self.clock.now_ms
        references = [now]
        if not self.strict_timestamps:
            wall = int(time.time() * 1000)
            references += [wall + offset for offset in self._sync_offsets]
        if any(ref - window <= stamp <= ref + 1000 for ref in references):
            return
        if stamp > now + 1000:
            raise BinanceApiError(
                -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        raise BinanceApiError(-1021, "Timestamp for this request is outside of the recvWindow.")

    # ----------------------------------------------------------------------- public routes

    def _ping(self, request: _Request) -> dict[str, Any]:
        return {}

    def _time(self, request: _Request) -> dict[str, Any]:
        now = self.clock.now_ms
        offset = now - int(time.time() * 1000)
        if not self._sync_offsets or abs(self._sync_offsets[-1] - offset) > 50:
            self._sync_offsets.append(offset)
        return {"serverTime": now + int(self.clock.skew_ms)}

    def _check_symbol(self, params: Mapping[str, str], required: bool = True) -> None:
        symbol = params.get("symbol")
        if symbol is None or symbol == "":
            if required:
                raise _mandatory("symbol")
            return
        if symbol != self.symbol:
            raise BinanceApiError(-1121, "Invalid symbol.")

    def _exchange_info(self, request: _Request) -> dict[str, Any]:
        self._check_symbol(request.params, required=False)
        symbols = request.params.get("symbols")
        if symbols:
            try:
                wanted = json.loads(symbols)
            except ValueError:
                raise BinanceApiError(
                    -1100, "Illegal characters found in parameter 'symbols'."
                ) from None
            if wanted != [self.symbol]:
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
            "symbols": [self._symbol_info()],
        }

    def _symbol_info(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "status": "TRADING",
            "baseAsset": self.base,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": list(_ORDER_TYPES),
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "amendAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": _fmt(self.min_price),
                    "maxPrice": _fmt(self.max_price),
                    "tickSize": _fmt(self.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": _fmt(self.min_qty),
                    "maxQty": _fmt(self.max_qty),
                    "stepSize": _fmt(self.step_size),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": _fmt(_ZERO),
                    "maxQty": _fmt(self.max_qty),
                    "stepSize": _fmt(_ZERO),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": _fmt(self.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": [
                "NONE",
                "EXPIRE_TAKER",
                "EXPIRE_MAKER",
                "EXPIRE_BOTH",
            ],
        }

    def _klines(self, request: _Request) -> list[list[Any]]:
        params = request.params
        self._check_symbol(params)
        interval = params.get("interval")
        if not interval:
            raise _mandatory("interval")
        interval_ms = interval_to_ms(interval)
        if interval_ms is None or interval_ms % self._book.tf != 0:
            raise BinanceApiError(-1120, "Invalid interval.")
        limit = min(max(_int_param(params, "limit", 500), 1), 1000)
        start = _int_param(params, "startTime", None)
        end = _int_param(params, "endTime", None)
        if start is not None and end is not None and start > end:
            raise BinanceApiError(-1023, "Start time is greater than end time.")
        return self._book.klines(self.clock.now_ms, interval_ms, start, end, limit)

    def _require_price(self) -> Decimal:
        price = self.current_price()
        if price is None:
            raise BinanceApiError(-1013, "Market is closed.")
        return price

    def _ticker_price(self, request: _Request) -> dict[str, Any]:
        self._check_symbol(request.params)
        return {"symbol": self.symbol, "price": _fmt(self._require_price())}

    def _ticker_24hr(self, request: _Request) -> dict[str, Any]:
        self._check_symbol(request.params)
        now = self.clock.now_ms
        last = self._require_price()
        start = now - 86_400_000
        first_price = self._book.price_at(start)
        open_price = first_price if first_price is not None else float(self._book.o[0])
        high = low = open_price
        for _, p0, _, p1 in self._book.segments(start, now):
            high, low = max(high, p0, p1), min(low, p0, p1)
        rows = self._book.klines(now, self._book.tf, start + 1, now, 1000)
        volume = sum(float(r[5]) for r in rows)
        quote_volume = sum(float(r[7]) for r in rows)
        change = last - _dec(round(open_price, 8))
        trades = [t for t in self._trades if t["time"] > start]
        return {
            "symbol": self.symbol,
            "priceChange": _fmt(change),
            "priceChangePercent": f"{float(change) / open_price * 100:.3f}",
            "weightedAvgPrice": _fmt(quote_volume / volume if volume else float(last)),
            "prevClosePrice": _fmt(open_price),
            "lastPrice": _fmt(last),
            "lastQty": "0.00000000",
            "bidPrice": _fmt(last),
            "bidQty": "1.00000000",
            "askPrice": _fmt(last + self.tick_size),
            "askQty": "1.00000000",
            "openPrice": _fmt(open_price),
            "highPrice": _fmt(high),
            "lowPrice": _fmt(low),
            "volume": _fmt(volume),
            "quoteVolume": _fmt(quote_volume),
            "openTime": start,
            "closeTime": now,
            "firstId": trades[0]["id"] if trades else -1,
            "lastId": trades[-1]["id"] if trades else -1,
            "count": len(trades),
        }

    # ---------------------------------------------------------------------- signed routes

    def _account(self, request: _Request) -> dict[str, Any]:
        rate = _fmt(self.fees)
        omit_zero = request.params.get("omitZeroBalances", "false").lower() == "true"
        balances = [
            {
                "asset": asset,
                "free": _fmt(self._free[asset]),
                "locked": _fmt(self._locked.get(asset, _ZERO)),
            }
            for asset in sorted(self._free)
        ]
        if omit_zero:
            balances = [b for b in balances if Decimal(b["free"]) or Decimal(b["locked"])]
        bps = int(self.fees * 10_000)
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

    def _parse_new_order(self, params: Mapping[str, str]) -> _Order:
        self._check_symbol(params)
        side = params.get("side")
        if not side:
            raise _mandatory("side")
        if side not in ("BUY", "SELL"):
            raise BinanceApiError(-1117, "Invalid side.")
        order_type = params.get("type")
        if not order_type:
            raise _mandatory("type")
        if order_type not in _ORDER_TYPES:
            raise BinanceApiError(-1116, "Invalid orderType.")
        client_id = params.get("newClientOrderId") or "atb" + secrets.token_hex(11)
        if not _CLIENT_ID_RE.match(client_id):
            raise BinanceApiError(
                -1100,
                "Illegal characters found in parameter "
                "'newClientOrderId'; legal range is "
                "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        quantity = _decimal_param(params, "quantity")
        quote_qty = _decimal_param(params, "quoteOrderQty")
        price = _decimal_param(params, "price")
        stop = _decimal_param(params, "stopPrice")
        tif = params.get("timeInForce") or ""
        if order_type == "MARKET":
            if quantity is None and quote_qty is None:
                raise BinanceApiError(
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                )
            tif = "GTC"
        elif quantity is None:
            raise _mandatory("quantity")
        if order_type in _LIMIT_TYPES and price is None:
            raise _mandatory("price")
        if order_type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
            if not tif:
                raise _mandatory("timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise BinanceApiError(-1115, "Invalid timeInForce.")
        elif order_type != "MARKET":
            tif = "GTC"
        if order_type in _STOP_TYPES and stop is None:
            raise _mandatory("stopPrice")
        now = self.clock.now_ms
        return _Order(
            order_id=0,
            client_order_id=client_id,
            side=side,
            type=order_type,
            time_in_force=tif,
            orig_qty=quantity or _ZERO,
            price=price or _ZERO,
            stop_price=stop or _ZERO,
            orig_quote_qty=quote_qty or _ZERO,
            time=now,
            update_time=now,
            working=order_type not in _STOP_TYPES,
            working_time=-1 if order_type in _STOP_TYPES else now,
        )

    def _check_filters(self, order: _Order, reference_price: Decimal) -> None:
        if order.type in _LIMIT_TYPES or order.type in _STOP_TYPES:
            for value in (order.price, order.stop_price):
                if value and (
                    value < self.min_price
                    or value > self.max_price
                    or (value - self.min_price) % self.tick_size
                ):
                    raise BinanceApiError(-1013, "Filter failure: PRICE_FILTER")
        qty = order.orig_qty
        if qty < self.min_qty or qty > self.max_qty or (qty - self.min_qty) % self.step_size:
            raise BinanceApiError(-1013, "Filter failure: LOT_SIZE")
        notional = order.orig_quote_qty if order.orig_quote_qty else qty * reference_price
        if notional < self.min_notional:
            raise BinanceApiError(-1013, "Filter failure: NOTIONAL")

    def _validate_new_order(self, params: Mapping[str, str]) -> tuple[_Order, Decimal | None]:
        order = self._parse_new_order(params)
        current = self.current_price()
        if order.type == "MARKET":
            if current is None:
                raise BinanceApiError(-1013, "Market is closed.")
            rounding = ROUND_CEILING if order.side == "BUY" else ROUND_FLOOR
            factor = 1 + self.slippage if order.side == "BUY" else 1 - self.slippage
            exec_price = _to_tick(current * factor, self.tick_size, rounding)
            if order.orig_quote_qty:
                order.orig_qty = _floor_step(order.orig_quote_qty / exec_price, self.step_size)
            self._check_filters(order, exec_price)
            return order, exec_price
        self._check_filters(order, order.price if order.price else order.stop_price)
        return order, current

    def _post_order_test(self, request: _Request) -> dict[str, Any]:
        self._validate_new_order(request.params)
        return {}

    def _post_order(self, request: _Request) -> dict[str, Any]:
        params = request.params
        order, current = self._validate_new_order(params)
        if any(o.is_open and o.client_order_id == order.client_order_id for o in self._orders):
            raise BinanceApiError(-2010, "Duplicate order sent.")
        marketable = False
        if order.type in _STOP_TYPES:
            if (
                current is not None
                and _touch(
                    float(current), float(current), float(order.stop_price), order.trigger_below
                )
                is not None
            ):
                raise BinanceApiError(-2010, "Stop price would trigger immediately.")
        elif order.type != "MARKET" and current is not None:
            marketable = current <= order.price if order.side == "BUY" else current >= order.price
            if marketable and order.type == "LIMIT_MAKER":
                raise BinanceApiError(-2010, "Order would immediately match and take.")
        if order.type == "MARKET":
            assert current is not None  # _validate_new_order raised otherwise
            order.reserve_price = current
        else:
            order.reserve_price = order.price if order.price else order.stop_price
        self._reserve(order)
        self._next_order_id += 1
        order.order_id = self._next_order_id
        order.hidden_reads = request.hide_reads
        if order.time_in_force == "GTC":  # IOC/FOK fill at once or never
            order.partial_fraction = self.faults.partial_fill_fraction
        self._orders.append(order)
        now = self.clock.now_ms
        if order.type == "MARKET":
            assert current is not None
            self._fill_planned(order, current, now, maker=False, pass_now=now)
        elif marketable:
            assert current is not None
            better = min(current, order.price) if order.side == "BUY" else max(current, order.price)
            self._fill_planned(order, better, now, maker=False, pass_now=now)
        elif order.time_in_force in ("IOC", "FOK") and order.type == "LIMIT":
            self._close(order, "EXPIRED", now)
        fills = list(order.fills)
        response_type = params.get("newOrderRespType") or (
            "FULL" if order.type in ("MARKET", "LIMIT") else "ACK"
        )
        head = {
            "symbol": self.symbol,
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
                for k, v in self._order_json(order).items()
                if k not in ("time", "updateTime", "isWorking", "icebergQty")
            },
        }
        if order.type not in _STOP_TYPES:
            body.pop("stopPrice", None)
        if response_type == "FULL":
            body["fills"] = fills
        return body

    def _find_order(self, params: Mapping[str, str]) -> _Order | None:
        self._check_symbol(params)
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
                raise _mandatory("orderId") from None
            matches = [o for o in self._orders if o.order_id == wanted]
        else:
            matches = [o for o in self._orders if o.client_order_id == client_id]
        return matches[-1] if matches else None

    def _visible(self, order: _Order) -> bool:
        if order.hidden_reads > 0:
            order.hidden_reads -= 1
            return False
        return True

    def _get_order(self, request: _Request) -> dict[str, Any]:
        order = self._find_order(request.params)
        if order is None or not self._visible(order):
            raise BinanceApiError(-2013, "Order does not exist.")
        return self._order_json(order)

    def _delete_order(self, request: _Request) -> dict[str, Any]:
        order = self._find_order(request.params)
        if order is None or not order.is_open:
            raise BinanceApiError(-2011, "Unknown order sent.")
        self._close(order, "CANCELED", self.clock.now_ms)
        return self._cancel_json(order, request.params.get("newClientOrderId"))

    def _open_orders(self, request: _Request) -> list[dict[str, Any]]:
        self._check_symbol(request.params, required=False)
        return [self._order_json(o) for o in self._orders if o.is_open and self._visible(o)]

    def _delete_open_orders(self, request: _Request) -> list[dict[str, Any]]:
        self._check_symbol(request.params)
        open_orders = [o for o in self._orders if o.is_open]
        if not open_orders:
            raise BinanceApiError(-2011, "Unknown order sent.")
        now = self.clock.now_ms
        for order in open_orders:
            self._close(order, "CANCELED", now)
        return [self._cancel_json(o, None) for o in open_orders]

    def _all_orders(self, request: _Request) -> list[dict[str, Any]]:
        params = request.params
        self._check_symbol(params)
        orders = [o for o in self._orders if self._visible(o)]
        from_id = _int_param(params, "orderId", None)
        start = _int_param(params, "startTime", None)
        end = _int_param(params, "endTime", None)
        if from_id is not None:
            orders = [o for o in orders if o.order_id >= from_id]
        if start is not None:
            orders = [o for o in orders if o.time >= start]
        if end is not None:
            orders = [o for o in orders if o.time <= end]
        limit = min(max(_int_param(params, "limit", 500), 1), 1000)
        chosen = orders[:limit] if (from_id is not None or start is not None) else orders[-limit:]
        return [self._order_json(o) for o in chosen]

    def _my_trades(self, request: _Request) -> list[dict[str, Any]]:
        params = request.params
        self._check_symbol(params)
        hidden = {o.order_id for o in self._orders if o.hidden_reads > 0 and not self._visible(o)}
        trades = [t for t in self._trades if t["orderId"] not in hidden]
        order_id = _int_param(params, "orderId", None)
        start = _int_param(params, "startTime", None)
        end = _int_param(params, "endTime", None)
        from_id = _int_param(params, "fromId", None)
        if order_id is not None:
            trades = [t for t in trades if t["orderId"] == order_id]
        if start is not None:
            trades = [t for t in trades if t["time"] >= start]
        if end is not None:
            trades = [t for t in trades if t["time"] <= end]
        if from_id is not None:
            trades = [t for t in trades if t["id"] >= from_id]
        limit = min(max(_int_param(params, "limit", 500), 1), 1000)
        ascending = from_id is not None or start is not None
        chosen = trades[:limit] if ascending else trades[-limit:]
        return [dict(t) for t in chosen]

    # ------------------------------------------------------------------------- JSON shapes

    def _order_json(self, order: _Order) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "price": _fmt(order.price),
            "origQty": _fmt(order.orig_qty),
            "executedQty": _fmt(order.executed_qty),
            "cummulativeQuoteQty": _fmt(order.cumm_quote),
            "status": order.status,
            "timeInForce": order.time_in_force,
            "type": order.type,
            "side": order.side,
            "stopPrice": _fmt(order.stop_price),
            "icebergQty": "0.00000000",
            "time": order.time,
            "updateTime": order.update_time,
            "isWorking": order.working,
            "workingTime": order.working_time,
            "origQuoteOrderQty": _fmt(order.orig_quote_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def _cancel_json(self, order: _Order, cancel_id: str | None) -> dict[str, Any]:
        body = self._order_json(order)
        for key in ("time", "updateTime", "isWorking", "workingTime", "icebergQty"):
            body.pop(key)
        body["origClientOrderId"] = order.client_order_id
        body["clientOrderId"] = cancel_id or "atbcancel" + secrets.token_hex(8)
        body["transactTime"] = order.update_time
        return body

    # ---------------------------------------------------------------------------- matching

    def _fee_asset_for(self, side: str) -> str:
        if self.fee_asset == "received":
            return self.base if side == "BUY" else self.quote
        return self.base if self.fee_asset == "base" else self.quote

    def _reservation(self, order: _Order, qty: Decimal) -> Decimal:
        fee_here = self._fee_asset_for(order.side) == order.reserve_asset
        rate = 1 + self.fees if fee_here else Decimal(1)
        if order.side == "BUY":
            return _q8(qty * order.reserve_price * rate)
        return _q8(qty * rate)

    def _reserve(self, order: _Order) -> None:
        order.reserve_asset = self.quote if order.side == "BUY" else self.base
        need = self._reservation(order, order.orig_qty)
        if self._free.get(order.reserve_asset, _ZERO) < need:
            raise BinanceApiError(-2010, "Account has insufficient balance for requested action.")
        self._move(order.reserve_asset, -need, need)
        order.reserved = need

    def _move(self, asset: str, free: Decimal, locked: Decimal = _ZERO) -> None:
        self._free[asset] = self._free.get(asset, _ZERO) + free
        self._locked[asset] = self._locked.get(asset, _ZERO) + locked

    def _release(self, order: _Order, amount: Decimal) -> None:
        amount = min(amount, order.reserved)
        self._move(order.reserve_asset, amount, -amount)
        order.reserved -= amount

    def _close(self, order: _Order, status: str, now: int) -> None:
        self._release(order, order.reserved)
        order.status = status
        order.update_time = now
        order.deferred_price = None

    def _fill_planned(
        self, order: _Order, price: Decimal, t_ms: int, *, maker: bool, pass_now: int
    ) -> None:
        if order.partial_fraction is not None and order.executed_qty == 0:
            first = _floor_step(order.orig_qty * _dec(order.partial_fraction), self.step_size)
            if _ZERO < first < order.orig_qty:
                self._fill(order, first, price, t_ms, maker)
                order.deferred_price = price
                order.deferred_after = pass_now
                order.deferred_maker = maker
                return
        self._fill(order, order.remaining, price, t_ms, maker)

    def _fill(self, order: _Order, qty: Decimal, price: Decimal, t_ms: int, maker: bool) -> None:
        final = qty >= order.remaining
        cost = _q8(qty * price)
        fee_asset = self._fee_asset_for(order.side)
        commission = _q8((qty if fee_asset == self.base else cost) * self.fees)
        self._release(order, order.reserved if final else self._reservation(order, qty))
        if order.side == "BUY":
            self._move(self.quote, -cost)
            self._move(self.base, qty)
        else:
            self._move(self.base, -qty)
            self._move(self.quote, cost)
        self._move(fee_asset, -commission)
        self._next_trade_id += 1
        trade = {
            "symbol": self.symbol,
            "id": self._next_trade_id,
            "orderId": order.order_id,
            "orderListId": -1,
            "price": _fmt(price),
            "qty": _fmt(qty),
            "quoteQty": _fmt(cost),
            "commission": _fmt(commission),
            "commissionAsset": fee_asset,
            "time": int(t_ms),
            "isBuyer": order.side == "BUY",
            "isMaker": maker,
            "isBestMatch": True,
        }
        self._trades.append(trade)
        order.fills.append(
            {
                "price": trade["price"],
                "qty": trade["qty"],
                "commission": trade["commission"],
                "commissionAsset": fee_asset,
                "tradeId": trade["id"],
            }
        )
        order.executed_qty += qty
        order.cumm_quote += cost
        order.update_time = int(t_ms)
        order.status = "FILLED" if final else "PARTIALLY_FILLED"

    def _on_clock_change(self) -> None:
        with self._lock:
            self._match()

    def _match(self) -> None:
        """Fill deferred remainders and resting orders the price path crossed since last time."""
        now = self.clock.now_ms
        for order in self._orders:
            if order.is_open and order.deferred_price is not None and now > order.deferred_after:
                price, order.deferred_price = order.deferred_price, None
                self._fill(order, order.remaining, price, now, order.deferred_maker)
        if now <= self._cursor:
            self._cursor = now
            return
        active = [o for o in self._orders if o.is_open and o.deferred_price is None]
        if active:
            for segment in self._book.segments(self._cursor, now):
                for order in active:
                    if order.is_open and order.deferred_price is None:
                        self._process_segment(order, segment, now)
        self._cursor = now

    def _process_segment(
        self, order: _Order, segment: tuple[float, float, float, float], pass_now: int
    ) -> None:
        t0, p0, t1, p1 = segment
        if not order.working:
            hit = _touch(p0, p1, float(order.stop_price), order.trigger_below)
            if hit is None:
                return
            t0, p0 = t0 + hit * (t1 - t0), p0 + hit * (p1 - p0)
            order.working = True
            order.working_time = int(t0)
            order.update_time = int(t0)
        limit = order.price if order.type in _LIMIT_TYPES else None
        frac = 0.0 if limit is None else _touch(p0, p1, float(limit), order.side == "BUY")
        if frac is None:
            return
        if frac == 0.0:
            price = _to_tick(_dec(round(p0, 10)), self.tick_size)
            if limit is not None:
                price = min(price, limit) if order.side == "BUY" else max(price, limit)
            maker = False
        else:
            assert limit is not None
            price, maker = limit, True
        self._fill_planned(order, price, int(t0 + frac * (t1 - t0)), maker=maker, pass_now=pass_now)


def _error_body(error: BinanceApiError) -> str:
    return json.dumps({"code": error.code, "msg": error.msg})


def _int_param(params: Mapping[str, str], name: str, default: int | None) -> Any:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BinanceApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from None


def _decimal_param(params: Mapping[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not _DECIMAL_RE.match(raw):
        raise BinanceApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal "
            "range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        )
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _mandatory(name) from None
    if value <= 0:
        raise BinanceApiError(-1013, f"Invalid {name}.")
    return value


@cache
def _ccxt_binance_urls() -> dict[str, Any]:
    import ccxt  # imported lazily: the server itself does not need ccxt

    exchange = ccxt.binance()
    try:
        return {
            section: exchange.urls[section]
            for section in ("api", "test", "demo")
            if isinstance(exchange.urls.get(section), dict)
        }
    finally:
        exchange.close()


def _rewrite_urls(value: Any, base_url: str) -> Any:
    if isinstance(value, dict):
        return {key: _rewrite_urls(item, base_url) for key, item in value.items()}
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return base_url + urlsplit(value).path
    if isinstance(value, str) and value.startswith(("ws://", "wss://")):
        return "ws://" + base_url.split("://", 1)[1] + urlsplit(value).path
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small JSON answers must not wait for delayed ACKs
    server_version = "atb-binance-loopback/1.0"
    timeout = 30

    def setup(self) -> None:
        super().setup()
        app: BinanceServer = self.server.app  # type: ignore[attr-defined]
        with app._lock:
            app._connections.add(self.connection)

    def finish(self) -> None:
        app: BinanceServer = self.server.app  # type: ignore[attr-defined]
        with app._lock:
            app._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self.server.app._serve(self, "GET")  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.server.app._serve(self, "POST")  # type: ignore[attr-defined]

    def do_DELETE(self) -> None:
        self.server.app._serve(self, "DELETE")  # type: ignore[attr-defined]

    def do_PUT(self) -> None:
        self.server.app._serve(self, "PUT")  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; ``BinanceServer.requests`` keeps the log."""
