"""``OhlcvData``'s bulk preload (issue 21, a sweep cell's cost): every line, bar time and
length equals backtrader's own ``PandasData`` loading bar by bar, and a whole ML backtest over
it equals one over the bar-by-bar feed; feeds with filters load bar by bar as before."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data.feeds import OhlcvData, datenums, make_feed
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import synthetic_candles


def _loaded(feed: OhlcvData, bulk: bool) -> tuple[dict[str, np.ndarray], OhlcvData]:
    """``feed`` preloaded in a cerebro, by its own ``preload`` (bulk) or ``PandasData``'s."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed)
    feed._start()
    if bulk:
        feed.preload()
    else:
        bt.feeds.PandasData.preload(feed)
    lines = {a: np.frombuffer(getattr(feed.lines, a).array) for a in feed.getlinealiases()}
    return lines, feed


def _assert_same(frame: pd.DataFrame, **kwargs: object) -> dict[str, np.ndarray]:
    expected, slow = _loaded(make_feed(frame, timeframe="1h", **kwargs), bulk=False)
    got, fast = _loaded(make_feed(frame, timeframe="1h", **kwargs), bulk=True)
    assert list(got) == list(expected)
    for alias in expected:
        np.testing.assert_array_equal(got[alias], expected[alias], err_msg=alias)
    assert (len(fast), fast.buflen()) == (len(slow), slow.buflen()) == (0, len(expected["close"]))
    return got


def test_bulk_preload_equals_pandas_data_bar_by_bar() -> None:
    frame = synthetic_candles(300, seed=3)
    frame["volume"] = frame["volume"].round().astype(np.int64)  # an integer column too
    frame.iloc[7, frame.columns.get_loc("high")] = np.nan
    lines = _assert_same(frame)
    assert np.isnan(lines["openinterest"]).all()  # no column: NaN, as PandasData leaves it
    assert np.isnan(lines["high"][7]) and len(lines["close"]) == 300


def test_bulk_preload_keeps_fromdate_and_todate_and_sentiment() -> None:
    frame = synthetic_candles(200, seed=4)
    frame["sentiment"] = np.linspace(-1, 1, len(frame))
    lines = _assert_same(
        frame,
        fromdate=frame.index[20].to_pydatetime(),
        todate=frame.index[150].to_pydatetime(),
    )
    assert "sentiment" in lines and 100 < len(lines["close"]) < 200


def test_bulk_preload_converts_zoned_times_as_pandas_data_does() -> None:
    frame = synthetic_candles(100, seed=5)
    frame.index = frame.index.tz_localize("Europe/Berlin")
    _assert_same(frame)


def test_bar_times_are_converted_once_and_reused() -> None:
    index = synthetic_candles(50, seed=6).index
    first = datenums(index)
    assert datenums(pd.DatetimeIndex(list(index))) is first  # equal times: the same array
    assert datenums(index + pd.Timedelta(hours=1)) is not first


def test_a_feed_with_a_filter_loads_bar_by_bar() -> None:
    frame = synthetic_candles(96, seed=8)
    feed = make_feed(frame, timeframe="1h")
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.resampledata(feed, timeframe=bt.TimeFrame.Minutes, compression=240)
    feed._start()
    assert feed._bulk_columns() is None
    cerebro.run()
    assert len(cerebro.datas[0]) == 96 // 4  # resampled by backtrader's filter, as before


@pytest.fixture
def registry(make_bundle, tmp_path) -> str:
    make_bundle()
    return str(tmp_path / "models")


def test_an_ml_backtest_over_the_bulk_feed_equals_one_loaded_bar_by_bar(
    registry, monkeypatch
) -> None:
    frame = synthetic_candles(500, seed=9)
    params = {"registry": registry, "long_threshold": 0.0, "stop_loss": 0.01}

    def run() -> tuple:
        result = run_backtest(frame, MlBasic, symbol="BTCUSDT", timeframe="1h", **params)
        return result.summary, result.trades, result.equity

    fast = run()
    monkeypatch.setattr(OhlcvData, "_bulk_columns", lambda self: None)
    slow = run()
    assert fast[0] == slow[0] and fast[1] == slow[1]
    pd.testing.assert_frame_equal(fast[2], slow[2])
    assert fast[0]["trades"] > 5
