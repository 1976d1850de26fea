"""The symbols of a portfolio session (``atb live --symbols``), checked before anything connects.

One session trades several pairs from one account: the list must have no duplicates, one quote
currency (the account's), and no more symbols than the exchange's rate limit can serve at the
timeframe. :func:`session_symbols` reads ``--symbol``/``--symbols``/``--symbols-file`` and
applies these rules; :func:`max_symbols` is the rate-limit arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from atb_strategies.exceptions import ConfigurationError

__all__ = [
    "QUOTES",
    "RATE_BUDGET",
    "REQUESTS_PER_SYMBOL_BAR",
    "describe",
    "max_symbols",
    "session_symbols",
    "split_symbol",
]

#: Quote assets recognised at the end of a venue symbol, longest match first.
QUOTES = (
    "FDUSD", "USDT", "USDC", "BUSD", "DAI", "USD", "EUR", "GBP", "JPY", "AUD", "BRL",
    "TRY", "KRW", "BTC", "ETH", "BNB",
)  # fmt: skip
#: Requests one symbol costs per bar at most: candles, a ticker, an order, its status, its
#: trades and a share of the balance refreshes.
REQUESTS_PER_SYMBOL_BAR = 6
#: The share of a bar a session may spend on requests (the rest is slack for retries).
RATE_BUDGET = 0.5


def split_symbol(symbol: str) -> tuple[str, str]:
    """``("BTC", "USDT")`` for ``"BTCUSDT"`` (also ``"BTC/USDT"``).

    Raises
    ------
    ConfigurationError
        No known quote asset ends the symbol.
    """
    if "/" in symbol:
        base, _, quote = symbol.partition("/")
        if base and quote:
            return base, quote.split(":")[0]
    for quote in sorted(QUOTES, key=len, reverse=True):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ConfigurationError(
        f"Cannot tell the quote currency of {symbol!r}: give a symbol that ends in "
        f"{', '.join(QUOTES)} (e.g. BTCUSDT), or BASE/QUOTE."
    )


def max_symbols(timeframe_s: float, rate_limit_ms: float) -> int:
    """How many symbols a session can serve at ``timeframe_s`` seconds per bar when the
    exchange allows one request per ``rate_limit_ms``: ``RATE_BUDGET`` of the bar, divided by
    ``REQUESTS_PER_SYMBOL_BAR`` requests per symbol."""
    if rate_limit_ms <= 0:
        return 10**9
    per_bar = RATE_BUDGET * timeframe_s * 1000.0 / rate_limit_ms
    return max(math.floor(per_bar / REQUESTS_PER_SYMBOL_BAR), 0)


def session_symbols(
    symbol: str,
    symbols: str | None,
    symbols_file: Path | None,
    *,
    timeframe_s: float | None = None,
    rate_limit_ms: float | None = None,
) -> list[str]:
    """The venue symbols of a session, upper-cased, in the order given.

    Parameters
    ----------
    symbol : str
        ``--symbol`` (used when neither ``symbols`` nor ``symbols_file`` is given).
    symbols : str or None
        ``--symbols``: comma-separated.
    symbols_file : Path or None
        ``--symbols-file``: one symbol a line (or comma-separated); ``#`` starts a comment.
    timeframe_s, rate_limit_ms : float, optional
        The bar length and the exchange's minimum spacing of requests: with both, a list
        longer than :func:`max_symbols` is refused with the numbers.

    Raises
    ------
    ConfigurationError
        Both ``--symbols`` and ``--symbols-file``, an unreadable or empty file, an empty
        name, duplicates, more than one quote currency, more symbols than the rate allows.
    """
    if symbols is not None and symbols_file is not None:
        raise ConfigurationError("Give --symbols or --symbols-file, not both.")
    if symbols_file is not None:
        try:
            text = symbols_file.read_text()
        except OSError as e:
            raise ConfigurationError(
                f"--symbols-file {symbols_file}: cannot read it ({e.strerror or e})."
            ) from None
        lines = [line.split("#", 1)[0] for line in text.splitlines()]
        names = [part.strip() for line in lines for part in line.split(",") if part.strip()]
        where = f"--symbols-file {symbols_file}"
        if not names:
            raise ConfigurationError(f"{where} lists no symbol: one a line, e.g. BTCUSDT.")
    elif symbols is not None:
        names = [part.strip() for part in symbols.split(",")]
        where = "--symbols"
        if not any(names) or not all(names):
            raise ConfigurationError(
                f"--symbols takes names separated by commas (BTCUSDT,ETHUSDT). Got {symbols!r}."
            )
    else:
        return [symbol]
    names = [name.upper() for name in names]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigurationError(f"{where} lists {', '.join(duplicates)} more than once.")
    quotes = {name: split_symbol(name)[1] for name in names}
    if len(set(quotes.values())) > 1:
        account = quotes[names[0]]
        others = [name for name in names if quotes[name] != account]
        raise ConfigurationError(
            f"{where} mixes quote currencies ({', '.join(sorted(set(quotes.values())))}): one "
            f"account is valued in one currency, here {account} (that of {names[0]}); "
            f"{', '.join(others)} would need another. Trade them in a second session."
        )
    if timeframe_s is not None and rate_limit_ms is not None:
        allowed = max_symbols(timeframe_s, rate_limit_ms)
        if len(names) > allowed:
            raise ConfigurationError(
                f"{where} lists {len(names)} symbols; at one request per {rate_limit_ms:g} ms "
                f"and {REQUESTS_PER_SYMBOL_BAR} requests per symbol per bar, a "
                f"{timeframe_s:g} s bar serves at most {allowed} (half the bar for requests). "
                "Use fewer symbols or a longer --timeframe."
            )
    return names


def describe(symbols: Sequence[str]) -> str:
    """``"BTCUSDT"`` or ``"BTCUSDT, ETHUSDT (2 symbols)"`` for the session's first line."""
    if len(symbols) == 1:
        return symbols[0]
    return f"{', '.join(symbols)} ({len(symbols)} symbols)"
