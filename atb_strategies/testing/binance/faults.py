"""Fault injection: bounded, thread-safe plans of HTTP failures, rejections and hidden orders.

:class:`FaultInjector` holds the armed faults; :func:`fault_response` builds the answer of an
error-kind fault exactly as Binance (or the gateway in front of it) would send it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from atb_strategies.testing.binance.protocol import BinanceApiError, error_body

__all__ = [
    "ERROR_KINDS",
    "FAULT_KINDS",
    "Fault",
    "FaultInjector",
    "fault_response",
    "reject_response",
]

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

#: Fault kinds that replace the answer (the request is carried out only with ``process=True``).
ERROR_KINDS = frozenset(
    {"429", "418", "500", "502", "503", "504", "html", "not_json", "error", "disconnect"}
)
_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head><body>"
    "<h1>503 Service Unavailable</h1><p>The service is under maintenance.</p></body></html>"
)


@dataclass
class Fault:
    """One armed fault: where it fires, what it does, how many more times.

    Attributes
    ----------
    path_prefix : str
        Requests whose path starts with this match.
    kind : str
        One of :data:`FAULT_KINDS`.
    remaining : int
        Matching requests it still affects.
    method : str or None
        Only this HTTP method, or any.
    options : dict
        Per-kind options (see :meth:`FaultInjector.queue`).
    """

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
        self._faults: list[Fault] = []
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
            ``body`` (5xx and ``not_json``); any kind: ``advance_ms``, moving the market clock
            on by that much each time the fault fires, before the request is answered (an
            outage that lasts while the client retries, independent of wall time).
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
        advance = options.get("advance_ms", 0)
        if not isinstance(advance, int) or advance < 0:
            raise ValueError(f"advance_ms must be an int >= 0. Got {advance!r} instead.")
        with self._lock:
            self._faults.append(
                Fault(
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

    def take(self, method: str, path: str) -> Fault | None:
        """The first armed fault matching the request, counted as fired; None if none."""
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix) and fault.method in (None, method):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    self.fired.append((fault.kind, method, path))
                    return fault
        return None


def fault_response(fault: Fault, now_ms: int) -> tuple[int, str, dict[str, str]]:
    """``(status, body, headers)`` of an error-kind fault fired at market time ``now_ms``."""
    kind, options = fault.kind, fault.options
    if kind in ("429", "418"):
        msg = (
            "Too much request weight used; current limit is 6000 request weight per 1 "
            "MINUTE. Please use WebSocket Streams for live updates to avoid polling the "
            "API."
            if kind == "429"
            else "Way too much request weight used; IP banned until "
            f"{now_ms + 120_000}. Please use WebSocket Streams for live updates "
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
    return error.status, error_body(error), {}


def reject_response(fault: Fault) -> tuple[int, str, dict[str, str]]:
    """``(status, body, headers)`` of a ``reject_order`` fault: a Binance order rejection."""
    error = BinanceApiError(
        int(fault.options.get("code", -2010)),
        str(fault.options.get("msg", "Order rejected.")),
        int(fault.options.get("status", 400)),
    )
    return error.status, error_body(error), {}
