"""The offline demo exchange behind ``atb live ... --exchange loopback``.

:func:`demo_exchange` starts the loopback Binance (:class:`~atb_strategies.testing.binance.
BinanceServer`) on 127.0.0.1 with candles for every requested symbol (seeded synthetic ones, or
a CSV per symbol), the market clock placed so that ``backfill_bars`` candles have closed, and
either running fast (one candle per second) or in lockstep with the client (one candle per
wait of the feed; what the tests use). :func:`demo_client` is the ``ccxt.binance`` aimed at it,
with the server's fake keys for real orders: keys from the environment are never read, so they
never reach the demo server.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from atb_strategies.data.loaders import load_ohlcv
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.live.portfolio import split_symbol
from atb_strategies.testing.binance import BinanceServer, interval_to_ms

__all__ = ["DEMO_CLOCKS", "demo_client", "demo_exchange", "parse_demo_data"]

#: Market clocks of the demo: one candle per wall second, or one per wait of the client.
DEMO_CLOCKS = ("fast", "lockstep")
#: A plausible first price per base asset (others start at 100).
_PRICES = {"BTC": 30_000.0, "ETH": 2_000.0, "SOL": 100.0, "BNB": 300.0, "XRP": 0.5}
#: Candles served after the start of the session (a fast clock runs out after them).
_LIVE_CANDLES = 2_000


def parse_demo_data(specs: Sequence[str]) -> dict[str, Path]:
    """``{"BTCUSDT": Path("btc.csv")}`` from ``("BTCUSDT=btc.csv",)`` (``--demo-data``)."""
    out: dict[str, Path] = {}
    for spec in specs:
        symbol, sep, file = spec.partition("=")
        if not sep or not symbol or not file:
            raise ConfigurationError(
                f"--demo-data takes SYMBOL=FILE (e.g. BTCUSDT=candles.csv). Got {spec!r}."
            )
        out[symbol.strip().upper()] = Path(file)
    return out


def demo_exchange(
    symbols: Sequence[str],
    timeframe: str,
    *,
    backfill_bars: int,
    clock: str = "fast",
    data: Mapping[str, Path] | None = None,
    cash: float = 10_000.0,
) -> BinanceServer:
    """A started loopback Binance serving ``symbols`` at ``timeframe`` (stop it when done).

    Parameters
    ----------
    symbols : sequence of str
        Venue symbols (``"BTCUSDT"``), all in one quote asset (the account currency).
    timeframe : str
        Candle size; a Binance interval of one minute or longer.
    backfill_bars : int
        Closed candles there are when the session starts.
    clock : {"fast", "lockstep"}
        One candle per wall second, or one per wait of the client (deterministic).
    data : mapping of str to Path, optional
        Candles (a CSV ``load_ohlcv`` reads) for some symbols; the others get seeded synthetic
        candles. The clock starts after the ``backfill_bars``-th candle of the first file.
    cash : float
        The account's free quote balance (its base assets start at zero).

    Raises
    ------
    ConfigurationError
        Mixed quote assets, an unserved timeframe, ``data`` for a symbol not traded or with
        too few candles.
    """
    data = dict(data or {})
    step = interval_to_ms(timeframe)
    if step is None or step < 60_000:
        raise ConfigurationError(
            f"--exchange loopback serves Binance intervals of one minute or longer (1m, 1h, "
            f"4h, 1d...). Got --timeframe {timeframe!r}."
        )
    if clock not in DEMO_CLOCKS:
        raise ConfigurationError(f"--demo-clock is one of {', '.join(DEMO_CLOCKS)}.")
    pairs = {symbol: split_symbol(symbol) for symbol in symbols}
    quotes = sorted({quote for _, quote in pairs.values()})
    if len(quotes) > 1:
        raise ConfigurationError(
            f"One account needs one quote currency; the symbols are quoted in {', '.join(quotes)}."
        )
    unknown = sorted(set(data) - set(symbols))
    if unknown:
        raise ConfigurationError(
            f"--demo-data names {', '.join(unknown)}, which the session does not trade "
            f"({', '.join(symbols)})."
        )
    frames = {symbol: load_ohlcv(path, timeframe=timeframe) for symbol, path in data.items()}
    for symbol, frame in frames.items():
        if len(frame) <= backfill_bars:
            raise ConfigurationError(
                f"--demo-data {symbol}={data[symbol]} has {len(frame)} candles: fewer than "
                f"--backfill-bars {backfill_bars} plus one to trade. Lower --backfill-bars."
            )
    tf = pd.Timedelta(milliseconds=step)
    if frames:
        start = next(iter(frames.values())).index[backfill_bars]
    else:
        start = pd.Timestamp("2024-01-01") + backfill_bars * tf
    for symbol in symbols:
        if symbol not in frames:
            base = pairs[symbol][0]
            frames[symbol] = generate_ohlcv(
                backfill_bars + _LIVE_CANDLES,
                timeframe=timeframe,
                seed=zlib.crc32(symbol.encode()) % 10_000,
                start=str(start - backfill_bars * tf),
                start_price=_PRICES.get(base, 100.0),
            )
    first = symbols[0]
    base, quote = pairs[first]
    server = BinanceServer(
        frames[first],
        symbol=first,
        base=base,
        quote=quote,
        timeframe=timeframe,
        start_time_ms=int(start.value // 1_000_000),
        clock_speed=0.0 if clock == "lockstep" else step / 1000.0,
        lockstep=clock == "lockstep",
        balances={quote: cash, **{pairs[s][0]: 0 for s in symbols}},
        tick_size="0.0001",
        step_size="0.0001",
        min_qty="0.0001",
        markets={s: frames[s] for s in symbols[1:]},
    )
    return server.start()


def demo_client(server: BinanceServer, *, with_keys: bool) -> Any:
    """The ``ccxt.binance`` client of ``server`` (its fake keys when ``with_keys``)."""
    import ccxt

    return ccxt.binance(server.ccxt_config(with_keys=with_keys))
