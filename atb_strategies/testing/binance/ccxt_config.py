"""The ``ccxt.binance`` constructor config that aims every REST (and websocket) URL at loopback."""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

__all__ = ["loopback_ccxt_config"]


def loopback_ccxt_config(
    base_url: str,
    *,
    timeout_ms: int = 10_000,
    rate_limit_ms: int | None = None,
    credentials: tuple[str, str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``ccxt.binance(config)`` dict whose ``api``/``test``/``demo`` URLs all point at ``base_url``.

    Parameters
    ----------
    base_url : str
        ``http://127.0.0.1:PORT``; each URL keeps its path.
    timeout_ms : int
        ccxt request timeout.
    rate_limit_ms : int, optional
        ccxt ``rateLimit``; the rate limiter stays enabled.
    credentials : tuple of str, optional
        ``(apiKey, secret)`` to include.
    **options
        Merged into ``options`` over the loopback defaults (see
        :meth:`~atb_strategies.testing.binance.BinanceServer.ccxt_config`).

    Returns
    -------
    dict
        Constructor config for ``ccxt.binance``.
    """
    urls = {
        section: _rewrite_urls(values, base_url) for section, values in _ccxt_binance_urls().items()
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
    if credentials is not None:
        config["apiKey"], config["secret"] = credentials
    return config


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
