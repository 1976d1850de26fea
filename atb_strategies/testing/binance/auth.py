"""Signed-endpoint authentication: API key, HMAC-SHA256 signature and timestamp window.

A signed request carries the ``X-MBX-APIKEY`` header and a ``signature`` parameter: the
hex HMAC-SHA256, keyed by the secret, of the query string followed by the body (both without
the ``signature`` pair). Its ``timestamp`` must lie within ``recvWindow`` (default 5000 ms, at
most 60000) before the server's time and at most 1000 ms after it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque

from atb_strategies.testing.binance.clock import MarketClock
from atb_strategies.testing.binance.protocol import BinanceApiError, Request, mandatory

__all__ = ["DEFAULT_API_KEY", "DEFAULT_SECRET", "TimeSync", "authenticate"]

DEFAULT_API_KEY = "atb-loopback-api-key"
DEFAULT_SECRET = "atb-loopback-secret"


class TimeSync:
    """The market clock as clients learnt it from ``GET /api/v3/time``.

    Each answer is remembered as an offset from wall time (the last 4096 distinct ones, 500 ms
    apart or more, well inside the 5000 ms default ``recvWindow``), so a client that synced once
    keeps passing the timestamp check after the market clock jumps, as long as the server is not
    strict. The memory is long enough that how often a client polled the time (which depends on
    the machine's speed) never decides whether an older sync is still accepted.
    """

    def __init__(self) -> None:
        self._offsets: deque[int] = deque(maxlen=4096)

    def record(self, now_ms: int) -> None:
        """Remember that a client was told the market time is ``now_ms`` (wall time now)."""
        offset = now_ms - int(time.time() * 1000)
        if not self._offsets or abs(self._offsets[-1] - offset) > 500:
            self._offsets.append(offset)

    def references(self) -> list[int]:
        """Every remembered market clock, extrapolated to now at wall speed (epoch ms)."""
        wall = int(time.time() * 1000)
        return [wall + offset for offset in self._offsets]


def authenticate(
    request: Request,
    *,
    api_key: str,
    secret: str,
    clock: MarketClock,
    sync: TimeSync,
    strict: bool,
) -> None:
    """Raise the Binance error a signed request deserves, or return when it is authentic.

    Parameters
    ----------
    request : Request
        The request, with its raw query and body as signed.
    api_key, secret : str
        Credentials the server accepts.
    clock : MarketClock
        The market clock ``timestamp`` is checked against.
    sync : TimeSync
        Clocks the clients synced to; also accepted unless ``strict``.
    strict : bool
        Accept only the market clock, as the real exchange does.

    Raises
    ------
    BinanceApiError
        ``-2014``/``-2015`` (key, HTTP 401), ``-1102`` (missing parameter), ``-1022``
        (signature), ``-1131`` (``recvWindow`` too large) or ``-1021`` (timestamp).
    """
    key = request.headers.get("X-MBX-APIKEY")
    if not key:
        raise BinanceApiError(-2014, "API-key format invalid.", 401)
    if not hmac.compare_digest(key, api_key):
        raise BinanceApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    signature = request.params.get("signature")
    if not signature:
        raise mandatory("signature")

    def unsigned(raw: str) -> str:
        return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))

    payload = unsigned(request.raw_query) + unsigned(request.raw_body)
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise BinanceApiError(-1022, "Signature for this request is not valid.")
    try:
        stamp = int(request.params["timestamp"])
    except (KeyError, ValueError):
        raise mandatory("timestamp") from None
    try:
        window = int(request.params.get("recvWindow", "5000"))
    except ValueError:
        raise mandatory("recvWindow") from None
    if window > 60_000:
        raise BinanceApiError(-1131, "recvWindow must be less than 60000")
    now = clock.now_ms
    references = [now]
    if not strict:
        references += sync.references()
    if any(ref - window <= stamp <= ref + 1000 for ref in references):
        return
    if stamp > now + 1000:
        raise BinanceApiError(
            -1021, "Timestamp for this request was 1000ms ahead of the server's time."
        )
    raise BinanceApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
