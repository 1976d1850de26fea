"""Download OHLCV candles through ccxt into a parquet cache, resumably.

``download_ohlcv`` pages ``fetch_ohlcv`` forward from the first missing candle, keeps closed
candles only (``open + timeframe <= exchange now``, with "now" asked from the exchange; the last
candle an exchange returns is still forming), validates every row, and saves the cache after
every page, so an interrupted download resumes where it stopped and a re-run fetches only what
is missing at either end. Temporary failures (HTTP 429/418/5xx, timeouts) are retried with
backoff; anything else stops with a message naming the request.

Cache layout: ``<data_dir>/<exchange id>/<SYMBOL>_<timeframe>.parquet``, indexed by candle open
time (naive UTC).
"""

from __future__ import annotations

import logging
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd

from atb_strategies.data.periods import naive_utc, period_end
from atb_strategies.exceptions import CandleDataError
from atb_strategies.exchange.client import exchange_now_ms
from atb_strategies.exchange.retry import call_exchange
from atb_strategies.exchange.symbols import to_ccxt_symbol, to_venue_symbol
from atb_strategies.features.candles import OHLCV, timeframe_to_timedelta, validate_candles

log = logging.getLogger(__name__)


def cache_path(data_dir: Path | str, exchange_id: str, symbol: str, timeframe: str) -> Path:
    """Where the cache for one market and timeframe lives."""
    return Path(data_dir) / exchange_id / f"{to_venue_symbol(symbol)}_{timeframe}.parquet"


def read_cache(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    frame = pd.read_parquet(path)
    return validate_candles(frame, gap_policy="allow", what=str(path))


def _write_cache(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp)
    tmp.replace(path)


def _rows_to_frame(rows: list, action: str) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(
            {c: pd.Series(dtype=np.float64) for c in OHLCV},
            index=pd.DatetimeIndex([], name="timestamp").as_unit("ns"),
        )
    arr = np.array(rows, dtype=object)
    if arr.ndim != 2 or arr.shape[1] < 6 or any(v is None for v in arr[:, :6].ravel()):
        raise CandleDataError(
            f"{action} returned malformed candles (first row {rows[0]!r}); the exchange "
            "answered something that is not OHLCV. Try again later."
        )
    frame = pd.DataFrame(arr[:, 1:6].astype(np.float64), columns=list(OHLCV))
    frame.index = pd.DatetimeIndex(
        pd.to_datetime(arr[:, 0].astype(np.int64), unit="ms"), name="timestamp"
    )
    return frame


def download_ohlcv(
    exchange: ccxt.Exchange,
    symbol: str,
    timeframe: str,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp | None = None,
    *,
    data_dir: Path | str = "data",
    page_limit: int = 1000,
    progress: bool = True,
    retries: int = 4,
    retry_delay: float = 0.5,
) -> pd.DataFrame:
    """Candles of ``symbol`` from ``start`` up to ``end`` (inclusive; ``data.periods``: a bare
    date means its whole day, a time that instant; None = now), cached under ``data_dir``.
    Returns the validated slice."""
    tf = timeframe_to_timedelta(timeframe)
    tf_ms = int(tf / pd.Timedelta(milliseconds=1))
    start_ts = naive_utc(start)
    end_ts = period_end(end) if end is not None else None
    path = cache_path(data_dir, exchange.id, symbol, timeframe)

    def call(fn, *args, action: str, **kwargs):
        return call_exchange(
            fn, *args, action=action, retries=retries, base_delay=retry_delay, **kwargs
        )

    if not exchange.markets:
        call(exchange.load_markets, action=f"{exchange.id}.load_markets()")
    market = to_ccxt_symbol(symbol, exchange.symbols)
    if exchange.timeframes and timeframe not in exchange.timeframes:
        raise CandleDataError(
            f"{exchange.id} has no {timeframe!r} candles; it offers {sorted(exchange.timeframes)}."
        )
    if exchange.has.get("fetchTime"):
        now_ms = int(call(exchange.fetch_time, action=f"{exchange.id}.fetch_time()"))
    else:
        now_ms = exchange_now_ms(exchange)
    last_closed_open = (now_ms // tf_ms) * tf_ms - tf_ms
    stop_ms = last_closed_open + tf_ms
    if end_ts is not None:
        stop_ms = min(stop_ms, int(end_ts.value // 1_000_000) + 1)
    cached = read_cache(path)
    frame = cached if cached is not None else _rows_to_frame([], "")
    start_ms = int(start_ts.value // 1_000_000)
    start_ms = -(-start_ms // tf_ms) * tf_ms
    ranges = []
    if len(frame) == 0:
        ranges.append((start_ms, stop_ms))
    else:
        first_ms = int(frame.index[0].value // 1_000_000)
        last_ms = int(frame.index[-1].value // 1_000_000)
        if start_ms < first_ms:
            ranges.append((start_ms, first_ms))
        if last_ms + tf_ms < stop_ms:
            ranges.append((last_ms + tf_ms, stop_ms))
    total = sum(max(0, (b - a) // tf_ms) for a, b in ranges)
    bar = None
    if progress and total:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"{exchange.id} {market} {timeframe}", unit="bar")
    fetched = 0
    try:
        for lo, hi in ranges:
            cursor = lo
            while cursor < hi:
                action = (
                    f"{exchange.id}.fetch_ohlcv({market!r}, {timeframe!r}, "
                    f"since={pd.Timestamp(cursor, unit='ms')})"
                )
                rows = call(
                    exchange.fetch_ohlcv, market, timeframe, cursor, page_limit, action=action
                )
                if not rows and exchange.last_json_response is None:
                    raise CandleDataError(
                        f"{action} answered something that is not JSON (HTTP body "
                        f"{str(exchange.last_http_response)[:120]!r}); nothing was cached from "
                        "it. Try again later."
                    )
                page = _rows_to_frame(rows, action)
                stamps = page.index.as_unit("ns").asi8 // 1_000_000
                page = page[(stamps >= cursor) & (stamps < hi) & (stamps + tf_ms <= now_ms)]
                if len(page) == 0:
                    break
                page = validate_candles(page, timeframe=timeframe, gap_policy="allow", what=action)
                frame = pd.concat([frame, page])
                frame = frame[~frame.index.duplicated(keep="last")].sort_index()
                _write_cache(path, frame)
                fetched += len(page)
                if bar is not None:
                    bar.update(len(page))
                cursor = int(page.index[-1].value // 1_000_000) + tf_ms
    finally:
        if bar is not None:
            bar.close()
    log.info(
        "%s %s %s: fetched %d new candle(s); cache %s holds %d",
        exchange.id,
        market,
        timeframe,
        fetched,
        path,
        len(frame),
    )
    out = frame.loc[start_ts:] if end_ts is None else frame.loc[start_ts:end_ts]
    out = validate_candles(out, timeframe=timeframe, gap_policy="allow", what=str(path))
    out.attrs["timeframe"] = timeframe
    out.attrs["source"] = f"{exchange.id} {market} via ccxt (cache {path})"
    return out
