"""Live sentiment: ``CcxtSentimentData`` sessions, the real ``ccxt.binance`` against the loopback
exchange and sentiment over HTTP (a Fear & Greed API on 127.0.0.1) or from a CSV.

The market clock starts frozen half-way through a candle and runs in lockstep with the feed:
each time the feed, having been shown every closed candle, waits for the next one, the clock
moves to the next close, so each poll finds exactly one closed candle and the number of
sentiment polls is known. The Fear & Greed server publishes on
the market clock: a value is served only once the market time reached its publication.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.live.feed import CcxtData
from atb_strategies.live.runner import build_live_cerebro
from atb_strategies.live.sentiment_feed import CcxtSentimentData
from atb_strategies.live.store import CcxtStore
from atb_strategies.sentiment import (
    CsvSentimentSource,
    FearGreedClient,
    FixedSentimentSource,
    SentimentPoller,
    SyntheticSentimentSource,
    align_sentiment,
    generate_sentiment,
    sentiment_staleness,
)
from atb_strategies.strategies.ml_sentiment import MlSentiment
from atb_strategies.testing.binance_server import BinanceServer
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # runs live sessions

HOUR = 3_600_000
NOW_ROW = 330  # the clock starts half-way through this hourly candle
FEED_OPTIONS = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(420, seed=3)


def _open_ms(candles: pd.DataFrame, row: int) -> int:
    return int(candles.index[row].value // 1_000_000)


def _server(candles: pd.DataFrame, row: int = NOW_ROW) -> BinanceServer:
    start = _open_ms(candles, row) + HOUR // 2
    return BinanceServer(candles, start_time_ms=start, lockstep=True)


def _close(candles: pd.DataFrame, row: int) -> pd.Timestamp:
    return candles.index[row] + pd.Timedelta(hours=1)


# ------------------------------------------------------------------ helpers


class FngServer:
    """A Fear & Greed API on 127.0.0.1 that publishes ``series`` on the market clock (values
    published after ``clock.now_ms`` are not served yet) and can fail with HTTP 500."""

    def __init__(self, series: pd.Series, now_ms: Callable[[], int]) -> None:
        self.series = series
        self.failing = False
        self.dropping = False  # close the connection without an answer
        self.hits = 0
        self.failed = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if owner.dropping:
                    self.close_connection = True
                    return
                if owner.failing:
                    owner.failed += 1
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                now = pd.Timestamp(now_ms(), unit="ms")
                served = owner.series.loc[:now]
                rows = [
                    {"value": str(int(v)), "timestamp": str(int(t.timestamp()))}
                    for t, v in served.items()
                ]
                body = json.dumps({"name": "Fear and Greed Index", "data": rows[::-1]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fng(hourly: pd.DataFrame) -> Iterator[Callable[[BinanceServer], FngServer]]:
    """Start a Fear & Greed server publishing at 10 past every hour (values 0..99)."""
    started: list[FngServer] = []
    stamps = pd.date_range(hourly.index[0], hourly.index[-1], freq="1h") + pd.Timedelta(minutes=10)
    series = pd.Series(np.arange(len(stamps)) % 100, index=stamps, dtype=float)

    def start(exchange: BinanceServer) -> FngServer:
        server = FngServer(series, lambda: exchange.clock.now_ms)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@dataclass
class Row:
    stamp: pd.Timestamp
    close: float
    sentiment: float
    age: float
    status: str


class Recorder(bt.Strategy):
    """Records each bar's sentiment lines; ``on_bar(strategy)`` runs after each record."""

    params = (("on_bar", None),)

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.statuses: list[str] = []

    def notify_data(self, data: Any, status: int, *args: Any, **kwargs: Any) -> None:
        self.statuses.append(data._getstatusname(status))

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        d = self.data
        self.rows.append(
            Row(
                pd.Timestamp(bt.num2date(d.datetime[0])),
                float(d.close[0]),
                float(d.sentiment[0]),
                float(d.sentiment_age[0]),
                d._getstatusname(d._laststatus),
            )
        )
        if self.p.on_bar is not None:
            self.p.on_bar(self)


def run_session(
    server: BinanceServer,
    sentiment: Any,
    *,
    backfill_bars: int = 12,
    max_live_bars: int | None = 6,
    on_bar: Callable[[Recorder], None] | None = None,
    **feed_options: Any,
) -> tuple[Recorder, Any]:
    store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
    data = store.getdata(
        dataname="BTCUSDT",
        bar="1h",
        backfill_bars=backfill_bars,
        max_live_bars=max_live_bars,
        sentiment=sentiment,
        **{**FEED_OPTIONS, **feed_options},
    )
    cerebro = bt.Cerebro(quicknotify=True, stdstats=False)
    cerebro.adddata(data, name="BTCUSDT")
    cerebro.addstore(store)
    cerebro.addstrategy(Recorder, on_bar=on_bar)
    strategy = cerebro.run()[0]
    assert server.internal_errors == []
    return strategy, data


def expected_as_of(series: pd.Series, close: pd.Timestamp) -> tuple[float, float]:
    """(value, age in hours) of the latest value published at or before ``close``."""
    published = series.loc[:close]
    return float(published.iloc[-1]), (close - published.index[-1]) / pd.Timedelta(hours=1)


# ------------------------------------------------------------------ the as-of value


def test_store_getdata_with_sentiment_builds_the_sentiment_feed(hourly) -> None:
    with _server(hourly) as server:
        store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
        poller = SentimentPoller(FixedSentimentSource(pd.Series([1.0], [hourly.index[0]])))
        with_sentiment = store.getdata(dataname="BTCUSDT", sentiment=poller)
        assert type(with_sentiment) is CcxtSentimentData and with_sentiment.poller is poller
        assert type(store.getdata(dataname="BTCUSDT")) is CcxtData
        assert type(store.getdata(dataname="BTCUSDT", sentiment=None)) is CcxtData
        source = FixedSentimentSource(pd.Series([1.0], [hourly.index[0]]))
        wrapped = store.getdata(dataname="BTCUSDT", sentiment=source)  # a bare source
        assert isinstance(wrapped.poller, SentimentPoller) and wrapped.poller.source is source


def test_ccxt_sentiment_data_with_backfill_and_live_bars_writes_the_value_as_of_each_close(
    hourly,
) -> None:
    # a value every 5 hours, one minute after a bar's close (too late for that bar), plus one
    # published exactly at a close (in time for it); the series reaches past the session's end
    late = pd.date_range(_close(hourly, NOW_ROW - 20), periods=12, freq="5h") + pd.Timedelta(
        minutes=1
    )
    on_time = pd.DatetimeIndex([_close(hourly, NOW_ROW - 6)])
    stamps = late.append(on_time).sort_values()
    series = pd.Series(np.arange(len(stamps), dtype=float) + 50, index=stamps)
    source = FixedSentimentSource(series)
    with _server(hourly) as server:
        strategy, data = run_session(server, SentimentPoller(source), backfill_bars=12)
    rows = strategy.rows
    assert [r.status for r in rows] == ["DELAYED"] * 12 + ["LIVE"] * 6
    assert [r.stamp for r in rows] == [_close(hourly, i) for i in range(NOW_ROW - 12, NOW_ROW + 6)]
    for row in rows:
        value, age = expected_as_of(series, row.stamp)
        assert (row.sentiment, row.age) == pytest.approx((value, age), abs=1e-9), row.stamp
        assert row.age >= 0
    by_close = {r.stamp: r for r in rows}
    just_before = late[late > rows[0].stamp][0] - pd.Timedelta(minutes=1)
    assert by_close[just_before].age == pytest.approx(5 - 1 / 60)  # not the value 1 min later
    assert by_close[on_time[0]].age == 0.0
    # one poll for the backfill, then one per live bar: never more than one per bar
    assert source.fetches == 1 + 6
    # and the same values as a backtest's align_sentiment on the same candles
    opens = [r.stamp - pd.Timedelta(hours=1) for r in rows]
    aligned = align_sentiment(hourly.loc[opens[0] : opens[-1]], series, "1h", max_age=None)
    np.testing.assert_array_equal([r.sentiment for r in rows], aligned["sentiment"].to_numpy())
    assert len(data.sentiment.array) == len(rows)


def test_ccxt_sentiment_data_with_history_starting_mid_backfill_drops_the_bars_before_it(
    hourly, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="atb_strategies.live.sentiment_feed")
    first = _close(hourly, NOW_ROW - 5) + pd.Timedelta(minutes=30)
    series = pd.Series([40.0, 41.0], index=[first, first + pd.Timedelta(hours=2)])
    with _server(hourly) as server:
        strategy, _ = run_session(
            server, FixedSentimentSource(series), backfill_bars=12, max_live_bars=2
        )
    rows = strategy.rows
    # the backfill's first 8 bars close before 40 is published: dropped, not filled
    assert rows[0].stamp == _close(hourly, NOW_ROW - 4)
    assert (rows[0].sentiment, rows[0].age) == (40.0, 0.5)
    assert len(rows) == 4 + 2
    assert all(math.isfinite(r.sentiment) for r in rows)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "dropped the first 8 backfilled bar(s)" in warnings[0]
    assert "the model warms up on the other 4" in warnings[0]


# ------------------------------------------------------------------ Fear & Greed over HTTP


def test_ccxt_sentiment_data_with_fear_greed_outage_keeps_running_with_growing_age(
    hourly, fng, caplog
) -> None:
    caplog.set_level(logging.INFO)
    live_bars: list[int] = []

    def outage(strategy: Recorder) -> None:  # the polls for live bars 3, 4 and 5 fail
        if strategy.rows[-1].status == "LIVE":
            live_bars.append(len(strategy.rows))
            api.failing = len(live_bars) in (2, 3, 4)

    with _server(hourly) as server:
        api = fng(server)
        client = FearGreedClient(api.url, cache_dir=None, retries=1, backoff=0.01)
        poller = SentimentPoller(client, max_cache_age=0.0)
        strategy, _ = run_session(server, poller, backfill_bars=6, max_live_bars=8, on_bar=outage)
    rows = strategy.rows
    live = [r for r in rows if r.status == "LIVE"]
    assert [r.stamp for r in rows] == [_close(hourly, i) for i in range(NOW_ROW - 6, NOW_ROW + 8)]
    assert len(live) == 8 and "CONNBROKEN" not in strategy.statuses  # the feed never stopped
    # published at 10 past each hour: 50 minutes old at each close, then older each bar
    ages = [round(r.age, 4) for r in live]
    assert ages == [0.8333, 0.8333, 1.8333, 2.8333, 3.8333, 0.8333, 0.8333, 0.8333]
    assert live[2].sentiment == live[3].sentiment == live[4].sentiment == live[1].sentiment
    for row in rows:  # outside the outage: the value published 50 minutes before the close
        if row not in live[2:5]:
            assert row.sentiment == api.series.loc[: row.stamp].iloc[-1], row.stamp
    assert api.failed == 3 * 2  # three polls, each tried twice by the client
    assert poller.polls == 1 + 8 and poller.failures == 3
    records = [r for r in caplog.records if r.name.startswith("atb_strategies")]
    problems = [r for r in records if r.levelno >= logging.WARNING]
    assert len(problems) == 1  # one line for the whole outage; the client's retries are quiet
    assert problems[0].name == "atb_strategies.sentiment"
    assert f"failed at the bar closing {live[2].stamp}" in problems[0].getMessage()
    assert "HTTP 500 after 2 attempts" in problems[0].getMessage()
    recovered = [r.getMessage() for r in records if "answers again" in r.getMessage()]
    assert len(recovered) == 1 and "after 3 failed poll(s)" in recovered[0]


def test_ccxt_sentiment_data_with_fear_greed_down_at_start_fails_with_one_line(hourly, fng) -> None:
    with _server(hourly) as server:
        api = fng(server)
        api.failing = True
        client = FearGreedClient(api.url, cache_dir=None, retries=1, backoff=0.01)
        with pytest.raises(ConfigurationError) as info:
            run_session(server, SentimentPoller(client))
        assert server.lockstep.steps == 0  # stopped before the first live bar
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"Sentiment source Fear & Greed index at {api.url} gave no value")
    assert "HTTP 500 after 2 attempts" in message


def test_fear_greed_client_with_connection_dropped_raises_an_atb_error_the_poller_survives(
    hourly, fng
) -> None:
    with _server(hourly) as server:
        api = fng(server)
        client = FearGreedClient(api.url, cache_dir=None, retries=1, backoff=0.01)
        poller = SentimentPoller(client, max_cache_age=0.0)
        close = _close(hourly, NOW_ROW - 1)
        assert poller.as_of(close) == expected_as_of_published(api.series, close)
        api.dropping = True  # urlopen raises http.client.RemoteDisconnected, not a URLError
        with pytest.raises(ConfigurationError, match="RemoteDisconnected"):
            client.fetch()
        # the next bar still gets a value: the latest of the answer kept from before the drop
        served = api.series.loc[: server.clock.now().tz_localize(None)]
        later = close + pd.Timedelta(hours=1)
        assert poller.as_of(later) == expected_as_of_published(served, later)
        assert poller.failures == 1


def expected_as_of_published(series: pd.Series, close: pd.Timestamp) -> tuple[float, pd.Timestamp]:
    published = series.loc[:close]
    return float(published.iloc[-1]), published.index[-1]


# ------------------------------------------------------------------ CSV


def test_ccxt_sentiment_data_with_csv_source_picks_up_appended_rows(hourly, tmp_path) -> None:
    path = tmp_path / "sentiment.csv"
    start = _close(hourly, NOW_ROW - 30)
    path.write_text(
        "timestamp,value\n"
        + "".join(
            f"{(start + pd.Timedelta(hours=6 * k)).isoformat()}Z,{30 + k}\n" for k in range(5)
        )
    )
    appended: list[pd.Timestamp] = []

    def append(strategy: Recorder) -> None:  # after the second live bar: a value 30 min later
        live = [r for r in strategy.rows if r.status == "LIVE"]
        if len(live) == 2 and not appended:
            appended.append(live[-1].stamp + pd.Timedelta(minutes=30))
            with path.open("a") as f:
                f.write(f"{appended[0].isoformat()}Z,77\n")

    source = CsvSentimentSource(path)
    with _server(hourly) as server:
        strategy, _ = run_session(
            server, SentimentPoller(source), backfill_bars=8, max_live_bars=4, on_bar=append
        )
    live = [r for r in strategy.rows if r.status == "LIVE"]
    assert [r.sentiment for r in live] == [34.0, 34.0, 77.0, 77.0]
    assert [r.age for r in live[2:]] == [0.5, 1.5]
    assert live[1].stamp < appended[0] < live[2].stamp
    assert source.reads == 2  # read at the start and once after the append, not every bar


def test_ccxt_sentiment_data_with_no_value_before_the_newest_bar_fails_with_one_line(
    hourly, tmp_path
) -> None:
    path = tmp_path / "sentiment.csv"
    later = _close(hourly, NOW_ROW + 3)
    path.write_text(f"timestamp,value\n{later.isoformat()}Z,50\n")
    with _server(hourly) as server:
        with pytest.raises(ConfigurationError) as info:
            run_session(server, CsvSentimentSource(path))
        assert server.lockstep.steps == 0  # stopped before the first live bar
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"sentiment CSV {path} has no value published at or before "
        f"{_close(hourly, NOW_ROW - 1)} (the close of the newest BTC/USDT 1h bar); its first is "
        f"{later}. Give a source with history up to now."
    )


def test_ccxt_sentiment_data_with_missing_csv_fails_with_one_line(hourly, tmp_path) -> None:
    missing = r"gave no value at start: .* does not exist"
    with _server(hourly) as server, pytest.raises(ConfigurationError, match=missing):
        run_session(server, CsvSentimentSource(tmp_path / "nope.csv"))


# ------------------------------------------------------------------ a sentiment model, live


@pytest.fixture(scope="module")
def long_hourly() -> pd.DataFrame:
    return generate_ohlcv(1000, seed=3)


def test_ml_sentiment_paper_session_with_synthetic_source_predicts_as_the_backtest(
    long_hourly,
) -> None:
    row = 950
    backfill = 800  # the synthetic index needs 31 days of candles
    with _server(long_hourly, row=row) as server:
        store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
        poller = SentimentPoller(SyntheticSentimentSource(seed=0))
        cerebro = build_live_cerebro(
            MlSentiment,
            store=store,
            symbol="BTCUSDT",
            timeframe="1h",
            paper=True,
            cash=10_000.0,
            journal=None,
            backfill_bars=backfill,
            max_bars=4,
            kill_switch=None,
            on_stop="cancel",
            echo=lambda line: None,
            feed_options={**FEED_OPTIONS, "sentiment": poller},
            broker_options={"slippage": 0.0, "fee": 0.001},
            registry=str(REPO / "models"),
            long_threshold=0.0,
        )
        live = cerebro.run()[0]
        assert server.internal_errors == []
    data = live.datas[0]
    stamps = [pd.Timestamp(bt.num2date(x)) for x in data.datetime.array]
    opens = [s - pd.Timedelta(hours=1) for s in stamps]
    # the sentiment line equals the synthetic index of the backfilled candles, as of each close
    backfilled = long_hourly.iloc[row - backfill : row + 4]
    series = generate_sentiment(backfilled, seed=0)
    frame = align_sentiment(long_hourly.loc[opens[0] : opens[-1]], series, "1h")
    np.testing.assert_array_equal(np.asarray(data.sentiment.array), frame["sentiment"].to_numpy())
    assert opens[0] == series.index[0] - pd.Timedelta(hours=1)  # earlier bars were dropped
    assert len(live.decisions) == 4
    first_live = pd.Timestamp(live.decisions[0]["bar"])
    backtest = run_backtest(
        frame,
        MlSentiment,
        symbol="BTCUSDT",
        timeframe="1h",
        cash=10_000.0,
        commission=0.001,
        start=first_live - pd.Timedelta(hours=1),
        registry=str(REPO / "models"),
        long_threshold=0.0,
    ).strategy
    tested = {d["bar"]: d for d in backtest.decisions}
    for decision in live.decisions:
        other = tested[decision["bar"]]
        assert math.isfinite(decision["predicted_return"])
        for key in ("predicted_return", "confidence", "signal", "action"):
            assert decision[key] == other[key], (decision["bar"], key)


def test_ml_sentiment_live_with_stale_sentiment_makes_no_entry_and_says_why(hourly) -> None:
    """The feed's ``sentiment_age`` drives the strategy's ``max_sentiment_age`` guard: with the
    newest value over 40 hours old at the first live bar, a strategy that would enter on any
    prediction (``long_threshold=-1``) enters nothing, and the reason is the shared wording."""
    stamps = pd.date_range(hourly.index[0], _close(hourly, NOW_ROW - 40), freq="6h")
    series = pd.Series(50.0 + np.arange(len(stamps)) % 7, index=stamps)
    with _server(hourly) as server:
        store = CcxtStore(exchange="binance", config=server.ccxt_config(rate_limit_ms=1))
        cerebro = build_live_cerebro(
            MlSentiment,
            store=store,
            symbol="BTCUSDT",
            timeframe="1h",
            paper=True,
            cash=10_000.0,
            journal=None,
            backfill_bars=300,
            max_bars=3,
            kill_switch=None,
            on_stop="cancel",
            echo=lambda line: None,
            feed_options={**FEED_OPTIONS, "sentiment": FixedSentimentSource(series)},
            broker_options={"slippage": 0.0, "fee": 0.001},
            registry=str(REPO / "models"),
            long_threshold=-1.0,
            max_sentiment_age="36h",
        )
        live = cerebro.run()[0]
    assert [d["action"] for d in live.decisions] == ["hold"] * 3
    closes = [_close(hourly, NOW_ROW + i) for i in range(3)]
    assert [pd.Timestamp(d["bar"]) for d in live.decisions] == closes
    ages = [expected_as_of(series, close)[1] for close in closes]
    assert ages[0] > 40
    assert [d["reason"] for d in live.decisions] == [
        sentiment_staleness(age, "36h") for age in ages
    ]
