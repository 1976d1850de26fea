"""Trading calendars (``features.calendar``) and the file layouts backtrader users have.

Session times come from the exchange_calendars library, read here on their own; the candles are
the project's generator re-stamped onto those sessions.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.data.loaders import inspect_candles, load_ohlcv
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import CandleDataError, ConfigurationError, ModelNotFoundError
from atb_strategies.features.calendar import (
    OFF_GRID,
    OUTSIDE,
    bundle_calendar,
    get_calendar,
    silent_warmup_message,
    suggest_calendar,
)
from atb_strategies.features.candles import candle_arrays, find_gaps, validate_candles
from atb_strategies.indicators.prediction import MlPrediction
from tests.conftest import BundleFactory

xcals = pytest.importorskip("exchange_calendars")

NS = np.int64
FIVE_MIN = pd.Timedelta(minutes=5).value


def _schedule(start: str, end: str, code: str = "XNYS") -> pd.DataFrame:
    with warnings.catch_warnings():  # the library's own pandas deprecation notices
        warnings.simplefilter("ignore")
        return xcals.get_calendar(code, start=start, end=end).schedule


def _label(i: int) -> str:
    return f"bar {i}"


def session_stamps(start: str, end: str) -> np.ndarray:
    """5-minute bar open times (int64 ns, UTC) filling every XNYS session."""
    sched = _schedule(start, end)
    return np.concatenate(
        [
            pd.date_range(o, c, freq="5min", inclusive="left").tz_convert(None).as_unit("ns").asi8
            for o, c in zip(sched["open"], sched["close"], strict=True)
        ]
    )


def daily_frame(start: str = "2015-01-01", end: str = "2024-12-31") -> pd.DataFrame:
    days = _schedule(start, end).index
    frame = generate_ohlcv(len(days), timeframe="1d", seed=2, start_price=30.0)
    frame.index = pd.DatetimeIndex(days, name="timestamp")
    return frame


# ---------------------------------------------------------------- the calendar itself


def test_ordinals_with_xnys_daily_sessions_are_consecutive_across_weekends_and_holidays() -> None:
    days = _schedule("2015-01-01", "2024-12-31").index.as_unit("ns").asi8
    ordinal = get_calendar("XNYS").ordinals(days, "1d")
    np.testing.assert_array_equal(np.diff(ordinal), np.ones(len(days) - 1, dtype=NS))
    saturday, christmas = pd.Timestamp("2021-06-05").value, pd.Timestamp("2023-12-25").value
    assert list(get_calendar("XNYS").ordinals(np.array([saturday, christmas]), "1d")) == [
        OUTSIDE,
        OUTSIDE,
    ]


def test_ordinals_with_xnys_5_minute_sessions_count_78_bars_a_day_and_early_closes() -> None:
    stamps = session_stamps("2024-11-25", "2024-12-03")  # Thanksgiving, then a 13:00 close
    ordinal = get_calendar("XNYS").ordinals(stamps, "5m")
    np.testing.assert_array_equal(ordinal, ordinal[0] + np.arange(len(stamps)))
    days = pd.DatetimeIndex(stamps).date
    per_day = pd.Series(1, index=days).groupby(level=0).size()
    assert per_day.max() == 78 and per_day.min() == 42  # 09:30-13:00 on 2024-11-29


def test_ordinals_with_lunch_break_treat_the_break_as_a_closure() -> None:
    sched = _schedule("2024-03-04", "2024-03-08", "XHKG")
    assert sched["break_start"].notna().all()
    periods = [(o, bs) for o, bs in zip(sched["open"], sched["break_start"], strict=True)]
    periods += [(be, c) for be, c in zip(sched["break_end"], sched["close"], strict=True)]
    stamps = np.sort(
        np.concatenate(
            [
                pd.date_range(a, b, freq="5min", inclusive="left").tz_convert(None).asi8
                for a, b in periods
            ]
        )
    )
    cal = get_calendar("XHKG")
    np.testing.assert_array_equal(np.diff(cal.ordinals(stamps, "5m")), np.ones(len(stamps) - 1))
    lunch = sched["break_start"].iloc[0].tz_convert(None) + pd.Timedelta(minutes=10)
    assert cal.ordinals(np.array([lunch.value]), "5m")[0] == OUTSIDE
    days = sched.index.as_unit("ns").asi8
    np.testing.assert_array_equal(np.diff(cal.ordinals(days, "1d")), np.ones(len(days) - 1))


def test_ordinals_with_backtrader_close_stamps_match_open_stamps() -> None:
    cal = get_calendar("XNYS")
    days = _schedule("2020-01-01", "2020-12-31").index.as_unit("ns").asi8
    day = pd.Timedelta(days=1).value
    n = len(days)

    def same_bars(closes: np.ndarray, opens: np.ndarray, timeframe: str) -> None:
        # ordinals count from the sessions one call loads: compare within one call
        both = cal.ordinals(np.concatenate([closes - _tf(timeframe), opens]), timeframe)
        by_close = cal.ordinals(closes, timeframe, stamped="close")
        np.testing.assert_array_equal(both[: len(opens)], both[len(opens) :])
        np.testing.assert_array_equal(np.diff(by_close), np.diff(both[len(opens) :]))

    same_bars(days + day, days, "1d")
    # backtrader's own daily feeds stamp bars at the session end of their date
    session_end = days + day - 11_000  # 23:59:59.999989
    ordinal = cal.ordinals(np.concatenate([session_end, days + day]), "1d", stamped="close")
    assert (ordinal >= 0).all()
    np.testing.assert_array_equal(ordinal[:n], ordinal[n:])
    np.testing.assert_array_equal(np.diff(ordinal[:n]), np.ones(n - 1))
    stamps = session_stamps("2020-03-02", "2020-03-13")  # across the DST change of 2020-03-08
    same_bars(stamps + FIVE_MIN, stamps, "5m")


def _tf(timeframe: str) -> int:
    return {"1d": pd.Timedelta(days=1), "5m": pd.Timedelta(minutes=5)}[timeframe].value


def test_ordinals_with_intraday_bar_off_the_session_grid_is_flagged() -> None:
    stamps = session_stamps("2024-03-04", "2024-03-05")
    odd = np.array([stamps[3] + pd.Timedelta(minutes=2).value])
    assert get_calendar("XNYS").ordinals(odd, "5m")[0] == OFF_GRID
    with pytest.raises(CandleDataError, match="not on the 5m bar grid"):
        find_gaps(
            np.concatenate([stamps[:3], odd]),
            "5m",
            what="c",
            label=_label,
            calendar=get_calendar("XNYS"),
        )


def test_weekdays_calendar_skips_weekends_only_without_exchange_calendars() -> None:
    days = pd.bdate_range("2024-01-01", "2024-03-29").as_unit("ns").asi8
    cal = get_calendar("weekdays")
    np.testing.assert_array_equal(np.diff(cal.ordinals(days, "1d")), np.ones(len(days) - 1))
    hours = pd.date_range("2024-01-05 20:00", "2024-01-08 03:00", freq="1h")
    hours = hours[hours.day_of_week < 5].as_unit("ns").asi8
    np.testing.assert_array_equal(np.diff(cal.ordinals(hours, "1h")), np.ones(len(hours) - 1))
    assert cal.ordinals(np.array([pd.Timestamp("2024-01-06 12:00").value]), "1h")[0] == OUTSIDE


def test_csv_calendar_with_custom_sessions_counts_bars_inside_them(tmp_path: Path) -> None:
    path = tmp_path / "sessions.csv"
    path.write_text(
        "open,close\n2024-01-02 08:00,2024-01-02 10:00\n2024-01-03 08:00,2024-01-03 10:00\n"
    )
    cal = get_calendar(f"csv:{path}")
    assert cal.name == f"csv:{path.resolve()}"
    stamps = (
        pd.DatetimeIndex(
            ["2024-01-02 08:00", "2024-01-02 09:00", "2024-01-03 08:00", "2024-01-03 09:00"]
        )
        .as_unit("ns")
        .asi8
    )
    assert list(cal.ordinals(stamps, "1h")) == [0, 1, 2, 3]
    assert list(cal.ordinals(stamps[[0, 3]], "1h")) == [0, 3]  # two bars missing: a gap


def test_csv_calendar_with_overlapping_or_missing_columns_raises_configuration_error(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("start,end\n2024-01-02 08:00,2024-01-02 10:00\n")
    with pytest.raises(ConfigurationError, match="needs 'open' and 'close' columns"):
        get_calendar(f"csv:{bad}")
    overlap = tmp_path / "overlap.csv"
    overlap.write_text(
        "open,close\n2024-01-02 08:00,2024-01-02 10:00\n2024-01-02 09:00,2024-01-02 11:00\n"
    )
    with pytest.raises(ConfigurationError, match="non-overlapping"):
        get_calendar(f"csv:{overlap}")


def test_get_calendar_with_unknown_name_raises_configuration_error_listing_choices() -> None:
    with pytest.raises(ConfigurationError, match="'NOPE' is not known.*XNYS"):
        get_calendar("NOPE")


def test_get_calendar_without_exchange_calendars_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    get_calendar.cache_clear()
    monkeypatch.setitem(sys.modules, "exchange_calendars", None)  # import fails
    try:
        with pytest.raises(ConfigurationError, match=r"atb-strategies\[calendar\]"):
            get_calendar("XNYS")
        assert get_calendar("weekdays").name == "weekdays"
        assert get_calendar("24/7").always_open
    finally:
        get_calendar.cache_clear()


def test_bundle_calendar_without_calendar_key_is_24_7_and_reads_a_recorded_one() -> None:
    assert bundle_calendar({"symbol": "BTCUSDT"}).always_open
    assert bundle_calendar({"calendar": "XNYS"}).name == "XNYS"
    with pytest.raises(ConfigurationError):
        bundle_calendar({"calendar": "NOPE"})


# ---------------------------------------------------------------- gaps in trading time


def test_find_gaps_with_default_calendar_is_unchanged() -> None:
    rng = np.random.default_rng(0)
    hour = pd.Timedelta(hours=1).value
    stamps = np.cumsum(rng.choice([1, 1, 1, 2, 5], size=500)) * hour
    plain = find_gaps(stamps, "1h", what="c", label=_label)
    with_cal = find_gaps(stamps, "1h", what="c", label=_label, calendar=get_calendar("24/7"))
    for a, b in zip(plain, with_cal, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(plain[0]) == int((np.diff(stamps) > hour).sum())


def test_find_gaps_with_xnys_reports_only_a_bar_missing_inside_a_session() -> None:
    stamps = session_stamps("2024-03-04", "2024-03-15")
    cal = get_calendar("XNYS")
    gaps, missing = find_gaps(stamps, "5m", what="c", label=_label, calendar=cal)
    assert len(gaps) == 0  # nights and the weekend are closures
    holed = np.delete(stamps, [100, 101, 500])
    gaps, missing = find_gaps(holed, "5m", what="c", label=_label, calendar=cal)
    assert list(gaps) == [100, 498] and list(missing) == [2, 1]
    # streaming (one bar at a time after the previous) finds the same
    streamed = [
        len(
            find_gaps(
                holed[i : i + 1],
                "5m",
                what="c",
                label=_label,
                previous=int(holed[i - 1]),
                calendar=cal,
            )[0]
        )
        for i in range(1, len(holed))
    ]
    assert list(np.flatnonzero(streamed) + 1) == [100, 498]


def test_find_gaps_with_xnys_and_a_bar_on_a_closed_day_names_the_bar() -> None:
    frame = daily_frame("2024-01-01", "2024-02-28")
    stamps = np.sort(np.append(frame.index.asi8, pd.Timestamp("2024-01-13").value))
    with pytest.raises(
        CandleDataError, match="bar 9 falls outside the sessions of calendar 'XNYS'"
    ):
        find_gaps(stamps, "1d", what="c", label=_label, calendar=get_calendar("XNYS"))


def test_validate_candles_with_xnys_raise_policy_passes_closures_and_names_a_missing_day() -> None:
    frame = daily_frame("2023-01-01", "2023-12-31")
    out = validate_candles(frame, timeframe="1d", gap_policy="raise", calendar=get_calendar("XNYS"))
    assert len(out) == len(frame)
    elapsed = frame.index[51] - frame.index[49]
    with pytest.raises(
        CandleDataError, match=rf"gap before row 50 .*: {elapsed} since .*1 missing"
    ):
        validate_candles(
            frame.drop(frame.index[50]),
            timeframe="1d",
            gap_policy="raise",
            calendar=get_calendar("XNYS"),
        )
    with pytest.raises(CandleDataError, match=r"gap before row 4 \(2023-01-09"):
        validate_candles(frame, timeframe="1d", gap_policy="raise")  # 24/7: the first weekend


def test_candle_arrays_with_calendar_equals_validate_candles() -> None:
    frame = daily_frame("2023-01-01", "2023-12-31")
    cal = get_calendar("XNYS")
    arrays = candle_arrays(frame, timeframe="1d", gap_policy="raise", rows=120, calendar=cal)
    np.testing.assert_array_equal(arrays["close"], frame["close"].to_numpy()[-120:])


# ---------------------------------------------------------------- which calendar fits


def test_suggest_calendar_with_daily_stock_bars_names_xnys_with_weekdays_as_alternative() -> None:
    stamps = daily_frame().index.asi8
    hint = suggest_calendar(stamps, "1d")
    assert hint is not None
    assert hint.startswith(f"the {int((np.diff(stamps) > 86_400 * 10**9).sum())} gaps are")
    assert "weekends and holidays of XNYS: pass calendar='XNYS'" in hint
    assert "calendar='weekdays', which leaves" in hint


def test_suggest_calendar_with_intraday_sessions_and_weekday_bars() -> None:
    assert "nights, weekends and holidays of XNYS" in suggest_calendar(
        session_stamps("2024-01-02", "2024-02-28"), "5m"
    )
    weekdays = pd.bdate_range("2024-01-01", periods=300).as_unit("ns").asi8
    assert suggest_calendar(weekdays, "1d") == (
        "the 59 gaps are mostly weekends: pass calendar='weekdays'"
    )


def test_suggest_calendar_with_crypto_bars_and_random_gaps_suggests_nothing() -> None:
    frame = generate_ohlcv(2000, seed=1)
    holed = frame.drop(frame.index[[100, 400, 401, 1500]])
    assert suggest_calendar(holed.index.asi8, "1h") is None
    assert suggest_calendar(frame.index.asi8, "1h") is None


def test_inspect_candles_with_closures_counts_gaps_in_trading_time_and_hints_once() -> None:
    frame = daily_frame("2022-01-01", "2023-12-31")
    plain = inspect_candles(frame, "1d")
    assert len(plain.gaps) > 100
    hint_lines = [line for line in plain.lines() if "calendar='XNYS'" in line]
    assert len(hint_lines) == 1 and len(plain.lines()) == 3  # span, summary, hint
    with_cal = inspect_candles(frame.drop(frame.index[10]), "1d", calendar="XNYS")
    assert [(g.after, g.before, g.missing_bars) for g in with_cal.gaps] == [
        (frame.index[9], frame.index[11], 1)
    ]
    assert with_cal.calendar_hint is None


def test_silent_warmup_message_names_the_reason_counts_and_the_fix() -> None:
    text = silent_warmup_message(
        "ORCL/basic@v1",
        bars=40,
        skipped=40,
        gaps=12,
        calendar="24/7",
        min_bars=40,
        hint="the 12 gaps are the weekends and holidays of XNYS: pass calendar='XNYS'",
    )
    assert text.startswith("MlPrediction(ORCL/basic@v1): no prediction in the 40 bars")
    assert "40 bar(s) skipped" in text and "12 gap(s)" in text and "'24/7'" in text
    assert "calendar='XNYS' when training" in text and "gap_policy='allow'" in text


# ---------------------------------------------------------------- file layouts


def test_load_ohlcv_with_separate_date_and_time_columns_joins_them(tmp_path: Path) -> None:
    stamps = pd.DatetimeIndex(session_stamps("2024-03-04", "2024-03-05"))
    frame = generate_ohlcv(len(stamps), timeframe="5m", seed=4, start_price=50.0)
    path = tmp_path / "session.txt"
    lines = ["Date,Time,Open,High,Low,Close,Volume,OpenInterest"]
    for t, row in zip(stamps, frame.itertuples(index=False), strict=True):
        lines.append(
            f"{t:%Y-%m-%d},{t:%H:%M:%S},{row.open},{row.high},{row.low},{row.close},{row.volume},0"
        )
    path.write_text("\n".join(lines) + "\n")

    loaded = load_ohlcv(path, calendar="XNYS")

    assert list(loaded.index) == list(stamps)
    assert loaded.attrs["timeframe"] == "5m"
    assert loaded.attrs["report"].gaps == []
    np.testing.assert_allclose(loaded["close"].to_numpy(), frame["close"].to_numpy())


def test_load_ohlcv_with_local_session_times_and_tz_converts_to_utc_sessions(
    tmp_path: Path,
) -> None:
    stamps = pd.DatetimeIndex(session_stamps("2024-03-07", "2024-03-13"))  # DST on 03-10
    local = stamps.tz_localize("UTC").tz_convert("America/New_York")
    frame = generate_ohlcv(len(stamps), timeframe="5m", seed=4, start_price=50.0)
    table = frame.reset_index(drop=True)
    table.insert(0, "Time", local.strftime("%H:%M:%S"))
    table.insert(0, "Date", local.strftime("%Y-%m-%d"))
    path = tmp_path / "local.csv"
    table.to_csv(path, index=False)
    assert set(table["Time"].str[:5]) >= {"09:30", "15:55"}

    loaded = load_ohlcv(path, calendar="XNYS", tz="America/New_York")

    assert list(loaded.index) == list(stamps)
    assert loaded.attrs["report"].gaps == []
    with pytest.raises(CandleDataError, match="outside the sessions of calendar 'XNYS'"):
        load_ohlcv(path, calendar="XNYS")  # read as UTC, 09:30 is before the open
    with pytest.raises(CandleDataError, match="tz='Mars/Olympus'"):
        load_ohlcv(path, tz="Mars/Olympus")


def test_load_ohlcv_with_tz_and_epoch_stamps_raises_naming_the_parameter(tmp_path: Path) -> None:
    path = tmp_path / "epochs.csv"
    frame = generate_ohlcv(30, seed=1)
    frame.index = frame.index.as_unit("ms").asi8
    frame.to_csv(path, index_label="timestamp")
    with pytest.raises(CandleDataError, match="epoch numbers, which are UTC already; drop tz="):
        load_ohlcv(path, tz="Europe/London")


def test_load_ohlcv_with_hhmmss_time_column_reads_the_times(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(
        "Date,Time,Open,High,Low,Close,Volume\n"
        "20240304,93000,10,11,9,10.5,100\n20240304,93500,10.5,11,10,10.8,120\n"
        "20240304,94000,10.8,11.2,10.1,11,90\n"
    )
    loaded = load_ohlcv(path)
    assert [str(t) for t in loaded.index] == [
        "2024-03-04 09:30:00",
        "2024-03-04 09:35:00",
        "2024-03-04 09:40:00",
    ]


def _yahoo(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    frame = daily_frame("2024-01-01", "2024-03-29")
    factor = np.linspace(0.8, 1.0, len(frame))
    out = frame.copy()
    out.insert(4, "adj close", frame["close"] * factor)
    out.index = out.index.strftime("%Y-%m-%d")
    out.columns = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
    path = tmp_path / "orcl.csv"
    out.to_csv(path, index_label="Date")
    return path, out


def test_load_ohlcv_with_yahoo_adj_close_keeps_raw_close_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, yahoo = _yahoo(tmp_path)
    with caplog.at_level(logging.INFO):
        loaded = load_ohlcv(path, calendar="XNYS")
    np.testing.assert_allclose(loaded["close"].to_numpy(), yahoo["Close"].to_numpy())
    assert "adj close" not in loaded.columns
    assert "the raw Close column" in loaded.attrs["close"]
    assert "the raw Close column" in caplog.text


def test_load_ohlcv_with_adjusted_scales_open_high_low_like_backtrader(tmp_path: Path) -> None:
    path, yahoo = _yahoo(tmp_path)
    loaded = load_ohlcv(path, adjusted=True)
    ratio = yahoo["Adj Close"].to_numpy() / yahoo["Close"].to_numpy()
    np.testing.assert_allclose(loaded["close"].to_numpy(), yahoo["Adj Close"].to_numpy())
    for col, name in (("open", "Open"), ("high", "High"), ("low", "Low")):
        np.testing.assert_allclose(loaded[col].to_numpy(), yahoo[name].to_numpy() * ratio)
    np.testing.assert_allclose(loaded["volume"].to_numpy(), yahoo["Volume"].to_numpy())
    assert "Adj Close column" in loaded.attrs["close"]
    # backtrader's own reading of the same file, adjclose=True without rounding, agrees
    feed = bt.feeds.YahooFinanceCSVData(
        dataname=str(path), adjclose=True, round=False, adjvolume=False
    )
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed)
    cerebro.addstrategy(bt.Strategy)
    cerebro.run()
    np.testing.assert_allclose(np.asarray(feed.open.array), loaded["open"].to_numpy(), rtol=1e-12)


def test_load_ohlcv_with_adjusted_and_no_adj_close_column_raises(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    generate_ohlcv(50, timeframe="1d").to_csv(path, index_label="timestamp")
    with pytest.raises(CandleDataError, match="no 'Adj Close' column"):
        load_ohlcv(path, adjusted=True)


# ---------------------------------------------------------------- an unnamed feed


def test_ml_prediction_with_unnamed_csv_feed_says_to_pass_symbol_or_name(
    make_bundle: BundleFactory, tmp_path: Path
) -> None:
    make_bundle(symbol="ORCL", timeframe="1d", version="2026-01-01_1d_v1")
    path, _ = _yahoo(tmp_path)
    named = tmp_path / "orcl-1995-2014.csv"
    path.rename(named)

    class Uses(bt.Strategy):
        def __init__(self) -> None:
            MlPrediction(self.data, registry=str(tmp_path / "models"))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.YahooFinanceCSVData(dataname=str(named)))
    cerebro.addstrategy(Uses)
    with pytest.raises(ModelNotFoundError) as err:
        cerebro.run()
    message = str(err.value)
    assert "No models for symbol 'orcl-1995-2014'" in message
    assert "backtrader named it 'orcl-1995-2014' after its file" in message
    assert "symbol='ORCL'" in message and "name='ORCL'" in message
