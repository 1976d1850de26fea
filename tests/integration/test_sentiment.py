"""Sentiment: CSV and Fear & Greed sources (HTTP on 127.0.0.1), as-of alignment without look-ahead,
explicit missing-value policy, and a separate sentiment feed equal to the merged column."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.data import generate_ohlcv, make_feed, make_sentiment_feed
from atb_strategies.exceptions import CandleDataError, ConfigurationError
from atb_strategies.sentiment import (
    FearGreedClient,
    align_sentiment,
    generate_sentiment,
    read_sentiment_csv,
)
from atb_strategies.strategies.ml_sentiment import MlSentiment
from tests.conftest import REPO

DAYS = pd.date_range("2024-01-01", periods=10, freq="D")


class _FngServer:
    """A tiny Fear & Greed API on loopback with a request counter and failure switch."""

    def __init__(self) -> None:
        self.hits = 0
        self.fail_next: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if owner.fail_next:
                    self.send_response(owner.fail_next.pop(0))
                    self.end_headers()
                    return
                rows = [
                    {
                        "value": str(20 + i),
                        "value_classification": "Fear",
                        "timestamp": str(int(d.timestamp())),
                    }
                    for i, d in enumerate(DAYS)
                ]
                body = json.dumps(
                    {"name": "Fear and Greed Index", "data": list(reversed(rows))}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def fng_server() -> Iterator[_FngServer]:
    server = _FngServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_fear_greed_client_with_cache_fetches_once_and_sorts(fng_server, tmp_path) -> None:
    client = FearGreedClient(fng_server.url, cache_dir=tmp_path, backoff=0.01)
    first = client.fetch()
    second = FearGreedClient(fng_server.url, cache_dir=tmp_path).fetch()
    assert fng_server.hits == 1
    pd.testing.assert_series_equal(first, second)
    assert list(first.index) == list(DAYS) and first.iloc[0] == 20.0 and first.name == "sentiment"


def test_fear_greed_client_with_5xx_then_success_retries(fng_server, tmp_path) -> None:
    fng_server.fail_next = [503, 429]
    series = FearGreedClient(fng_server.url, retries=2, backoff=0.01).fetch()
    assert fng_server.hits == 3 and len(series) == 10


def test_fear_greed_client_with_persistent_failure_raises_clear_error(fng_server) -> None:
    fng_server.fail_next = [500, 500, 500]
    with pytest.raises(ConfigurationError, match="HTTP 500 after 3 attempts"):
        FearGreedClient(fng_server.url, retries=2, backoff=0.01).fetch()


def test_fear_greed_client_with_expired_cache_asks_again(fng_server, tmp_path) -> None:
    FearGreedClient(fng_server.url, cache_dir=tmp_path).fetch()
    FearGreedClient(fng_server.url, cache_dir=tmp_path, max_cache_age=0.0).fetch()
    assert fng_server.hits == 2


def test_align_sentiment_uses_values_only_after_publication() -> None:
    candles = generate_ohlcv(72, seed=1, start="2024-01-02")
    series = pd.Series(
        [10.0, 20.0, 30.0],
        index=pd.to_datetime(["2024-01-02 00:00", "2024-01-02 10:30", "2024-01-03 00:00"]),
    )
    out = align_sentiment(candles, series, "1h")
    # bar opening 09:00 closes 10:00 < 10:30: still 10; bar opening 10:00 closes 11:00: 20
    assert out.loc["2024-01-02 09:00", "sentiment"] == 10.0
    assert out.loc["2024-01-02 10:00", "sentiment"] == 20.0
    # bar opening 23:00 closes at 00:00, when 30 is published: usable
    assert out.loc["2024-01-02 23:00", "sentiment"] == 30.0
    assert out.loc["2024-01-02 22:00", "sentiment"] == 20.0


def test_align_sentiment_with_missing_values_raises_unless_fill_declared() -> None:
    candles = generate_ohlcv(48, seed=1, start="2024-01-01")
    series = pd.Series([50.0], index=pd.to_datetime(["2024-01-01 12:00"]))
    with pytest.raises(
        CandleDataError, match="No sentiment published before the close of bar 2024-01-01 00:00:00"
    ) as info:
        align_sentiment(candles, series, "1h", max_age=None)
    assert info.value.row == pd.Timestamp("2024-01-01 00:00")
    filled = align_sentiment(candles, series, "1h", max_age=None, fill=50.0)
    assert filled.attrs["sentiment_fill"] == {
        "value": 50.0,
        "bars": 11,
        "first_bar": "2024-01-01 00:00:00",
    }
    with pytest.raises(CandleDataError, match="older than 2D"):
        align_sentiment(generate_ohlcv(200, seed=1, start="2024-01-01 12:00"), series, "1h")


def test_read_sentiment_csv_with_bad_value_names_row(tmp_path: Path) -> None:
    good = tmp_path / "s.csv"
    good.write_text("timestamp,value\n2024-01-01T00:00:00Z,40\n2024-01-02T00:00:00Z,45\n")
    series = read_sentiment_csv(good)
    assert list(series) == [40.0, 45.0] and series.index.tz is None
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2024-01-01,40\n2024-01-02,n/a\n")
    with pytest.raises(CandleDataError, match="'n/a' at 2024-01-02"):
        read_sentiment_csv(bad)


def test_generate_sentiment_never_looks_ahead() -> None:
    candles = generate_ohlcv(2000, seed=4)
    full = generate_sentiment(candles, seed=4)
    cut = candles.index[1200]
    part = generate_sentiment(candles.loc[:cut], seed=4)
    common = part.index[part.index <= cut]
    # values published up to the cut depend only on closes before them
    pd.testing.assert_series_equal(full.loc[common].iloc[1:], part.loc[common].iloc[1:])


@pytest.mark.parametrize("runonce", [True, False])
def test_separate_sentiment_feed_equals_merged_column(runonce: bool) -> None:
    candles = generate_ohlcv(1500, seed=21, start_price=2000.0)
    sentiment = generate_sentiment(candles, seed=21)
    trimmed = candles.loc[sentiment.index[0] :]
    results = []
    for separate in (False, True):
        cerebro = bt.Cerebro(stdstats=False, runonce=runonce, preload=runonce)
        if separate:
            cerebro.adddata(make_feed(trimmed), name="ETHUSDT")
            cerebro.adddata(make_sentiment_feed(sentiment), name="fng")
            params = {"sentiment_feed": "fng"}
        else:
            cerebro.adddata(make_feed(align_sentiment(trimmed, sentiment, "1h")), name="ETHUSDT")
            params = {}
        cerebro.addstrategy(
            MlSentiment, long_threshold=0.001, registry=str(REPO / "models"), **params
        )
        strategy = cerebro.run()[0]
        (data,) = strategy.predictions
        assert data._name == "ETHUSDT"
        results.append(
            (
                np.asarray(strategy.predictions[data].predicted_return.array),
                cerebro.broker.getvalue(),
                len(strategy.trade_records),
            )
        )
    (merged, value_a, trades_a), (separate, value_b, trades_b) = results
    np.testing.assert_array_equal(merged, separate)
    assert value_a == value_b and trades_a == trades_b > 0


def test_sentiment_model_without_sentiment_fails_before_first_bar() -> None:
    cerebro = bt.Cerebro()
    cerebro.adddata(make_feed(generate_ohlcv(500, seed=2)), name="ETHUSDT")
    cerebro.addstrategy(MlSentiment, registry=str(REPO / "models"))
    with pytest.raises(ValueError, match="sentiment"):
        cerebro.run()
