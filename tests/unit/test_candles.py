"""``validate_candles`` and ``timeframe_to_timedelta``: every refusal names the row and column."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from atb_strategies.exceptions import AtbError, CandleDataError, ConfigurationError
from atb_strategies.features.candles import OHLCV, timeframe_to_timedelta, validate_candles
from tests.conftest import synthetic_candles


def _epoch(index: pd.DatetimeIndex, unit: str) -> np.ndarray:
    return np.asarray((index - pd.Timestamp("1970-01-01")) // pd.Timedelta(1, unit=unit), "int64")


# ---------------------------------------------------------------- timeframe_to_timedelta


@pytest.mark.parametrize(
    ("timeframe", "expected"),
    [
        ("1m", pd.Timedelta(minutes=1)),
        ("15m", pd.Timedelta(minutes=15)),
        ("1h", pd.Timedelta(hours=1)),
        ("4h", pd.Timedelta(hours=4)),
        ("1d", pd.Timedelta(days=1)),
        ("1w", pd.Timedelta(weeks=1)),
        (" 12h ", pd.Timedelta(hours=12)),
    ],
)
def test_timeframe_to_timedelta_with_valid_timeframe_returns_duration(timeframe, expected):
    assert timeframe_to_timedelta(timeframe) == expected


@pytest.mark.parametrize("timeframe", ["0h", "h", "1", "1y", "1H", "1.5h", "-1h", "", "1h1m"])
def test_timeframe_to_timedelta_with_invalid_timeframe_raises_configuration_error(timeframe):
    with pytest.raises(ConfigurationError, match="is not understood") as info:
        timeframe_to_timedelta(timeframe)
    assert repr(timeframe) in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- happy path


def test_validate_candles_with_clean_candles_returns_copy_indexed_by_timestamp(candles):
    out = validate_candles(candles, timeframe="1h", min_rows=len(candles))
    assert out is not candles
    assert isinstance(out.index, pd.DatetimeIndex)
    assert out.index.name == "timestamp"
    assert out.index.tz is None
    assert out.index.is_monotonic_increasing and out.index.is_unique
    pd.testing.assert_frame_equal(
        out[list(OHLCV)], candles, check_index_type=False, check_freq=False, check_names=False
    )
    assert (out.index == candles.index).all()


def test_validate_candles_with_timestamp_column_returns_datetime_index(candles):
    frame = candles.reset_index()
    assert isinstance(frame.index, pd.RangeIndex)
    out = validate_candles(frame, timeframe="1h")
    assert isinstance(out.index, pd.DatetimeIndex)
    assert (out.index == candles.index).all()
    np.testing.assert_array_equal(out["close"].to_numpy(), candles["close"].to_numpy())


@pytest.mark.parametrize("column", ["datetime", "date", "time", "open_time"])
def test_validate_candles_with_alternative_time_column_name_reads_it(candles, column):
    frame = candles.reset_index().rename(columns={"timestamp": column})
    out = validate_candles(frame, timeframe="1h")
    assert (out.index == candles.index).all()


def test_validate_candles_with_string_time_column_parses_it(candles):
    frame = candles.reset_index()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    out = validate_candles(frame, timeframe="1h")
    assert (out.index == candles.index).all()


def test_validate_candles_with_epoch_ms_integer_column_reads_milliseconds(candles):
    frame = candles.reset_index(drop=True)
    frame["timestamp"] = _epoch(candles.index, "ms")
    assert frame["timestamp"].iloc[0] == 1_704_067_200_000
    out = validate_candles(frame, timeframe="1h")
    assert out.index[0] == pd.Timestamp("2024-01-01 00:00:00")
    assert (out.index == candles.index).all()


def test_validate_candles_with_epoch_seconds_integer_column_reads_seconds(candles):
    frame = candles.reset_index(drop=True)
    frame["open_time"] = _epoch(candles.index, "s")
    out = validate_candles(frame, timeframe="1h")
    assert (out.index == candles.index).all()


def test_validate_candles_with_tz_aware_index_returns_naive_utc():
    tokyo = synthetic_candles(48, start="2024-01-01 09:00").tz_localize("Asia/Tokyo")
    out = validate_candles(tokyo, timeframe="1h")
    assert out.index.tz is None
    assert out.index[0] == pd.Timestamp("2024-01-01 00:00:00")  # 09:00 JST == 00:00 UTC


def test_validate_candles_with_tz_aware_index_across_dst_change_passes_spacing_check():
    utc = pd.date_range("2024-03-30 20:00", periods=12, freq="1h", tz="UTC")
    frame = synthetic_candles(12)
    frame.index = utc.tz_convert("Europe/Berlin")  # wall clock jumps 02:00 -> 03:00
    out = validate_candles(frame, timeframe="1h", gap_policy="raise")
    assert (out.index == utc.tz_localize(None)).all()


def test_validate_candles_with_tz_aware_time_column_returns_naive_utc(candles):
    frame = candles.reset_index()
    frame["timestamp"] = frame["timestamp"].dt.tz_localize("UTC").dt.tz_convert("US/Eastern")
    out = validate_candles(frame, timeframe="1h")
    assert out.index.tz is None
    assert (out.index == candles.index).all()


def test_validate_candles_with_zero_volume_passes(candles):
    candles.iloc[5, candles.columns.get_loc("volume")] = 0.0
    out = validate_candles(candles)
    assert out["volume"].iloc[5] == 0.0


def test_validate_candles_with_extra_columns_keeps_them(candles):
    candles["sentiment"] = -0.5  # extra columns may be negative: only OHLCV have limits
    out = validate_candles(candles, columns=(*OHLCV, "sentiment"))
    assert (out["sentiment"] == -0.5).all()


def test_validate_candles_does_not_modify_its_input(candles):
    tz_candles = candles.tz_localize("UTC")
    before = tz_candles.copy()
    validate_candles(tz_candles, timeframe="1h")
    pd.testing.assert_frame_equal(tz_candles, before)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("column", list(OHLCV))
def test_validate_candles_with_nan_names_column_and_row_timestamp(candles, column):
    candles.iloc[7, candles.columns.get_loc(column)] = np.nan
    stamp = candles.index[7]
    with pytest.raises(CandleDataError) as info:
        validate_candles(candles)
    message = str(info.value)
    assert repr(column) in message
    assert "row 7" in message
    assert str(stamp) in message
    assert info.value.row == stamp


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_validate_candles_with_infinite_close_raises_naming_row(candles, value):
    candles.iloc[3, candles.columns.get_loc("close")] = value
    with pytest.raises(CandleDataError, match="'close'") as info:
        validate_candles(candles)
    assert info.value.row == candles.index[3]


def test_validate_candles_with_non_numeric_text_raises_naming_value(candles):
    frame = candles.astype({"open": object})
    frame.iloc[2, frame.columns.get_loc("open")] = "n/a"
    with pytest.raises(CandleDataError, match="'open' is '?n/a'? at row 2") as info:
        validate_candles(frame)
    assert info.value.row == candles.index[2]


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_validate_candles_with_non_positive_price_raises_naming_column(candles, column, value):
    candles.iloc[4, candles.columns.get_loc(column)] = value
    with pytest.raises(CandleDataError, match=r"must be > 0") as info:
        validate_candles(candles)
    assert repr(column) in str(info.value)
    assert "row 4" in str(info.value)
    assert info.value.row == candles.index[4]


def test_validate_candles_with_negative_volume_raises_naming_row(candles):
    candles.iloc[9, candles.columns.get_loc("volume")] = -0.001
    with pytest.raises(CandleDataError, match=r"'volume' is -0.001 at row 9 .*>= 0") as info:
        validate_candles(candles)
    assert info.value.row == candles.index[9]


def test_validate_candles_with_high_below_low_raises_naming_row(candles):
    hi, lo = candles["high"].iloc[11], candles["low"].iloc[11]
    candles.iloc[11, candles.columns.get_loc("high")] = lo
    candles.iloc[11, candles.columns.get_loc("low")] = hi
    with pytest.raises(CandleDataError, match=r"high .* < low .* at row 11") as info:
        validate_candles(candles)
    assert info.value.row == candles.index[11]


def test_validate_candles_with_high_equal_low_passes(candles):
    flat = candles["low"].iloc[11]
    for col in ("open", "high", "close"):
        candles.iloc[11, candles.columns.get_loc(col)] = flat
    validate_candles(candles)


def test_validate_candles_with_missing_column_raises_listing_it(candles):
    frame = candles.drop(columns=["volume"])
    with pytest.raises(CandleDataError, match=r"lack column\(s\) \['volume'\]"):
        validate_candles(frame)


def test_validate_candles_with_non_dataframe_raises_candle_data_error(candles):
    with pytest.raises(CandleDataError, match="must be a pandas DataFrame"):
        validate_candles(candles["close"])


# ---------------------------------------------------------------- time axis


def test_validate_candles_with_unsorted_rows_raises_naming_row(candles):
    idx = candles.index.tolist()
    idx[20], idx[21] = idx[21], idx[20]
    candles.index = pd.DatetimeIndex(idx, name="timestamp")
    with pytest.raises(CandleDataError, match="not sorted") as info:
        validate_candles(candles)
    assert "row 21" in str(info.value)
    assert info.value.row == candles.index[21]


def test_validate_candles_with_duplicate_stamp_raises_naming_row(candles):
    idx = candles.index.tolist()
    idx[31] = idx[30]
    candles.index = pd.DatetimeIndex(idx, name="timestamp")
    with pytest.raises(CandleDataError, match="duplicate timestamp") as info:
        validate_candles(candles)
    assert "row 31" in str(info.value)
    assert info.value.row == idx[30]


def test_validate_candles_with_missing_timestamp_raises_naming_position(candles):
    frame = candles.reset_index()
    frame["timestamp"] = frame["timestamp"].astype("datetime64[ns]")
    frame.loc[6, "timestamp"] = pd.NaT
    with pytest.raises(CandleDataError, match="row 6 has no timestamp") as info:
        validate_candles(frame)
    assert info.value.row == 6


def test_validate_candles_with_no_time_information_raises(candles):
    with pytest.raises(CandleDataError, match="no time"):
        validate_candles(candles.reset_index(drop=True))


def test_validate_candles_with_unparseable_time_column_raises_candle_data_error(candles):
    frame = candles.reset_index()
    frame["timestamp"] = "not a date"
    # pandas warns that it falls back to dateutil before failing; only the error matters here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(CandleDataError, match="'timestamp' cannot be read as timestamps"):
            validate_candles(frame)


def test_validate_candles_with_off_grid_spacing_raises_naming_row(candles):
    idx = candles.index.tolist()
    idx[40] = idx[40] + pd.Timedelta(minutes=30)
    candles.index = pd.DatetimeIndex(idx, name="timestamp")
    with pytest.raises(CandleDataError, match="not a multiple of the model's timeframe 1h") as info:
        validate_candles(candles, timeframe="1h", gap_policy="allow")
    assert "row 40" in str(info.value)
    assert info.value.row == idx[40]


def test_validate_candles_with_finer_candles_than_timeframe_raises(candles):
    with pytest.raises(CandleDataError, match="not a multiple"):
        validate_candles(synthetic_candles(50, freq="15min"), timeframe="1h")


def test_validate_candles_with_coarser_multiple_timeframe_reports_gap(candles):
    with pytest.raises(CandleDataError, match=r"gap before row 1 .*\(3 missing 1h bar\(s\)\)"):
        validate_candles(synthetic_candles(50, freq="4h"), timeframe="1h")


def test_validate_candles_with_gap_and_raise_policy_raises_naming_bar_after_gap(candles):
    frame = candles.drop(candles.index[100:103])  # three bars missing before the new row 100
    with pytest.raises(CandleDataError, match=r"gap before row 100 .*3 missing 1h") as info:
        validate_candles(frame, timeframe="1h", gap_policy="raise")
    assert info.value.row == candles.index[103]


def test_validate_candles_with_gap_and_allow_policy_passes(candles):
    frame = candles.drop(candles.index[100:103])
    out = validate_candles(frame, timeframe="1h", gap_policy="allow")
    assert len(out) == len(candles) - 3


def test_validate_candles_with_gap_and_no_timeframe_passes(candles):
    frame = candles.drop(candles.index[100:103])
    assert len(validate_candles(frame)) == len(frame)


def test_validate_candles_with_unknown_gap_policy_raises_configuration_error(candles):
    with pytest.raises(ConfigurationError, match="'gap_policy'.*Got 'ignore' instead"):
        validate_candles(candles, timeframe="1h", gap_policy="ignore")


def test_validate_candles_with_gap_outside_spacing_rows_passes(candles):
    frame = candles.drop(candles.index[100:103])  # 597 rows; gap before row 100
    out = validate_candles(frame, timeframe="1h", spacing_rows=len(frame) - 100)
    assert len(out) == len(frame)


def test_validate_candles_with_gap_inside_spacing_rows_raises(candles):
    frame = candles.drop(candles.index[100:103])
    # the newest len-99 rows include row 99 and row 100, i.e. the gap between them
    with pytest.raises(CandleDataError, match="gap before row 100"):
        validate_candles(frame, timeframe="1h", spacing_rows=len(frame) - 99)


def test_validate_candles_with_off_grid_bar_outside_spacing_rows_passes(candles):
    idx = candles.index.tolist()
    idx[10] = idx[10] + pd.Timedelta(minutes=7)
    candles.index = pd.DatetimeIndex(idx, name="timestamp")
    validate_candles(candles, timeframe="1h", spacing_rows=100)
    with pytest.raises(CandleDataError, match="not a multiple"):
        validate_candles(candles, timeframe="1h")


def test_validate_candles_with_spacing_rows_still_checks_order_and_values(candles):
    idx = candles.index.tolist()
    idx[3] = idx[2]
    candles.index = pd.DatetimeIndex(idx, name="timestamp")
    with pytest.raises(CandleDataError, match="duplicate"):
        validate_candles(candles, timeframe="1h", spacing_rows=10)


def test_validate_candles_with_invalid_timeframe_raises_configuration_error(candles):
    with pytest.raises(ConfigurationError, match="'1x'"):
        validate_candles(candles, timeframe="1x")


# ---------------------------------------------------------------- min_rows and error types


def test_validate_candles_with_too_few_rows_raises_naming_counts(candles):
    with pytest.raises(CandleDataError, match=r"have 600 row\(s\); at least 601"):
        validate_candles(candles, min_rows=601)


def test_validate_candles_with_exactly_min_rows_passes(candles):
    assert len(validate_candles(candles, min_rows=600)) == 600


def test_validate_candles_with_custom_what_uses_it_in_messages(candles):
    candles.iloc[0, candles.columns.get_loc("low")] = np.nan
    with pytest.raises(CandleDataError, match=r"^BTCUSDT 1h candles: column 'low'"):
        validate_candles(candles, what="BTCUSDT 1h candles")


def test_candle_data_error_with_bad_candles_is_also_value_error_and_atb_error(candles):
    candles.iloc[1, candles.columns.get_loc("close")] = -5.0
    with pytest.raises(ValueError) as info:
        validate_candles(candles)
    assert isinstance(info.value, CandleDataError)
    assert isinstance(info.value, AtbError)
