"""Where candles come from: a file, the download cache, a fresh download or the synthetic market.

One function per source, and :func:`load_candles`, which picks the source the way ``atb
backtest`` and ``atb train model`` do. Every function returns validated candles indexed by open
time (naive UTC) with ``attrs["timeframe"]`` and ``attrs["source"]``, a one-line description of
where they came from (printed by the commands and recorded in trained models' metadata).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from atb_strategies.data.download import cache_path, download_ohlcv, read_cache
from atb_strategies.data.loaders import load_ohlcv
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.exchange.client import create_exchange
from atb_strategies.sentiment import align_sentiment, generate_sentiment, read_sentiment_csv


def default_data_dir() -> Path:
    """The download cache folder: ``$ATB_DATA_DIR`` or ``./data``.

    Returns
    -------
    Path
        Relative paths are relative to the current directory.
    """
    return Path(os.environ.get("ATB_DATA_DIR") or "data")


def _described(frame: pd.DataFrame, timeframe: str, source: str) -> pd.DataFrame:
    frame.attrs["timeframe"] = timeframe
    frame.attrs["source"] = source
    return frame


def candles_from_file(
    path: Path,
    timeframe: str | None,
    *,
    calendar: str | None = None,
    adjusted: bool = False,
    tz: str | None = None,
) -> pd.DataFrame:
    """Candles read from a CSV, parquet or feather file (see ``load_ohlcv``).

    Parameters
    ----------
    path : Path
        The file.
    timeframe : str or None
        The candle size, for example ``"1h"`` (candles of another spacing are refused); None
        means the file's own spacing.
    calendar, adjusted, tz
        As for ``load_ohlcv``: the market's trading calendar, whether to use a Yahoo file's
        ``Adj Close``, and the time zone of times without an offset.

    Returns
    -------
    pandas.DataFrame
        ``attrs["source"]`` is the path, ``attrs["timeframe"]`` the candle size.
    """
    frame = load_ohlcv(path, timeframe=timeframe, calendar=calendar, adjusted=adjusted, tz=tz)
    return _described(frame, frame.attrs["timeframe"], str(path))


def synthetic_candles(bars: int, timeframe: str, seed: int) -> pd.DataFrame:
    """Candles of the seeded synthetic market (a demo; no real prices).

    Parameters
    ----------
    bars : int
        How many candles.
    timeframe : str
        The candle size, for example ``"1h"``.
    seed : int
        The generator seed; the same seed gives the same market.

    Returns
    -------
    pandas.DataFrame
        ``attrs["source"]`` is ``"synthetic market (seed S, N bars)"``.
    """
    frame = generate_ohlcv(bars, timeframe=timeframe, seed=seed)
    return _described(frame, timeframe, f"synthetic market (seed {seed}, {bars} bars)")


def cached_candles(symbol: str, timeframe: str, exchange_id: str, data_dir: Path) -> pd.DataFrame:
    """Candles already in the download cache (written by ``atb data download``).

    Parameters
    ----------
    symbol, timeframe, exchange_id : str
        The market, for example ``"BTCUSDT"``, ``"1h"``, ``"binance"``.
    data_dir : Path
        The cache folder (see :func:`default_data_dir`).

    Returns
    -------
    pandas.DataFrame
        ``attrs["source"]`` names the exchange and the cache file.

    Raises
    ------
    ConfigurationError
        When the cache holds nothing for this market; the message says how to fill it.
    """
    path = cache_path(data_dir, exchange_id, symbol, timeframe)
    frame = read_cache(path)
    if frame is None:
        raise ConfigurationError(
            f"No --data file and no cached candles at {path}. Run `atb data download {symbol} "
            f"--timeframe {timeframe} --start-date ...`, pass --download, or give --data FILE."
        )
    return _described(frame, timeframe, f"{exchange_id} candle cache {path}")


def download_candles(
    symbol: str,
    timeframe: str,
    start: str,
    end: str | None,
    exchange_id: str,
    data_dir: Path,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """Candles from the cache after fetching the missing ones from the exchange.

    Parameters
    ----------
    symbol, timeframe, exchange_id : str
        The market, for example ``"BTCUSDT"``, ``"1h"``, ``"binance"``.
    start, end : str or None
        First and last candle (UTC date or time; a date ``end`` includes its whole day; None
        ``end`` means now).
    data_dir : Path
        The cache folder (see :func:`default_data_dir`).
    progress : bool, default True
        Show a progress bar while downloading.

    Returns
    -------
    pandas.DataFrame
        As ``download_ohlcv`` returns it; ``attrs["source"]`` names the exchange and cache.
    """
    exchange = create_exchange(exchange_id)
    return download_ohlcv(
        exchange, symbol, timeframe, start, end, data_dir=data_dir, progress=progress
    )


def load_candles(
    data: Path | None = None,
    synthetic: bool = False,
    timeframe: str | None = "1h",
    bars: int = 6000,
    seed: int = 0,
    *,
    symbol: str | None = None,
    exchange_id: str = "binance",
    data_dir: Path | None = None,
    download: bool = False,
    start: str | None = None,
    end: str | None = None,
    sentiment: Path | None = None,
    synthetic_sentiment: bool = False,
    need_sentiment: bool = False,
    calendar: str | None = None,
    adjusted: bool = False,
    tz: str | None = None,
) -> pd.DataFrame:
    """Candles from exactly one source: ``data``, ``synthetic``, or the cache under ``data_dir``,
    with a ``sentiment`` column when ``need_sentiment`` or a sentiment source is given
    (``attach_sentiment``; ``synthetic`` candles get the synthetic index).

    Parameters
    ----------
    data : Path, optional
        A candles file (:func:`candles_from_file`).
    synthetic : bool, default False
        Use the synthetic market of ``bars`` candles and ``seed`` (:func:`synthetic_candles`).
    timeframe : str or None, default "1h"
        The candle size; None means the ``data`` file's own spacing (1h for the other sources).
    bars, seed : int
        For ``synthetic`` only.
    symbol : str, optional
        The market to read from the cache; needed with ``data_dir``.
    exchange_id : str, default "binance"
        The exchange of the cache (and of the download).
    data_dir : Path, optional
        The download cache, used when neither ``data`` nor ``synthetic`` is given; None means
        there is no cache to fall back on.
    download : bool, default False
        With the cache: fetch what is missing from ``start`` to ``end`` first
        (:func:`download_candles`) instead of only reading it (:func:`cached_candles`).
    start, end : str, optional
        The download range; ``start`` is required with ``download``.
    sentiment, synthetic_sentiment, need_sentiment
        See ``attach_sentiment``.
    calendar, adjusted, tz
        For ``data``: see ``load_ohlcv``.

    Returns
    -------
    pandas.DataFrame
        Candles with ``attrs["timeframe"]`` and ``attrs["source"]``.

    Raises
    ------
    ConfigurationError
        When both or neither of ``data`` and ``synthetic`` are given (and there is no cache),
        when ``download`` has no ``start``, or when the cache is empty.
    """
    if data is not None and synthetic:
        raise ConfigurationError("Give exactly one of data=PATH or synthetic=True.")
    if data is not None:
        frame = candles_from_file(data, timeframe, calendar=calendar, adjusted=adjusted, tz=tz)
        timeframe = frame.attrs["timeframe"]
    else:
        timeframe = timeframe or "1h"
        frame = _candles_without_file(
            synthetic, timeframe, bars, seed, symbol, exchange_id, data_dir, download, start, end
        )
    if need_sentiment or sentiment is not None or synthetic_sentiment:
        frame = attach_sentiment(
            frame,
            timeframe,
            sentiment=sentiment,
            synthetic=synthetic_sentiment or synthetic,
            seed=seed,
        )
    return frame


def _candles_without_file(
    synthetic: bool,
    timeframe: str,
    bars: int,
    seed: int,
    symbol: str | None,
    exchange_id: str,
    data_dir: Path | None,
    download: bool,
    start: str | None,
    end: str | None,
) -> pd.DataFrame:
    if synthetic:
        return synthetic_candles(bars, timeframe, seed)
    if data_dir is None or symbol is None:
        raise ConfigurationError("Give data=PATH or synthetic=True.")
    if download:
        if start is None:
            raise ConfigurationError("download=True needs start_date='YYYY-MM-DD'.")
        return download_candles(symbol, timeframe, start, end, exchange_id, data_dir)
    return cached_candles(symbol, timeframe, exchange_id, data_dir)


def attach_sentiment(
    frame: pd.DataFrame,
    timeframe: str,
    *,
    sentiment: Path | None = None,
    synthetic: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """``frame`` with a ``sentiment`` column as of each bar's close, starting at the first value.

    From the ``sentiment`` CSV (timestamp, value), else the synthetic demo index when
    ``synthetic``; ``attrs["source"]`` is kept.

    Raises
    ------
    ConfigurationError
        When neither source is given.
    """
    if sentiment is not None:
        series = read_sentiment_csv(sentiment)
    elif synthetic:
        series = generate_sentiment(frame, seed=seed)
    else:
        raise ConfigurationError(
            "This model needs sentiment: pass sentiment=PATH (a CSV with timestamp, value) or "
            "synthetic_sentiment=True (a demo index, not real sentiment)."
        )
    out = align_sentiment(frame.loc[series.index[0] :], series, timeframe)
    out.attrs.setdefault("source", frame.attrs.get("source"))
    out.attrs.setdefault("timeframe", timeframe)
    return out
