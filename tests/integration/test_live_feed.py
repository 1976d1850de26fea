"""``CcxtData`` live sessions: the real ``ccxt.binance`` against the loopback exchange, whole
``cerebro.run()`` calls in live mode.

The market clock starts frozen half-way through a candle (so the forming candle and the
backfill boundary are deterministic) and runs in lockstep with the feed: each time the feed,
having been shown every closed candle, asks the time while it waits, the clock moves to the
next close. Each live poll therefore finds exactly one new candle however slow the machine is.
Nothing is patched: every candle travels over HTTP through ccxt's signing, parsing, rate limiter
and error mapping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.live.runner import build_live_cerebro
from atb_strategies.live.store import CcxtStore
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.testing.binance_server import BinanceServer, synthetic_candles
from tests.conftest import loopback_exchange

pytestmark = pytest.mark.slow  # trains, runs the examples or runs live sessions

REGISTRY = Path(__file__).resolve().parents[2] / "models"
HOUR = 3_600_000
MINUTE = 60_000
FEED_OPTIONS = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}
NOW_ROW = 330  # the clock starts half-way through this hourly candle


def _ms(stamp: Any) -> int:
    return int(pd.Timestamp(stamp).value // 1_000_000)


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(420, seed=3)


def _start(candles: pd.DataFrame, row: int = NOW_ROW) -> int:
    step = (candles.index[1] - candles.index[0]) // pd.Timedelta(milliseconds=1)
    return _ms(candles.index[row]) + step // 2


def _server(
    candles: pd.DataFrame, row: int = NOW_ROW, lockstep: bool = True, **kwargs: Any
) -> BinanceServer:
    start = _start(candles, row)
    return BinanceServer(candles, start_time_ms=start, lockstep=lockstep, **kwargs)


@dataclass
class Bar:
    stamp: pd.Timestamp
    open: float
    high: float
    low: float
    close: float
    volume: float
    status: str
    clock_ms: int


class Recorder(bt.Strategy):
    """Records every bar of every feed and every ``notify_data`` status."""

    params = (("server", None),)

    def __init__(self) -> None:
        self.statuses: list[tuple[str, int]] = []  # (status, bars of data0 seen so far)
        self.bars: dict[str, list[Bar]] = {d._name: [] for d in self.datas}
        self._seen = {d._name: 0 for d in self.datas}

    def notify_data(self, data: Any, status: int, *args: Any, **kwargs: Any) -> None:
        if data is self.datas[0]:
            self.statuses.append((data._getstatusname(status), len(self.bars[data._name])))

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        clock = self.p.server.clock.now_ms
        for data in self.datas:
            if len(data) == self._seen[data._name]:
                continue
            self._seen[data._name] = len(data)
            self.bars[data._name].append(
                Bar(
                    pd.Timestamp(bt.num2date(data.datetime[0])),
                    float(data.open[0]),
                    float(data.high[0]),
                    float(data.low[0]),
                    float(data.close[0]),
                    float(data.volume[0]),
                    data._getstatusname(data._laststatus),
                    clock,
                )
            )


def first_live_callback(hook: Callable[[], None]) -> Callable[..., None]:
    """A data callback running ``hook`` once, when the feed first reports LIVE."""
    state = {"live": 0}

    def callback(data: Any, status: int, *args: Any, **kwargs: Any) -> None:
        if status == data.LIVE:
            state["live"] += 1
            if state["live"] == 1:
                hook()

    return callback


def run_feed(
    server: BinanceServer,
    *,
    store_options: dict[str, Any] | None = None,
    on_first_live: Callable[[], None] | None = None,
    resample: int | None = None,
    **feed_options: Any,
) -> tuple[Recorder, Any]:
    store = CcxtStore(
        exchange="binance", config=server.ccxt_config(rate_limit_ms=1), **(store_options or {})
    )
    data = store.getdata(dataname="BTCUSDT", **{**FEED_OPTIONS, **feed_options})
    cerebro = bt.Cerebro(quicknotify=True, stdstats=False)
    if resample is None:
        cerebro.adddata(data, name="BTCUSDT")
    else:  # only the resampled clone (backtrader cannot mix it with its live source)
        cerebro.resampledata(
            data, timeframe=bt.TimeFrame.Minutes, compression=resample, name=f"{resample}m"
        )
    cerebro.addstore(store)
    if on_first_live is not None:
        cerebro.adddatacb(first_live_callback(on_first_live))
    cerebro.addstrategy(Recorder, server=server)
    strategy = cerebro.run()[0]
    assert server.internal_errors == []
    return strategy, data


def candle(frame: pd.DataFrame, open_time: pd.Timestamp) -> dict[str, float]:
    row = frame.loc[open_time]
    return {k: float(row[k]) for k in ("open", "high", "low", "close", "volume")}


def assert_bar_equals_candle(bar: Bar, frame: pd.DataFrame, step: pd.Timedelta) -> None:
    expected = candle(frame, bar.stamp - step)
    got = {k: getattr(bar, k) for k in expected}
    # the exchange sends prices as strings with 8 decimals
    assert got == pytest.approx(expected, rel=0, abs=1e-8), bar.stamp


# ------------------------------------------------------------------ one plain live session


@dataclass
class PlainSession:
    candles: pd.DataFrame
    strategy: Recorder
    bars: list[Bar] = field(default_factory=list)
    klines_requests: int = 0


@pytest.fixture(scope="module")
def plain_session(hourly: pd.DataFrame) -> Iterator[PlainSession]:
    """Backfill 24 closed bars with the clock frozen mid-candle, then 6 live bars."""
    with _server(hourly) as server:
        strategy, _ = run_feed(server, bar="1h", backfill_bars=24, max_live_bars=6)
        yield PlainSession(
            hourly,
            strategy,
            strategy.bars["BTCUSDT"],
            server.count("/api/v3/klines", "GET"),
        )


def test_ccxt_data_with_backfill_then_live_reports_delayed_live_disconnected(plain_session):
    statuses = plain_session.strategy.statuses
    assert [s for s, _ in statuses] == ["DELAYED", "LIVE", "DISCONNECTED"]
    assert statuses[0][1] == 0  # DELAYED before the first bar
    assert statuses[1][1] == 24  # LIVE after exactly the 24 backfilled bars
    assert statuses[2][1] >= 24 + 6
    delivered = [b.status for b in plain_session.bars]
    assert delivered[:24] == ["DELAYED"] * 24
    assert set(delivered[24:]) == {"LIVE"}


def test_ccxt_data_with_clock_mid_candle_backfills_only_closed_candles(plain_session):
    backfill = plain_session.bars[:24]
    opens = [b.stamp - pd.Timedelta(hours=1) for b in backfill]
    index = plain_session.candles.index
    # the clock stood at NOW_ROW + 30 min: candle NOW_ROW was forming and is not backfilled
    assert opens == list(index[NOW_ROW - 24 : NOW_ROW])


def test_ccxt_data_with_live_session_delivers_server_candles_never_the_forming_one(plain_session):
    step = pd.Timedelta(hours=1)
    for bar in plain_session.bars:
        open_ms = _ms(bar.stamp - step)
        assert open_ms + HOUR <= bar.clock_ms, f"{bar.stamp} delivered before it closed"
        assert_bar_equals_candle(bar, plain_session.candles, step)


def test_ccxt_data_with_live_session_has_no_duplicate_or_missing_bars(plain_session):
    stamps = [b.stamp for b in plain_session.bars]
    assert stamps == list(pd.date_range(stamps[0], periods=len(stamps), freq="1h"))
    assert len(stamps) >= 30
    assert plain_session.klines_requests >= 7  # one backfill, then one poll per live bar or more


def test_ccxt_data_with_default_stamp_stamps_bars_with_candle_close_time(plain_session):
    first = plain_session.bars[0]
    assert first.stamp == plain_session.candles.index[NOW_ROW - 24] + pd.Timedelta(hours=1)


# ------------------------------------------------------------------ other configurations


def test_ccxt_data_with_historical_stops_after_backfill(hourly):
    with _server(hourly) as server:
        strategy, _ = run_feed(server, bar="1h", backfill_bars=12, historical=True)
        assert server.lockstep.steps == 0  # never went LIVE: the clock never moved
        assert server.clock.now_ms == _start(hourly)
        assert server.count("/api/v3/klines", "GET") == 1
    assert strategy.statuses == [("DELAYED", 0), ("DISCONNECTED", 12)]
    bars = strategy.bars["BTCUSDT"]
    assert [b.stamp for b in bars] == list(
        hourly.index[NOW_ROW - 12 : NOW_ROW] + pd.Timedelta(hours=1)
    )


def test_ccxt_data_with_stamp_open_stamps_bars_with_candle_open_time(hourly):
    with _server(hourly) as server:
        strategy, _ = run_feed(server, bar="1h", backfill_bars=5, historical=True, stamp="open")
    bars = strategy.bars["BTCUSDT"]
    assert [b.stamp for b in bars] == list(hourly.index[NOW_ROW - 5 : NOW_ROW])
    for bar in bars:
        assert_bar_equals_candle(bar, hourly, pd.Timedelta(0))


def test_ccxt_data_with_timeframe_the_exchange_lacks_fails_before_start_listing_offered(hourly):
    with _server(hourly) as server:
        offered = r"no '10m' candles; it offers 1s, 1m, 3m, .*, 1h,"
        with pytest.raises(ConfigurationError, match=offered):
            run_feed(server, bar="10m", backfill_bars=5)
        assert server.count("/api/v3/klines") == 0


@pytest.mark.parametrize("kind", ["503", "disconnect", "html"])
def test_ccxt_data_with_fault_during_live_polling_reports_connbroken_then_live_without_gap(
    hourly, kind
):
    with _server(hourly) as server:

        def break_polling() -> None:  # 10 failed polls, the market 15 min on at each
            server.faults.queue("/api/v3/klines", kind, count=10, advance_ms=15 * MINUTE)

        strategy, _ = run_feed(
            server,
            store_options={"retries": 0},
            on_first_live=break_polling,
            bar="1h",
            backfill_bars=6,
            max_live_bars=6,
        )
        faulted = [r for r in server.requests if r.fault == kind]
    assert len(faulted) == 10
    assert faulted[-1].time_ms - faulted[0].time_ms > HOUR  # at least one candle closed meanwhile
    names = [s for s, _ in strategy.statuses]
    # the outage lasted over an hour: candles that closed meanwhile are caught up as DELAYED
    assert names == ["DELAYED", "LIVE", "CONNBROKEN", "DELAYED", "LIVE", "DISCONNECTED"]
    bars = strategy.bars["BTCUSDT"]
    stamps = [b.stamp for b in bars]
    assert stamps == list(pd.date_range(stamps[0], periods=len(stamps), freq="1h"))
    assert len(bars) >= 12
    for bar in bars:
        assert_bar_equals_candle(bar, hourly, pd.Timedelta(hours=1))


def test_ccxt_data_with_one_503_during_live_polling_retries_without_connbroken(hourly):
    with _server(hourly) as server:
        strategy, _ = run_feed(
            server,
            store_options={"retries": 2, "retry_delay": 0.01},
            on_first_live=lambda: server.faults.queue("/api/v3/klines", "503", count=1),
            bar="1h",
            backfill_bars=6,
            max_live_bars=3,
        )
        assert [r.fault for r in server.requests if r.fault] == ["503"]
    assert [s for s, _ in strategy.statuses] == ["DELAYED", "LIVE", "DISCONNECTED"]
    stamps = [b.stamp for b in strategy.bars["BTCUSDT"]]
    assert stamps == list(pd.date_range(stamps[0], periods=len(stamps), freq="1h"))


def test_ccxt_data_with_not_json_answers_during_live_polling_loses_no_bar(hourly):
    # ccxt turns a 200 non-JSON klines body into rows without a timestamp, which its own
    # since-filter drops: the poll looks empty and the next one fetches the candles
    with _server(hourly) as server:
        strategy, _ = run_feed(
            server,
            store_options={"retries": 0},
            on_first_live=lambda: server.faults.queue("/api/v3/klines", "not_json", count=2),
            bar="1h",
            backfill_bars=6,
            max_live_bars=3,
        )
        assert [r.fault for r in server.requests if r.fault] == ["not_json", "not_json"]
    assert [s for s, _ in strategy.statuses] == ["DELAYED", "LIVE", "DISCONNECTED"]
    bars = strategy.bars["BTCUSDT"]
    assert [b.stamp for b in bars] == list(
        pd.date_range(bars[0].stamp, periods=len(bars), freq="1h")
    )
    for bar in bars:
        assert_bar_equals_candle(bar, hourly, pd.Timedelta(hours=1))


def test_ccxt_data_with_several_bars_in_one_poll_delivers_catch_up_as_delayed(hourly):
    """After a stall (5 candles closed at once) the older ones are caught up as DELAYED, so a
    strategy does not trade on stale prices; only the newest is LIVE, and max_live_bars holds."""
    with _server(hourly, lockstep=False) as server:  # frozen until the test moves it
        strategy, _ = run_feed(
            server,
            on_first_live=lambda: server.clock.advance(5 * HOUR),  # 5 candles close at once
            bar="1h",
            backfill_bars=4,
            max_live_bars=1,
        )
    bars = strategy.bars["BTCUSDT"]
    assert [b.status for b in bars[4:]] == ["DELAYED"] * 4 + ["LIVE"]
    assert [b.stamp for b in bars] == list(
        pd.date_range(bars[0].stamp, periods=len(bars), freq="1h")
    )
    assert [s for s, _ in strategy.statuses][-1] == "DISCONNECTED"


def test_resampledata_with_1m_feed_to_5m_equals_pandas_resample_labelled_by_close():
    minutes = synthetic_candles(600, timeframe="1m", seed=3)
    row = 300  # a multiple of 5: the 30 backfilled minutes fill six whole 5m buckets
    with _server(minutes, row=row) as server:
        strategy, _ = run_feed(server, resample=5, bar="1m", backfill_bars=30, max_live_bars=12)
    five = strategy.bars["5m"]
    first_open = minutes.index[row - 30]
    assert five[0].stamp == first_open + pd.Timedelta(minutes=5)
    grouped = minutes.loc[first_open:].resample("5min", closed="left", label="right")
    expected = grouped.agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    assert len(five) >= 8
    # consecutive 5m bars, labelled by their close, each equal to pandas' bucket ...
    assert [b.stamp for b in five] == list(expected.index[: len(five)])
    for bar in five[:-1]:
        want = expected.loc[bar.stamp]
        assert [bar.open, bar.high, bar.low, bar.close] == pytest.approx(
            [want["open"], want["high"], want["low"], want["close"]], rel=0, abs=1e-8
        ), bar.stamp
        assert bar.volume == pytest.approx(want["volume"], rel=1e-9, abs=1e-7), bar.stamp
    # ... except the last one, flushed when the feed stopped: the first k minutes of its bucket
    last = five[-1]
    bucket = minutes.loc[
        last.stamp - pd.Timedelta(minutes=5) : last.stamp - pd.Timedelta(minutes=1)
    ]
    prefixes = [
        [
            bucket["open"].iloc[0],
            bucket["high"].iloc[:k].max(),
            bucket["low"].iloc[:k].min(),
            bucket["close"].iloc[k - 1],
        ]
        for k in range(1, 6)
    ]
    got = [last.open, last.high, last.low, last.close]
    assert any(got == pytest.approx(p, rel=0, abs=1e-8) for p in prefixes), got


# ------------------------------------------------------------------ live vs backtest parity


@pytest.fixture(scope="module")
def parity(hourly: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """MlBasic paper-traded live (300 backfilled bars, 8 live), then backtested on the same
    candles with trading from the first live bar."""
    lines: list[str] = []
    with _server(hourly) as server:
        store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
        cerebro = build_live_cerebro(
            MlBasic,
            store=store,
            symbol="BTCUSDT",
            timeframe="1h",
            paper=True,
            cash=10_000.0,
            journal=None,
            backfill_bars=300,
            max_bars=8,
            kill_switch=None,
            on_stop="cancel",
            echo=lines.append,
            feed_options=FEED_OPTIONS,
            broker_options={"slippage": 0.0, "fee": 0.001},
            registry=str(REGISTRY),
            long_threshold=0.0,
        )
        live = cerebro.run()[0]
        assert server.internal_errors == []
    data = live.datas[0]
    stamps = [pd.Timestamp(bt.num2date(x)) for x in data.datetime.array]
    opens = [s - pd.Timedelta(hours=1) for s in stamps]
    first_live = pd.Timestamp(live.decisions[0]["bar"])
    backtest = run_backtest(
        hourly.loc[opens[0] : opens[-1]],
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        cash=10_000.0,
        commission=0.001,
        start=first_live - pd.Timedelta(hours=1),
        registry=str(REGISTRY),
        long_threshold=0.0,
    )
    yield {"live": live, "backtest": backtest, "stamps": stamps, "lines": lines}


def _prediction_lines(strategy: Any) -> dict[pd.Timestamp, tuple[float, ...]]:
    data = strategy.datas[0]
    pred = strategy.predictions[data]
    out = {}
    for i, x in enumerate(data.datetime.array):
        values = tuple(
            float(getattr(pred.lines, name).array[i])
            for name in ("predicted_price", "predicted_return", "confidence", "direction")
        )
        if not math.isnan(values[1]):
            out[pd.Timestamp(bt.num2date(x))] = values
    return out


def test_live_run_with_same_candles_as_backtest_gives_identical_predictions(parity):
    live, backtest = parity["live"], parity["backtest"].strategy
    live_preds = _prediction_lines(live)
    test_preds = _prediction_lines(backtest)
    live_bars = [pd.Timestamp(d["bar"]) for d in live.decisions]
    assert len(live_bars) >= 8
    assert live_preds  # predictions exist on the backfilled bars too
    for stamp in live_bars:
        assert live_preds[stamp] == test_preds[stamp], stamp  # exact, not approximate
    # and on every warmed-up backfilled bar
    assert {s: live_preds[s] for s in live_preds} == {s: test_preds[s] for s in live_preds}


def test_live_run_with_same_candles_as_backtest_makes_the_same_decisions(parity):
    live = parity["live"].decisions
    test = {d["bar"]: d for d in parity["backtest"].decisions}
    assert live, "the live run traded no bar"
    assert {d["action"] for d in live} & {"enter_long", "exit"}, "choose a threshold that trades"
    for decision in live:
        other = test[decision["bar"]]
        for key in ("predicted_return", "predicted_price", "confidence", "signal", "action"):
            assert decision[key] == other[key], (decision["bar"], key)
        assert math.copysign(1, decision["position"]) == math.copysign(1, other["position"])
        assert (decision["position"] == 0) == (other["position"] == 0)


def test_live_status_with_paper_session_prints_one_line_per_live_bar(parity):
    lines = parity["lines"]
    live = parity["live"].decisions
    assert len(lines) == len(live)
    for line, decision in zip(lines, live, strict=True):
        assert "BTCUSDT" in line and "model=BTCUSDT/basic@" in line
        assert f"signal={decision['signal']}" in line and f"action={decision['action']}" in line


# ------------------------------------------------------------------ backfill paging

PAGING_FEED_OPTIONS = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}


def test_backfill_with_page_limit_above_exchange_cap_pages_to_the_last_closed_candle() -> None:
    """A short page is not the end: with page_limit above the exchange's 1000-candle cap the
    feed keeps paging up to the last closed candle."""
    seen: list[tuple[pd.Timestamp, str]] = []

    class Watch(bt.Strategy):
        def next(self) -> None:
            status = self.data._getstatusname(self.data._laststatus)
            seen.append((bt.num2date(self.data.datetime[0]), status))

    candles = generate_ohlcv(2600, seed=9)
    with loopback_exchange(candles) as server:  # clock at the end: every candle is closed
        store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
        data = store.getdata(
            dataname="BTCUSDT",
            bar="1h",
            backfill_bars=2500,
            page_limit=1500,
            historical=True,
            **PAGING_FEED_OPTIONS,
        )
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(data, name="BTCUSDT")
        cerebro.addstrategy(Watch)
        cerebro.run()
    assert len(seen) == 2500
    assert seen[-1][0] == candles.index[-1] + pd.Timedelta(hours=1)  # the last closed candle
    assert all(status != "LIVE" for _, status in seen)
