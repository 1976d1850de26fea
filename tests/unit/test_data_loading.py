"""Loading candles from files, the synthetic market, backtrader feeds with the right timeframe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.data.feeds import OhlcvData, SentimentData, make_feed
from atb_strategies.data.loaders import CandleReport, Gap, infer_timeframe, load_ohlcv
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import CandleDataError, ConfigurationError

OHLCV = ["open", "high", "low", "close", "volume"]


def write(frame: pd.DataFrame, path: Path) -> Path:
    """Write candles as an exchange export would: a ``timestamp`` column, no index."""
    table = frame.reset_index()
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_feather(path)
    return path


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(500, timeframe="1h", seed=11)


# ---------------------------------------------------------------- load_ohlcv


def test_load_ohlcv_with_csv_parquet_and_feather_returns_same_frame(hourly, tmp_path) -> None:
    frames = {
        suffix: load_ohlcv(write(hourly, tmp_path / f"candles{suffix}"))
        for suffix in (".csv", ".parquet", ".feather")
    }
    csv = frames[".csv"]
    assert list(csv.columns) == OHLCV
    assert isinstance(csv.index, pd.DatetimeIndex) and csv.index.name == "timestamp"
    assert csv.index.tz is None
    np.testing.assert_array_equal(csv.index.asi8, hourly.index.as_unit("ns").asi8)
    np.testing.assert_array_equal(csv.to_numpy(), hourly.to_numpy())
    for suffix in (".parquet", ".feather"):
        pd.testing.assert_frame_equal(frames[suffix], csv, check_index_type=True)
        assert frames[suffix].attrs["timeframe"] == "1h"
        assert frames[suffix].attrs["report"] == csv.attrs["report"]


def test_load_ohlcv_with_uppercase_columns_and_tz_aware_stamps_normalises(hourly, tmp_path) -> None:
    table = hourly.reset_index()
    table["timestamp"] = table["timestamp"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
    table.columns = [c.upper() for c in table.columns]
    path = tmp_path / "upper.csv"
    table.to_csv(path, index=False)
    frame = load_ohlcv(path)
    assert list(frame.columns) == OHLCV
    assert frame.index.tz is None
    assert frame.index[0] == hourly.index[0]  # read as UTC, stored naive


@pytest.mark.parametrize("timeframe", ["15m", "1h", "4h", "1d"])
def test_load_ohlcv_with_regular_candles_infers_timeframe(timeframe, tmp_path) -> None:
    frame = generate_ohlcv(60, timeframe=timeframe, seed=1)
    loaded = load_ohlcv(write(frame, tmp_path / "c.csv"))
    assert loaded.attrs["timeframe"] == timeframe
    assert loaded.attrs["report"].timeframe == timeframe


def test_load_ohlcv_with_explicit_timeframe_reports_gaps_in_it(hourly, tmp_path) -> None:
    # a third of the hours missing: still hourly candles (most bars one hour apart), with gaps
    path = write(hourly[np.arange(len(hourly)) % 3 != 2], tmp_path / "thin.csv")
    loaded = load_ohlcv(path, timeframe="1h")
    assert loaded.attrs["timeframe"] == "1h"
    assert len(loaded.attrs["report"].gaps) == (len(hourly) - 1) // 3


def test_load_ohlcv_of_another_timeframe_refuses_it_naming_both(hourly, tmp_path) -> None:
    path = write(hourly.iloc[::2], tmp_path / "every_other.csv")
    assert load_ohlcv(path).attrs["timeframe"] == "2h"
    with pytest.raises(CandleDataError, match=r"every_other.csv holds 2h candles.*'1h'"):
        load_ohlcv(path, timeframe="1h")


def test_load_ohlcv_with_gaps_and_zero_volume_reports_them(hourly, tmp_path) -> None:
    frame = hourly.drop(index=[hourly.index[100], *hourly.index[300:303]])
    frame.loc[frame.index[50], "volume"] = 0.0
    loaded = load_ohlcv(write(frame, tmp_path / "gappy.parquet"))

    assert loaded.attrs["timeframe"] == "1h"
    report: CandleReport = loaded.attrs["report"]
    assert report.rows == len(frame) == 496
    assert report.first == hourly.index[0] and report.last == hourly.index[-1]
    assert report.gaps == [
        Gap(hourly.index[99], hourly.index[101], 1),
        Gap(hourly.index[299], hourly.index[303], 3),
    ]
    assert report.zero_volume == [hourly.index[50]]
    text = "\n".join(report.lines())
    assert "3 missing bar(s)" in text and "zero volume at 1 bar(s)" in text
    # reported, not repaired: the rows are exactly the file's
    assert len(loaded) == len(frame)


@pytest.mark.realdata
def test_load_ohlcv_with_real_btcusdt_file_reports_one_gap_and_one_zero_volume_bar(
    shared_dir: Path,
) -> None:
    frame = load_ohlcv(shared_dir / "data" / "BTCUSDT_1h_2023-01-01_2025-01-20.csv")
    report: CandleReport = frame.attrs["report"]
    assert frame.attrs["timeframe"] == "1h"
    assert report.rows == len(frame) == 18_000
    assert report.gaps == [
        Gap(pd.Timestamp("2023-03-24 12:00"), pd.Timestamp("2023-03-24 14:00"), 1)
    ]
    assert report.zero_volume == [pd.Timestamp("2023-03-24 12:00")]
    assert report.first == pd.Timestamp("2023-01-01 00:00")
    assert report.last == pd.Timestamp("2025-01-20 00:00")


Mutation = Callable[[pd.DataFrame], pd.DataFrame]


def _set(column: str, pos: int, value: float) -> Mutation:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[frame.index[pos], column] = value
        return frame

    return mutate


def _swap(pos: int) -> Mutation:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        order = list(range(len(frame)))
        order[pos - 1], order[pos] = order[pos], order[pos - 1]
        return frame.iloc[order]

    return mutate


def _duplicate(pos: int) -> Mutation:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([frame.iloc[: pos + 1], frame.iloc[pos:]])

    return mutate


@pytest.mark.parametrize(
    ("mutate", "bad_pos", "message"),
    [
        (_set("close", 40, np.nan), 40, r"column 'close' is nan at row 40 \(2024-01-02 16:00:00\)"),
        (_set("volume", 7, np.nan), 7, r"column 'volume' is nan at row 7 \(2024-01-01 07:00:00\)"),
        (_set("high", 25, 1.0), 25, r"high 1\.0 < low .* at row 25 \(2024-01-02 01:00:00\)"),
        (_swap(60), 60, r"not sorted: row 60 \(2024-01-03 11:00:00\) comes after"),
        (_duplicate(30), 31, r"duplicate timestamp at row 31 \(2024-01-02 06:00:00\)"),
    ],
    ids=["nan_close", "nan_volume", "high_below_low", "unsorted", "duplicate"],
)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_load_ohlcv_with_bad_row_raises_naming_it(
    hourly, tmp_path, mutate: Mutation, bad_pos: int, message: str, suffix: str
) -> None:
    bad = mutate(hourly)
    path = write(bad, tmp_path / f"bad{suffix}")
    with pytest.raises(CandleDataError, match=message) as info:
        load_ohlcv(path)
    assert info.value.row == bad.index[bad_pos]
    assert str(path) in str(info.value)


@pytest.mark.parametrize("column", ["close", "open"])
def test_load_ohlcv_with_close_or_open_outside_high_low_raises_naming_row(
    hourly, tmp_path, column: str
) -> None:
    bad = hourly.copy()
    bad.loc[bad.index[5], column] = bad["high"].iloc[5] * 1.01
    with pytest.raises(CandleDataError, match=rf"{column} .* at row 5 \(2024-01-01 05:00:00\)"):
        load_ohlcv(write(bad, tmp_path / "outside.csv"))


def test_load_ohlcv_with_missing_file_or_unknown_type_raises(tmp_path) -> None:
    with pytest.raises(CandleDataError, match="does not exist"):
        load_ohlcv(tmp_path / "nope.csv")
    odd = tmp_path / "candles.xlsx"
    odd.write_bytes(b"")
    with pytest.raises(CandleDataError, match=r"unknown type '\.xlsx'"):
        load_ohlcv(odd)


# ---------------------------------------------------------------- generate_ohlcv


def test_generate_ohlcv_with_same_seed_is_identical_and_other_seed_differs() -> None:
    a = generate_ohlcv(1000, seed=3)
    b = generate_ohlcv(1000, seed=3)
    c = generate_ohlcv(1000, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs
    assert not np.allclose(a["close"].to_numpy(), c["close"].to_numpy())
    assert a.index.equals(c.index)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generate_ohlcv_with_any_seed_gives_valid_candles(seed) -> None:
    f = generate_ohlcv(3000, seed=seed)
    assert list(f.columns) == OHLCV
    assert np.isfinite(f.to_numpy()).all()
    assert (f["low"] <= f[["open", "close"]].min(axis=1)).all()
    assert (f[["open", "close"]].max(axis=1) <= f["high"]).all()
    assert (f["low"] > 0).all()
    assert (f["volume"] > 0).all()
    # each bar opens at the previous close (continuous market)
    np.testing.assert_array_equal(f["open"].to_numpy()[1:], f["close"].to_numpy()[:-1])
    assert f["open"].iloc[0] == 30_000.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_generate_ohlcv_with_5000_bars_shows_volatility_clustering(seed) -> None:
    close = generate_ohlcv(5000, seed=seed)["close"].to_numpy()
    r = np.diff(np.log(close))

    def lag1_autocorrelation(x: np.ndarray) -> float:
        x = x - x.mean()
        return float((x[1:] * x[:-1]).sum() / (x * x).sum())

    clustered = lag1_autocorrelation(r**2)
    shuffled = lag1_autocorrelation(np.random.default_rng(seed).permutation(r) ** 2)
    assert clustered > 0.05
    assert abs(shuffled) < 0.04
    assert abs(lag1_autocorrelation(r)) < 0.06  # returns themselves are nearly uncorrelated


@pytest.mark.parametrize(
    ("timeframe", "step", "bars_per_year"),
    [("15m", "15min", 365 * 96), ("1h", "1h", 365 * 24), ("4h", "4h", 365 * 6), ("1d", "1D", 365)],
)
def test_generate_ohlcv_with_timeframe_spaces_bars_and_scales_volatility(
    timeframe, step, bars_per_year
) -> None:
    f = generate_ohlcv(3000, timeframe=timeframe, seed=0, start="2024-03-01")
    assert f.attrs["timeframe"] == timeframe
    assert f.index[0] == pd.Timestamp("2024-03-01")
    assert (f.index.to_series().diff().iloc[1:] == pd.Timedelta(step)).all()
    assert infer_timeframe(f.index) == timeframe
    annualised = np.diff(np.log(f["close"].to_numpy())).std() * np.sqrt(bars_per_year)
    assert 0.4 < annualised < 0.8  # annual_volatility=0.6 whatever the bar size


def test_generate_ohlcv_with_fewer_than_two_bars_raises() -> None:
    with pytest.raises(ValueError, match="'bars' parameter must be >= 2"):
        generate_ohlcv(1)


# ---------------------------------------------------------------- make_feed


@pytest.mark.parametrize(
    ("timeframe", "bt_timeframe", "compression"),
    [
        ("1m", bt.TimeFrame.Minutes, 1),
        ("15m", bt.TimeFrame.Minutes, 15),
        ("1h", bt.TimeFrame.Minutes, 60),
        ("4h", bt.TimeFrame.Minutes, 240),
        ("1d", bt.TimeFrame.Days, 1),
        ("1w", bt.TimeFrame.Weeks, 1),
    ],
)
def test_make_feed_with_timeframe_sets_backtrader_timeframe_and_compression(
    timeframe, bt_timeframe, compression
) -> None:
    feed = make_feed(generate_ohlcv(50, timeframe=timeframe, seed=0))
    assert type(feed) is OhlcvData
    assert feed.p.timeframe == bt_timeframe
    assert feed.p.compression == compression
    explicit = make_feed(generate_ohlcv(50, seed=0), timeframe=timeframe)
    assert (explicit.p.timeframe, explicit.p.compression) == (bt_timeframe, compression)


def test_make_feed_with_frame_without_timeframe_raises_configuration_error(hourly) -> None:
    plain = hourly.copy()
    plain.attrs = {}
    with pytest.raises(ConfigurationError, match="timeframe='1h'"):
        make_feed(plain)
    assert make_feed(plain, timeframe="1h").p.compression == 60


def test_make_feed_with_sentiment_column_runs_as_sentiment_data(hourly) -> None:
    frame = hourly.iloc[:100].copy()
    frame["sentiment"] = np.linspace(10.0, 90.0, len(frame))
    feed = make_feed(frame, name="BTCUSDT")
    assert isinstance(feed, SentimentData)
    assert feed.p.name == "BTCUSDT"

    class Reader(bt.Strategy):
        def __init__(self) -> None:
            self.rows: list[tuple[float, float]] = []

        def next(self) -> None:
            self.rows.append((self.data.close[0], self.data.sentiment[0]))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed)
    cerebro.addstrategy(Reader)
    (strategy,) = cerebro.run()
    assert strategy.data._timeframe == bt.TimeFrame.Minutes
    assert strategy.data._compression == 60
    got = np.array(strategy.rows)
    np.testing.assert_array_equal(got[:, 0], frame["close"].to_numpy())
    np.testing.assert_array_equal(got[:, 1], frame["sentiment"].to_numpy())
    assert not hasattr(make_feed(hourly).lines, "sentiment")
