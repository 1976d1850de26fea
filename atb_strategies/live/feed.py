"""``CcxtData``: a live backtrader feed of **closed** candles from a ccxt exchange.

States (reported through ``notify_data``):

* ``DELAYED`` while backfilling ``backfill_bars`` closed candles (paged ``fetch_ohlcv``); these
  bars warm models up, and strategies do not trade them (``MlStrategy.trade_live_only``);
* ``LIVE`` once the backfill is delivered; then the feed polls once shortly after each expected
  candle close (``poll_grace`` seconds), asking for every candle since the last one delivered,
  so a missed poll or a reconnect backfills the gap instead of skipping it;
* ``CONNBROKEN`` while polls fail with temporary errors (retried on the next poll), back to
  ``LIVE`` on success;
* ``DISCONNECTED`` when stopped, after ``historical`` backfill-only runs, or after
  ``max_live_bars``.

Only candles with ``open + timeframe <= exchange now`` are delivered: the last candle
``fetch_ohlcv`` returns is still forming. Bars are never duplicated (each must open after the
last one delivered).

Bar time: by default a bar is stamped with its **close** time (open + timeframe), backtrader's
convention, which keeps ``cerebro.resampledata`` correct; ``stamp="open"`` stamps the open time
like most CSV exports.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import backtrader as bt
import pandas as pd

from atb_strategies.data.feeds import bt_timeframe
from atb_strategies.exceptions import CandleDataError, ConfigurationError, TemporaryExchangeError
from atb_strategies.exchange.symbols import to_ccxt_symbol, to_venue_symbol
from atb_strategies.features.candles import timeframe_to_timedelta

log = logging.getLogger(__name__)

_ST_START, _ST_BACKFILL, _ST_LIVE, _ST_OVER = range(4)


def _timeframe_order(timeframe: str) -> pd.Timedelta:
    """Sort key of ccxt timeframes by length (``1M`` is a month, ``1w`` a week)."""
    try:
        return timeframe_to_timedelta(timeframe)
    except ConfigurationError:
        n = int("".join(c for c in timeframe if c.isdigit()) or 1)
        if timeframe.endswith("s"):
            return pd.Timedelta(seconds=n)
        return pd.Timedelta(days=30 * n) if timeframe.endswith("M") else pd.Timedelta.max


class CcxtData(bt.feed.DataBase):
    """Live candles of one market.

    Parameters
    ----------
    dataname : str
        Symbol, venue-native (``BTCUSDT``) or unified (``BTC/USDT``).
    store : CcxtStore
        The exchange connection.
    bar : str
        Candle size as a ccxt timeframe (``1m``, ``1h``...); sets backtrader's timeframe and
        compression.
    backfill_bars : int
        Closed candles delivered first (DELAYED) to warm models up (default 500).
    poll_grace : float
        Seconds after an expected close before asking for the candle (default 1.0).
    qcheck : float
        Longest time ``_load`` may block waiting (backtrader's live-feed convention).
    historical : bool
        Deliver the backfill, then stop.
    max_live_bars : int or None
        Stop after this many live bars (for tests and demos).
    stamp : str
        ``"close"`` (default) or ``"open"``: which candle time a bar carries.
    page_limit : int
        Candles per ``fetch_ohlcv`` request.
    clock_check : float
        While waiting for a close, re-read the exchange clock at most this often (seconds);
        between reads the last known offset is used.
    """

    params = (
        ("store", None),
        ("bar", "1h"),
        ("backfill_bars", 500),
        ("poll_grace", 1.0),
        ("qcheck", 0.5),
        ("historical", False),
        ("max_live_bars", None),
        ("stamp", "close"),
        ("page_limit", 1000),
        ("clock_check", 30.0),
    )

    def __init__(self, **kwargs: Any) -> None:
        if self.p.store is None:
            raise ConfigurationError("CcxtData needs store=CcxtStore(...).")
        if self.p.stamp not in ("close", "open"):
            raise ConfigurationError(
                f"The 'stamp' parameter of CcxtData must be 'close' or 'open'. "
                f"Got {self.p.stamp!r} instead."
            )
        if self.p.backfill_bars < 1:
            raise ConfigurationError(
                "The 'backfill_bars' parameter of CcxtData must be >= 1 (models need history). "
                f"Got {self.p.backfill_bars!r} instead."
            )
        self._store = self.p.store
        self._tf_ms = int(timeframe_to_timedelta(self.p.bar) / pd.Timedelta(milliseconds=1))
        self._timeframe, self._compression = bt_timeframe(self.p.bar)
        self.p.timeframe, self.p.compression = self._timeframe, self._compression
        if not self.p.name:
            self._name = to_venue_symbol(str(self.p.dataname))
        self._queue: collections.deque = collections.deque()
        self._state = _ST_START
        self._last_open: int | None = None
        self._live_bars = 0
        self._clock_read = 0.0
        self.market_symbol = ""

    # ------------------------------------------------------------------ backtrader protocol

    @property
    def last_close_ms(self) -> int | None:
        """Close time (ms since the epoch, UTC) of the last candle delivered; None before one."""
        return None if self._last_open is None else self._last_open + self._tf_ms

    def islive(self) -> bool:
        return True

    def haslivedata(self) -> bool:
        return bool(self._queue)

    def _timeoffset(self) -> Any:
        import datetime as dt

        return dt.timedelta(milliseconds=self._store.time_offset_ms)

    def start(self) -> None:
        super().start()
        self._store.start(data=self)
        self.market_symbol = to_ccxt_symbol(str(self.p.dataname), self._store.exchange.symbols)
        tfs = self._store.exchange.timeframes or {}
        if tfs and self.p.bar not in tfs:
            # Fail before the first bar: a feed that ends at once would stop the session
            # silently with exit 0.
            self._state = _ST_OVER
            raise ConfigurationError(
                f"{self._store.exchange.id} has no {self.p.bar!r} candles; it offers "
                f"{', '.join(sorted(tfs, key=_timeframe_order))}. Use a model trained on one of "
                "those timeframes."
            )
        self._state = _ST_START

    def stop(self) -> None:
        if self._state != _ST_OVER:
            self._state = _ST_OVER
        self.put_notification(self.DISCONNECTED)

    def _load(self) -> bool | None:
        while True:
            if self._queue:
                live = self._queue[0][1]
                limit = self.p.max_live_bars
                if live and limit is not None and self._live_bars >= limit:
                    self._queue.clear()
                    self.put_notification(self.DISCONNECTED)
                    self._state = _ST_OVER
                    return False
                if self._state == _ST_LIVE:
                    self.put_notification(self.LIVE if live else self.DELAYED)
                self._write(self._queue.popleft())
                return True
            if self._state == _ST_OVER:
                return False
            if self._state == _ST_START:
                self.put_notification(self.DELAYED)
                self._backfill()
                self._state = _ST_BACKFILL
                continue
            if self._state == _ST_BACKFILL:
                if self.p.historical:
                    self.put_notification(self.DISCONNECTED)
                    self._state = _ST_OVER
                    return False
                self.put_notification(self.LIVE)
                self._state = _ST_LIVE
                continue
            # live
            if self.p.max_live_bars is not None and self._live_bars >= self.p.max_live_bars:
                self.put_notification(self.DISCONNECTED)
                self._state = _ST_OVER
                return False
            got = self._poll()
            if got is None:
                return None
            if not got:
                return None

    # ------------------------------------------------------------------ fetching

    def _fetch_closed(self, since: int) -> list[list[float]]:
        """Closed candles opening at or after ``since``, paged, validated, oldest first."""
        now = self._store.now_ms()
        out: list[list[float]] = []
        cursor = since
        while True:
            rows = self._store.call(
                "fetch_ohlcv", self.market_symbol, self.p.bar, cursor, self.p.page_limit
            )
            fresh = []
            for row in rows:
                if row is None or len(row) < 6 or any(v is None for v in row[:6]):
                    raise CandleDataError(
                        f"{self._store.exchange_id} returned a malformed candle {row!r} for "
                        f"{self.market_symbol} {self.p.bar}."
                    )
                ts = int(row[0])
                if ts < cursor or ts + self._tf_ms > now:
                    continue  # before the request, or still forming
                if self._last_open is not None and ts <= self._last_open:
                    continue
                if out and ts <= out[-1][0]:
                    continue
                o, h, lo, c, v = (float(x) for x in row[1:6])
                if not (lo <= min(o, c) and max(o, c) <= h and lo > 0 and v >= 0):
                    raise CandleDataError(
                        f"{self._store.exchange_id} candle {pd.Timestamp(ts, unit='ms')} of "
                        f"{self.market_symbol} is inconsistent: {row[:6]!r}."
                    )
                fresh.append([ts, o, h, lo, c, v])
            out.extend(fresh)
            # Stop when nothing new came back or the last closed candle is in; a short page
            # proves nothing (exchanges cap pages below ``page_limit``: 300 on some).
            last_closed_open = (now // self._tf_ms) * self._tf_ms - self._tf_ms
            if not fresh or int(fresh[-1][0]) >= last_closed_open:
                return out
            cursor = int(fresh[-1][0]) + self._tf_ms

    def _backfill(self) -> None:
        now = self._store.now_ms()
        last_closed_open = (now // self._tf_ms) * self._tf_ms - self._tf_ms
        since = last_closed_open - (self.p.backfill_bars - 1) * self._tf_ms
        bars = self._fetch_closed(since)
        log.info("%s %s: backfilled %d closed bar(s)", self.market_symbol, self.p.bar, len(bars))
        self._queue.extend((b, False) for b in bars)

    def _poll(self) -> bool | None:
        """Fetch newly closed candles; True if some were queued, None while waiting."""
        next_close = (self._last_open + 2 * self._tf_ms) if self._last_open is not None else 0
        if time.monotonic() - self._clock_read >= self.p.clock_check:
            self._clock_read = time.monotonic()
            try:
                now = self._store.now_ms()
            except TemporaryExchangeError:
                now = self._store.estimated_now_ms()
        else:
            now = self._store.estimated_now_ms()
        wait_s = (next_close - now) / 1000 + self.p.poll_grace
        if wait_s > 0:
            time.sleep(max(0.0, min(wait_s, self._qcheck)))
            return None
        since = (self._last_open + self._tf_ms) if self._last_open is not None else 0
        try:
            bars = self._fetch_closed(since)
        except TemporaryExchangeError as e:
            log.warning("%s: poll failed (%s); will retry", self.market_symbol, e)
            self.put_notification(self.CONNBROKEN)
            time.sleep(min(self.p.qcheck, 1.0))
            return None
        if not bars:
            if self._laststatus == self.CONNBROKEN:
                self.put_notification(self.LIVE)  # reachable again, nothing new yet
            time.sleep(min(self.p.qcheck, 0.2))
            return None
        now = self._store.estimated_now_ms()
        # Bars closed more than one bar ago are catch-up (after a stall or outage): deliver
        # them as DELAYED so strategies do not trade on stale prices.
        self._queue.extend((b, b[0] + 2 * self._tf_ms >= now) for b in bars)
        return True

    def _write(self, item: tuple[list[float], bool]) -> None:
        (ts, o, h, lo, c, v), live = item
        self._last_open = int(ts)
        stamp = ts + self._tf_ms if self.p.stamp == "close" else ts
        self.lines.datetime[0] = bt.date2num(pd.Timestamp(stamp, unit="ms").to_pydatetime())
        self.lines.open[0] = o
        self.lines.high[0] = h
        self.lines.low[0] = lo
        self.lines.close[0] = c
        self.lines.volume[0] = v
        self.lines.openinterest[0] = 0.0
        if live:
            self._live_bars += 1
