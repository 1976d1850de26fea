"""``SentimentPoller`` and the live sentiment sources: as-of values without look-ahead, one poll
per bar, outages that keep the last value (one warning, one recovery line), a CSV that is read
again only when it changed, and the staleness wording."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import (
    CandleDataError,
    ConfigurationError,
    TemporaryExchangeError,
)
from atb_strategies.sentiment import (
    DEFAULT_MAX_SENTIMENT_AGE,
    CsvSentimentSource,
    FearGreedClient,
    FixedSentimentSource,
    SentimentPoller,
    SyntheticSentimentSource,
    align_sentiment,
    build_sentiment_poller,
    generate_sentiment,
    sentiment_age_limit_hours,
    sentiment_staleness,
)

SERIES = pd.Series(
    [10.0, 20.0, 30.0, 40.0],
    index=pd.to_datetime(
        ["2024-01-01 00:00", "2024-01-01 10:30", "2024-01-02 00:00", "2024-01-05 00:00"]
    ),
)


class FlakySource:
    """A source whose next answers can be made to fail."""

    description = "flaky test source"

    def __init__(self, series: pd.Series) -> None:
        self.series = series
        self.failing = False
        self.fetches = 0

    def fetch(self) -> pd.Series:
        self.fetches += 1
        if self.failing:
            raise TemporaryExchangeError("HTTP 500")
        return self.series


def _poller_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage()) for r in caplog.records if r.name == "atb_strategies.sentiment"
    ]


def test_sentiment_poller_with_value_published_after_close_uses_the_one_before() -> None:
    poller = SentimentPoller(FixedSentimentSource(SERIES))
    # 10:30 is published after the 10:00 close: that bar still gets 10
    assert poller.as_of("2024-01-01 10:00") == (10.0, pd.Timestamp("2024-01-01 00:00"))
    assert poller.as_of("2024-01-01 11:00") == (20.0, pd.Timestamp("2024-01-01 10:30"))
    # published exactly at the close: usable
    assert poller.as_of("2024-01-02 00:00") == (30.0, pd.Timestamp("2024-01-02 00:00"))
    # tz-aware closes are converted to UTC
    assert poller.as_of(pd.Timestamp("2024-01-02 01:00", tz="Europe/Paris"))[0] == 30.0
    assert poller.as_of("2023-12-31 23:00") is None


def test_sentiment_poller_with_many_closes_equals_align_sentiment_with_one_poll() -> None:
    candles = generate_ohlcv(120, seed=1, start="2024-01-01")
    source = FixedSentimentSource(SERIES)
    poller = SentimentPoller(source)
    closes = candles.index + pd.Timedelta(hours=1)
    got = poller.as_of_many(closes)
    assert source.fetches == 1
    want = align_sentiment(candles, SERIES, "1h", max_age=None)["sentiment"].to_numpy()
    np.testing.assert_array_equal(got["sentiment"].to_numpy(), want)
    age = (closes - got["published_at"]) / pd.Timedelta(hours=1)
    np.testing.assert_allclose(got["age_hours"].to_numpy(), age.to_numpy())
    assert got["age_hours"].min() >= 0


def test_sentiment_poller_with_same_bar_asked_again_polls_the_source_once() -> None:
    source = FixedSentimentSource(SERIES)
    poller = SentimentPoller(source)
    for _ in range(3):
        poller.as_of("2024-01-01 12:00")
    poller.as_of("2024-01-01 11:00")  # an earlier bar: no new poll either
    assert source.fetches == 1 and poller.polls == 1
    poller.as_of("2024-01-01 13:00")
    assert source.fetches == 2 and poller.polls == 2


def test_sentiment_poller_with_outage_keeps_last_value_warns_once_and_logs_recovery(
    caplog,
) -> None:
    caplog.set_level(logging.INFO)
    source = FlakySource(SERIES.iloc[:3])
    poller = SentimentPoller(source)
    assert poller.as_of("2024-01-02 01:00") == (30.0, pd.Timestamp("2024-01-02 00:00"))
    source.failing = True
    for hour in range(2, 8):  # six bars in the outage: the value stays and gets older
        value, published = poller.as_of(f"2024-01-02 {hour:02d}:00")
        assert (value, published) == (30.0, pd.Timestamp("2024-01-02 00:00"))
    assert poller.failures == 6 and poller.outage_since == pd.Timestamp("2024-01-02 02:00")
    lines = _poller_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING]
    assert (
        "flaky test source failed at the bar closing 2024-01-02 02:00:00 (HTTP 500)"
        in (lines[0][1])
    )
    source.failing = False
    source.series = SERIES
    assert poller.as_of("2024-01-05 00:00") == (40.0, pd.Timestamp("2024-01-05 00:00"))
    lines = _poller_lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
    assert "answers again" in lines[1][1] and "after 6 failed poll(s)" in lines[1][1]
    assert poller.outage_since is None


def test_sentiment_poller_with_no_value_at_first_poll_raises_one_line() -> None:
    source = FlakySource(SERIES)
    source.failing = True
    poller = SentimentPoller(source)
    with pytest.raises(ConfigurationError) as info:
        poller.as_of("2024-01-02 00:00")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Sentiment source flaky test source gave no value at start: HTTP 500")
    with pytest.raises(ConfigurationError, match="returned no values"):
        SentimentPoller(FixedSentimentSource(SERIES.iloc[:0])).as_of("2024-01-02")


def test_sentiment_poller_with_rewritten_source_that_drops_the_value_in_use_keeps_it() -> None:
    source = FlakySource(SERIES)
    poller = SentimentPoller(source)
    poller.as_of("2024-01-02 01:00")
    source.series = SERIES.iloc[3:]  # now starts on 2024-01-05
    assert poller.as_of("2024-01-02 02:00") == (30.0, pd.Timestamp("2024-01-02 00:00"))
    assert poller.failures == 1


def test_sentiment_poller_with_fear_greed_client_shortens_its_cache_and_owns_failure_logs() -> None:
    client = FearGreedClient("http://127.0.0.1:9", cache_dir=None)
    assert client.max_cache_age == 6 * 3600 and client.log_failures
    SentimentPoller(client)
    assert client.max_cache_age == 30.0 and not client.log_failures
    other = FearGreedClient("http://127.0.0.1:9", max_cache_age=5.0)
    SentimentPoller(other, max_cache_age=None)
    assert other.max_cache_age == 5.0


def test_sentiment_poller_with_object_without_fetch_raises() -> None:
    with pytest.raises(ConfigurationError, match=r"fetch\(\) -> pandas.Series"):
        SentimentPoller(SERIES)


def test_csv_sentiment_source_with_appended_rows_rereads_only_when_changed(tmp_path: Path) -> None:
    path = tmp_path / "sentiment.csv"
    path.write_text("timestamp,value\n2024-01-01T00:00:00Z,40\n2024-01-02T00:00:00Z,45\n")
    source = CsvSentimentSource(path)
    poller = SentimentPoller(source)
    assert poller.as_of("2024-01-02 12:00") == (45.0, pd.Timestamp("2024-01-02"))
    poller.as_of("2024-01-02 13:00")
    assert (source.reads, poller.polls) == (1, 2)  # unchanged file: not read again
    with path.open("a") as f:
        f.write("2024-01-02T13:30:00Z,50\n")
    assert poller.as_of("2024-01-02 14:00") == (50.0, pd.Timestamp("2024-01-02 13:30"))
    assert source.reads == 2


def test_csv_sentiment_source_with_row_being_written_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "sentiment.csv"
    path.write_text("timestamp,value\n2024-01-01T00:00:00Z,40\n2024-01-02T00:00:00Z,4")
    source = CsvSentimentSource(path, settle=60.0)
    assert list(source.fetch()) == [40.0]  # "4" may be the start of "45"
    with path.open("a") as f:
        f.write("5\n")
    assert list(source.fetch()) == [40.0, 45.0]
    # a file without a final newline that has not changed for `settle` seconds is complete
    path.write_text("timestamp,value\n2024-01-01T00:00:00Z,40\n2024-01-02T00:00:00Z,46")
    old = time.time() - 120
    os.utime(path, (old, old))
    assert list(source.fetch()) == [40.0, 46.0]


def test_csv_sentiment_source_with_missing_or_bad_file_raises_for_the_poller(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        CsvSentimentSource(tmp_path / "nope.csv").fetch()
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n2024-01-01T00:00:00Z,40\n2024-01-02T00:00:00Z,n/a\n")
    with pytest.raises(CandleDataError, match="'n/a' at 2024-01-02"):
        CsvSentimentSource(bad).fetch()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CandleDataError, match="cannot be parsed"):
        CsvSentimentSource(empty).fetch()


def test_synthetic_sentiment_source_with_candles_in_chunks_equals_generate_sentiment() -> None:
    candles = generate_ohlcv(24 * 40, seed=5, start="2024-03-01")
    source = SyntheticSentimentSource(seed=3)
    poller = SentimentPoller(source)
    with pytest.raises(ConfigurationError, match="has seen no candles yet"):
        source.fetch()
    poller.observe_candles(candles.iloc[:600])  # 25 days: not enough
    with pytest.raises(ConfigurationError, match="needs 31 days of candles; it has 24 days"):
        poller.as_of(candles.index[599] + pd.Timedelta(hours=1))
    poller = SentimentPoller(source)
    got = []
    # as a live feed: a backfill of 32 days, then one to three bars per poll
    bounds = [0, 24 * 32, *range(24 * 32 + 1, len(candles), 3), len(candles)]
    for lo, hi in itertools.pairwise(bounds):
        chunk = candles.iloc[lo:hi]
        poller.observe_candles(chunk)
        got.append(poller.as_of_many(chunk.index + pd.Timedelta(hours=1)))
    assert poller.polls == len(bounds) - 1
    frame = pd.concat(got)
    full = generate_sentiment(candles, seed=3)
    first = full.index[0] - pd.Timedelta(hours=1)  # the first bar closing at a publication
    want = align_sentiment(candles.loc[first:], full, "1h")["sentiment"]
    want.index = (want.index + pd.Timedelta(hours=1)).as_unit("ns")  # by close
    pd.testing.assert_series_equal(
        frame["sentiment"].dropna(), want, check_names=False, check_freq=False
    )


def test_sentiment_staleness_with_age_within_limit_returns_none() -> None:
    assert DEFAULT_MAX_SENTIMENT_AGE == "36h"
    assert sentiment_staleness(35.9) is None
    assert sentiment_staleness(36.0, "36h") is None
    assert sentiment_staleness(1000.0, None) is None
    assert sentiment_staleness(1000.0, "off") is None


def test_sentiment_staleness_with_age_over_limit_returns_one_line_reason() -> None:
    reason = sentiment_staleness(40.04, "36h")
    assert reason == "sentiment is 40.0 h old, older than max_sentiment_age 36h"
    assert sentiment_staleness(13.0, 12).endswith("max_sentiment_age 12h")
    assert sentiment_staleness(25.0, "1d").endswith("max_sentiment_age 1d")
    assert sentiment_staleness(25.0, pd.Timedelta(days=1)).endswith("max_sentiment_age 24h")
    assert sentiment_staleness(float("nan"), "36h") == "no sentiment value"


@pytest.mark.parametrize("limit", ["soon", "1.5D", "0h", 0, -3, float("nan"), True, [36]])
def test_sentiment_age_limit_hours_with_bad_limit_raises_with_got_instead(limit) -> None:
    with pytest.raises(ConfigurationError, match=r"'max_sentiment_age' parameter .* instead"):
        sentiment_age_limit_hours(limit)


def test_sentiment_age_limit_hours_with_durations_returns_hours() -> None:
    assert sentiment_age_limit_hours("36h") == 36.0
    assert sentiment_age_limit_hours("2d") == 48.0
    assert sentiment_age_limit_hours(pd.Timedelta(minutes=90)) == 1.5
    assert sentiment_age_limit_hours(48) == 48.0


def test_build_sentiment_poller_with_one_source_wraps_it(tmp_path: Path) -> None:
    csv = build_sentiment_poller(csv=tmp_path / "s.csv")
    assert isinstance(csv.source, CsvSentimentSource) and csv.source.path == tmp_path / "s.csv"
    fng = build_sentiment_poller(fear_greed_url="http://127.0.0.1:9", cache_dir=tmp_path)
    assert isinstance(fng.source, FearGreedClient)
    assert (fng.source.retries, fng.source.timeout, fng.source.max_cache_age) == (1, 5.0, 30.0)
    assert fng.source.cache_file == tmp_path / "fear_greed.json"
    synthetic = build_sentiment_poller(synthetic=True, seed=4)
    assert isinstance(synthetic.source, SyntheticSentimentSource) and synthetic.source.seed == 4


@pytest.mark.parametrize(
    ("kwargs", "got"),
    [({}, "none"), ({"csv": "a.csv", "synthetic": True}, "['csv', 'synthetic']")],
)
def test_build_sentiment_poller_without_exactly_one_source_raises(kwargs, got) -> None:
    with pytest.raises(
        ConfigurationError, match=rf"exactly one sentiment source.*Got {re.escape(got)}"
    ):
        build_sentiment_poller(**kwargs)
