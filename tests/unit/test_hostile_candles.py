"""Untrusted candle files and periods fail closed: every odd file ends as one ``CandleDataError``
naming it, every impossible period as one ``ConfigurationError`` naming the bound; what can be
read faithfully (semicolons, microsecond epochs, Decimal prices) is read."""

from __future__ import annotations

import decimal
import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atb_strategies.data.loaders import Gap, load_ohlcv, summarize_gaps
from atb_strategies.data.periods import check_period, check_period_in_data
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import CandleDataError, ConfigurationError
from atb_strategies.features.candles import validate_candles

PRICES = ["open", "high", "low", "close"]


@pytest.fixture(scope="module")
def hourly() -> pd.DataFrame:
    return generate_ohlcv(300, timeframe="1h", seed=5)


def _csv(hourly: pd.DataFrame, path: Path, **kwargs) -> Path:
    hourly.reset_index().to_csv(path, index=False, **kwargs)
    return path


def _good_text(hourly: pd.DataFrame) -> str:
    return hourly.reset_index().to_csv(index=False)


# ---------------------------------------------------------------- files that cannot be read


def _empty(h, d):
    (d / "c.csv").write_bytes(b"")
    return d / "c.csv", "is empty"


def _header_only(h, d):
    return _csv(h.iloc[:0], d / "c.csv"), "header but no candles"


def _utf16(h, d):
    return _csv(h, d / "c.csv", encoding="utf-16"), "UTF-16"


def _latin1(h, d):
    (d / "c.csv").write_bytes(_good_text(h).replace("volume", "volumé").encode("latin-1"))
    return d / "c.csv", "not UTF-8 text"


def _binary(h, d):
    (d / "c.csv").write_bytes(bytes(range(256)) * 8)
    return d / "c.csv", "binary"


def _ragged(h, d):
    lines = _good_text(h).splitlines()
    lines[7] += ",1,2"
    (d / "c.csv").write_text("\n".join(lines) + "\n")
    return d / "c.csv", "line 8 has 8 fields where the header has 6"


def _truncated_gzip(h, d):
    packed = gzip.compress(_good_text(h).encode())
    (d / "c.csv.gz").write_bytes(packed[: len(packed) // 2])
    return d / "c.csv.gz", "truncated"


def _garbage_parquet(h, d):
    (d / "c.parquet").write_bytes(b"PAR1 nothing of the kind " * 8)
    return d / "c.parquet", "not a readable parquet file"


def _empty_parquet(h, d):
    (d / "c.parquet").write_bytes(b"")
    return d / "c.parquet", "not a readable parquet file"


def _not_gzip(h, d):
    (d / "c.csv.gz").write_text(_good_text(h))
    return d / "c.csv.gz", "not valid gzip"


def _garbage_feather(h, d):
    (d / "c.feather").write_bytes(b"ARROW1 but no more")
    return d / "c.feather", "not a readable feather file"


def _string_prices(h, d):
    table = h.reset_index()
    for c in PRICES:
        table[c] = table[c].map(lambda v: f"{v:.2f}")
    table.to_parquet(d / "c.parquet")
    return d / "c.parquet", "column 'open' holds .* not numbers"


@pytest.mark.parametrize(
    "make",
    [
        _empty,
        _header_only,
        _utf16,
        _latin1,
        _binary,
        _ragged,
        _truncated_gzip,
        _garbage_parquet,
        _empty_parquet,
        _not_gzip,
        _garbage_feather,
        _string_prices,
    ],
)
def test_load_ohlcv_with_odd_file_raises_candle_data_error_naming_it(hourly, tmp_path, make):
    path, why = make(hourly, tmp_path)
    with pytest.raises(CandleDataError, match=why) as caught:
        load_ohlcv(path, timeframe="1h")
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- files that can be read


def test_load_ohlcv_with_semicolons_and_decimal_commas_reads_the_candles(hourly, tmp_path):
    plain = load_ohlcv(_csv(hourly, tmp_path / "plain.csv"))
    semi = load_ohlcv(_csv(hourly, tmp_path / "semi.csv", sep=";", decimal=","))
    pd.testing.assert_frame_equal(semi, plain, check_freq=False)


def test_load_ohlcv_with_byte_order_mark_and_semicolons_reads_the_candles(hourly, tmp_path):
    plain = load_ohlcv(_csv(hourly, tmp_path / "plain.csv"))
    (tmp_path / "bom.csv").write_bytes(
        b"\xef\xbb\xbf" + _good_text(hourly).replace(",", ";").encode()
    )
    pd.testing.assert_frame_equal(load_ohlcv(tmp_path / "bom.csv"), plain, check_freq=False)


def test_load_ohlcv_with_tab_separated_file_reads_the_candles(hourly, tmp_path):
    plain = load_ohlcv(_csv(hourly, tmp_path / "plain.csv"))
    tabs = load_ohlcv(_csv(hourly, tmp_path / "tabs.txt", sep="\t"))
    pd.testing.assert_frame_equal(tabs, plain, check_freq=False)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_load_ohlcv_with_integer_epochs_reads_each_unit(hourly, tmp_path, unit):
    table = hourly.reset_index()
    table["timestamp"] = table["timestamp"].astype(f"datetime64[{unit}]").astype("int64")
    table.to_parquet(tmp_path / "epochs.parquet")
    loaded = load_ohlcv(tmp_path / "epochs.parquet")
    assert list(loaded.index) == list(hourly.index)


def test_load_ohlcv_with_decimal_prices_reads_them_as_float64(hourly, tmp_path):
    table = hourly.reset_index()
    columns = {c: pa.array(table[c]) for c in ("timestamp", "volume")}
    for c in PRICES:
        values = [decimal.Decimal(f"{v:.2f}") for v in table[c]]
        columns[c] = pa.array(values, pa.decimal128(18, 2))
    pq.write_table(pa.table(columns), tmp_path / "dec.parquet")
    loaded = load_ohlcv(tmp_path / "dec.parquet")
    for c in PRICES:
        assert loaded[c].dtype == np.float64
        np.testing.assert_allclose(loaded[c].to_numpy(), table[c].round(2).to_numpy())


def test_load_ohlcv_with_too_few_rows_to_infer_says_which_file(hourly, tmp_path):
    path = _csv(hourly.iloc[:1], tmp_path / "one.csv")
    with pytest.raises(CandleDataError, match=r"one.csv hold 1 bar\(s\)"):
        load_ohlcv(path)
    assert len(load_ohlcv(path, timeframe="1h")) == 1


# ---------------------------------------------------------------- another timeframe


def test_load_ohlcv_of_daily_candles_as_hourly_refuses_naming_both(tmp_path):
    daily = generate_ohlcv(60, timeframe="1d", seed=1)
    path = _csv(daily, tmp_path / "daily.csv")
    with pytest.raises(CandleDataError, match=r"daily.csv holds 1d candles.*timeframe='1h'"):
        load_ohlcv(path, timeframe="1h")
    assert load_ohlcv(path).attrs["timeframe"] == "1d"


def test_load_ohlcv_of_hourly_candles_as_daily_refuses_naming_both(hourly, tmp_path):
    with pytest.raises(CandleDataError, match=r"holds 1h candles.*timeframe='1d'"):
        load_ohlcv(_csv(hourly, tmp_path / "h.csv"), timeframe="1d")


def test_load_ohlcv_of_weekday_daily_candles_as_hourly_refuses(tmp_path):
    days = generate_ohlcv(70, timeframe="1d", seed=2)
    weekdays = days[days.index.day_of_week < 5]
    with pytest.raises(CandleDataError, match="holds 1d candles"):
        load_ohlcv(_csv(weekdays, tmp_path / "stocks.csv"), timeframe="1h")


# ---------------------------------------------------------------- many gaps: one line


def test_load_ohlcv_with_many_gaps_logs_one_summary_naming_the_pattern(tmp_path, caplog):
    hours = generate_ohlcv(24 * 30, timeframe="1h", seed=3)
    session = hours[(hours.index.hour >= 8) & (hours.index.hour < 20)]
    path = _csv(session, tmp_path / "session.csv")
    with caplog.at_level(logging.INFO, logger="atb_strategies.data.loaders"):
        loaded = load_ohlcv(path, timeframe="1h")
    assert len(loaded.attrs["report"].gaps) == 29
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # the range, then the gaps
    assert "29 gaps, 348 missing 1h bar(s)" in lines[1]
    assert "100 % of them are 12 missing bar(s) recurring every 1d" in lines[1]


def test_summarize_gaps_of_irregular_gaps_claims_no_pattern():
    t = pd.Timestamp("2024-01-01")
    hours = [3, 10, 11, 30, 31, 32, 70, 200]
    gaps = [
        Gap(t + pd.Timedelta(hours=h), t + pd.Timedelta(hours=h + 1 + (i % 3)), 1 + i % 3)
        for i, h in enumerate(hours)
    ]
    line = summarize_gaps(gaps, "1h")
    assert line.startswith(f"8 gaps, {sum(g.missing_bars for g in gaps)} missing 1h bar(s)")
    assert "Regular" not in line


def test_warn_gap_policy_with_many_gaps_logs_five_and_one_summary(caplog):
    hours = generate_ohlcv(24 * 10, timeframe="1h", seed=4)
    session = hours[hours.index.hour < 12]
    with caplog.at_level(logging.WARNING, logger="atb_strategies.features.candles"):
        validate_candles(session, timeframe="1h", gap_policy="warn")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6
    assert "4 more gap(s) (48 missing 1h bar(s))" in lines[-1]


# ---------------------------------------------------------------- periods


def test_check_period_with_end_before_start_names_both_bounds():
    with pytest.raises(ConfigurationError, match=r"end='2024-05-01' is before start='2024-06-01'"):
        check_period("2024-06-01", "2024-05-01")
    with pytest.raises(ConfigurationError, match="--end-date 2024-05-01 is before --start-date"):
        check_period("2024-06-01", "2024-05-01", names=("--start-date", "--end-date"))


def test_check_period_with_bare_end_date_includes_that_day():
    first, last = check_period("2024-05-01T12:00", "2024-05-01")
    assert first == pd.Timestamp("2024-05-01 12:00")
    assert last > pd.Timestamp("2024-05-01 23:59")


@pytest.mark.parametrize(
    ("start", "end", "why"),
    [
        ("2024-03-01", None, r"start='2024-03-01' is after the last candle"),
        (None, "2023-12-31", r"end='2023-12-31' is before the first candle"),
        ("2024-01-03T05:00", "2024-01-03T07:00", "No candle between"),
    ],
)
def test_check_period_in_data_outside_the_candles_names_bound_and_range(hourly, start, end, why):
    gapped = hourly.drop(hourly.index[50:60])  # 2024-01-03 02:00 .. 11:00 missing
    with pytest.raises(ConfigurationError, match=why) as caught:
        check_period_in_data(gapped.index, start, end, what="prices.csv")
    assert f"prices.csv covers {hourly.index[0]} .. {hourly.index[-1]}" in str(caught.value)


def test_check_period_in_data_inside_the_candles_passes(hourly):
    check_period_in_data(hourly.index, "2024-01-02", "2024-01-02", what="x")
    check_period_in_data(hourly.index, None, None, what="x")
    with pytest.raises(CandleDataError, match="x holds no candles"):
        check_period_in_data(hourly.index[:0], None, None, what="x")
