"""Binance's wire format: error answers, request records, parameter parsing and number strings.

Binance answers errors as ``{"code": -2010, "msg": ...}`` with an HTTP status, reports every
number as a string with eight decimals and rejects malformed parameters with ``-1100``/``-1102``.
Everything here is shared by the endpoints, the matching engine and the HTTP plumbing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from email.message import Message
from typing import Any

__all__ = [
    "ZERO",
    "BinanceApiError",
    "Request",
    "RequestRecord",
    "dec",
    "decimal_param",
    "error_body",
    "floor_step",
    "fmt",
    "int_param",
    "mandatory",
    "q8",
    "to_tick",
]

_DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_E8 = Decimal("0.00000001")

#: ``Decimal(0)``, the neutral balance and quantity.
ZERO = Decimal(0)


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


@dataclass
class RequestRecord:
    """One request received by :class:`~atb_strategies.testing.binance.BinanceServer`.

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
class Request:
    """A parsed request as the endpoints see it.

    Attributes
    ----------
    method, path : str
        HTTP method and URL path.
    params : dict of str to str
        Query string and form body parameters.
    raw_query, raw_body : str
        The exact bytes that were signed (decoded as UTF-8).
    headers : email.message.Message
        Request headers.
    hide_reads : int
        Reads of the order placed by this request that miss it (``hide_order`` fault).
    shown_interval : int or None
        Set by ``/klines`` when its answer showed every closed candle of this interval (ms).
    """

    method: str
    path: str
    params: dict[str, str]
    raw_query: str
    raw_body: str
    headers: Message
    hide_reads: int = 0
    shown_interval: int | None = None


def mandatory(name: str) -> BinanceApiError:
    """The ``-1102`` error for a missing or empty parameter ``name``."""
    return BinanceApiError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def error_body(error: BinanceApiError) -> str:
    """The JSON body of a Binance error answer."""
    return json.dumps({"code": error.code, "msg": error.msg})


def dec(value: object) -> Decimal:
    """``value`` as a Decimal (through ``str`` so floats keep their short repr)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def fmt(value: Decimal | float) -> str:
    """Binance's number string: eight decimals."""
    return f"{dec(value):.8f}" if isinstance(value, Decimal) else f"{value:.8f}"


def q8(value: Decimal) -> Decimal:
    """Round half up to eight decimals (balances, costs, commissions)."""
    return value.quantize(_E8, rounding=ROUND_HALF_UP)


def to_tick(value: Decimal, tick: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    """Round ``value`` to a multiple of ``tick``."""
    return (value / tick).to_integral_value(rounding=rounding) * tick


def floor_step(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` down to a multiple of ``step``."""
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def int_param(params: Mapping[str, str], name: str, default: int | None) -> Any:
    """Integer parameter ``name``, ``default`` when absent or empty; ``-1100`` when malformed."""
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


def decimal_param(params: Mapping[str, str], name: str) -> Decimal | None:
    """Positive decimal parameter ``name``, None when absent; ``-1100``/``-1013`` when bad."""
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
        raise mandatory(name) from None
    if value <= 0:
        raise BinanceApiError(-1013, f"Invalid {name}.")
    return value
