"""Venue-native symbols (``BTCUSDT``) in the registry and params; ccxt's unified form
(``BTC/USDT``) only at the exchange boundary. One pair of functions converts between them."""

from __future__ import annotations

from collections.abc import Iterable

from atb_strategies.exceptions import ConfigurationError

#: Quote assets tried, longest first, when no market list is available.
QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "USD", "BTC", "ETH", "BNB", "TRY")


def to_ccxt_symbol(symbol: str, markets: Iterable[str] | None = None) -> str:
    """``BTCUSDT`` -> ``BTC/USDT`` (uses ``markets`` to disambiguate when given)."""
    if "/" in symbol:
        return symbol
    if markets is not None:
        found = [m for m in markets if m.split(":")[0].replace("/", "") == symbol.upper()]
        if found:
            return min(found, key=lambda m: (":" in m, m))  # spot before derivatives
    for quote in sorted(QUOTES, key=len, reverse=True):
        if symbol.upper().endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[: -len(quote)].upper()}/{quote}"
    raise ConfigurationError(
        f"Cannot split symbol {symbol!r} into base and quote; write it as BASE/QUOTE."
    )


def to_venue_symbol(symbol: str) -> str:
    """``BTC/USDT`` (or ``BTC/USDT:USDT``) -> ``BTCUSDT``."""
    return symbol.split(":")[0].replace("/", "").upper()
