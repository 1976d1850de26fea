"""Dates, timeframes and candle files given to ``atb backtest``, ``atb train model`` and ``atb
train walk-forward``: impossible dates are refused before any work, dates outside the data
before the model is loaded, candles of another timeframe in one line naming both, too few
candles with the number the model needs; and ``run_backtest`` does the same in Python."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import backtrader as bt
import numpy as np
import pytest
from click.testing import CliRunner

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.cli.main import cli
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import CandleDataError, ConfigurationError, ModelNotFoundError
from atb_strategies.registry.registry import ModelRegistry
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import synthetic_candles


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATB_MODEL_REGISTRY_PATH", raising=False)


@pytest.fixture
def hourly_csv(tmp_path) -> Path:
    synthetic_candles(400).to_csv(tmp_path / "hourly.csv")
    return tmp_path / "hourly.csv"


def _one_error_line(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args)


# ---------------------------------------------------------------- end before start: no work


@pytest.mark.parametrize(
    "command",
    [
        ["backtest", "ml_basic"],
        ["train", "model", "BTCUSDT"],
        ["train", "walk-forward", "BTCUSDT", "--train-bars", "100", "--test-bars", "50"],
    ],
    ids=["backtest", "train", "walk-forward"],
)
def test_end_date_before_start_date_is_refused_before_reading_the_data(tmp_path, command):
    (tmp_path / "garbage.csv").write_bytes(b"\x00\x01 not candles")
    dates = ["--start-date", "2024-06-01", "--end-date", "2024-05-01T12:00"]
    line = _one_error_line(_invoke([*command, "--data", str(tmp_path / "garbage.csv"), *dates]))
    # the file was never read: its error would have come first otherwise
    assert "--end-date 2024-05-01T12:00 is before --start-date 2024-06-01" in line
    assert "garbage" not in line and "end=" not in line


# ---------------------------------------------------------------- dates outside the data


@pytest.mark.parametrize(
    ("dates", "says"),
    [
        (["--start-date", "2030-01-01"], "--start-date 2030-01-01 is after the last candle"),
        (["--end-date", "2023-06-30"], "--end-date 2023-06-30 is before the first candle"),
    ],
)
def test_backtest_with_dates_outside_the_data_is_refused_before_the_model(
    tmp_path, hourly_csv, dates, says
):
    empty_registry = tmp_path / "no-models"
    empty_registry.mkdir()
    args = ["backtest", "ml_basic", "--data", str(hourly_csv), *dates]
    line = _one_error_line(_invoke([*args, "--registry", str(empty_registry), "--no-progress"]))
    assert says in line
    assert f"{hourly_csv} covers 2024-01-01 00:00:00 .. 2024-01-17 15:00:00" in line
    assert "Model" not in line  # the (missing) model was never looked for


def test_train_with_start_after_the_data_is_refused_before_training(tmp_path, hourly_csv):
    args = ["train", "model", "BTCUSDT", "--data", str(hourly_csv), "--start-date", "2025-01-01"]
    line = _one_error_line(_invoke([*args, "--registry", str(tmp_path / "models")]))
    assert "--start-date 2025-01-01 is after the last candle" in line
    assert not (tmp_path / "models").exists()


# ---------------------------------------------------------------- too few candles


@pytest.mark.parametrize("rows", [1, 10])
def test_backtest_with_fewer_candles_than_the_model_reads_says_how_many(
    tmp_path, make_bundle, rows
):
    make_bundle()
    registry = tmp_path / "models"
    need = ModelRegistry(registry).select_bundle("BTCUSDT", "basic").pipeline.min_bars
    assert rows < need
    synthetic_candles(max(rows, 2)).iloc[:rows].to_csv(tmp_path / "short.csv")
    args = ["backtest", "ml_basic", "--data", str(tmp_path / "short.csv"), "--no-baselines"]
    line = _one_error_line(_invoke([*args, "--registry", str(registry), "--no-progress"]))
    model = "BTCUSDT/basic@2026-01-01_1h_v1"
    assert f"{rows} candle(s) given (2024-01-01 00:00:00 .. " in line
    assert f"model {model} needs at least {need}" in line


# ---------------------------------------------------------------- another timeframe


def test_backtest_of_daily_candles_with_the_hourly_default_names_both_timeframes(tmp_path):
    generate_ohlcv(750, timeframe="1d", seed=2).to_csv(tmp_path / "daily.csv")
    result = _invoke(["backtest", "ml_basic", "--data", str(tmp_path / "daily.csv")])
    line = _one_error_line(result)  # one line: no log line per "gap"
    assert "daily.csv holds 1d candles" in line and "not --timeframe 1h" in line
    assert "pass --timeframe 1d" in line


def test_backtest_with_timeframe_1d_on_an_hourly_model_gives_no_daily_default_hint(
    tmp_path, make_bundle
):
    make_bundle()
    generate_ohlcv(750, timeframe="1d", seed=2).to_csv(tmp_path / "daily.csv")
    args = ["backtest", "ml_basic", "--data", str(tmp_path / "daily.csv"), "--timeframe", "1d"]
    line = _one_error_line(_invoke([*args, "--registry", str(tmp_path / "models")]))
    assert "1h model" in line and "'1d'" in line
    assert "bt.TimeFrame" not in line and "compression" not in line  # the feed did not default


@pytest.mark.slow  # trains a small model
def test_train_without_timeframe_uses_the_data_s_own_and_says_so(tmp_path):
    generate_ohlcv(2000, timeframe="1d", seed=3).to_csv(tmp_path / "daily.csv")
    args = ["train", "model", "BTCUSDT", "--data", str(tmp_path / "daily.csv"), "--epochs", "1"]
    args += ["--sequence-length", "24", "--no-backtest", "--registry", str(tmp_path / "models")]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if line.startswith("timeframe:")]
    assert said == [
        f"timeframe: 1d, the spacing of the candles in --data {tmp_path / 'daily.csv'} (pass "
        "--timeframe to choose another)"
    ]
    assert "gap" not in result.stderr
    assert "_1d_v1" in result.stdout.splitlines()[0]


# ---------------------------------------------------------------- odd files


def _truncated_gzip(path: Path) -> Path:
    packed = gzip.compress(synthetic_candles(400).to_csv().encode())
    path.with_suffix(".csv.gz").write_bytes(packed[: len(packed) // 2])
    return path.with_suffix(".csv.gz")


def _ragged(path: Path) -> Path:
    lines = synthetic_candles(50).to_csv().splitlines()
    lines[3] += ",7"
    path.write_text("\n".join(lines) + "\n")
    return path


def _utf16(path: Path) -> Path:
    synthetic_candles(50).to_csv(path, encoding="utf-16")
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("make", [_truncated_gzip, _ragged, _utf16, _empty])
def test_backtest_with_an_odd_file_exits_1_with_one_line_naming_it(tmp_path, make):
    path = make(tmp_path / "candles.csv")
    line = _one_error_line(_invoke(["backtest", "ml_basic", "--data", str(path)]))
    assert line.startswith("error: CandleDataError: ")
    assert str(path) in line and "interrupted" not in line


def test_backtest_with_a_semicolon_csv_runs(tmp_path, make_bundle):
    make_bundle()
    synthetic_candles(300).to_csv(tmp_path / "semi.csv", sep=";")
    args = ["backtest", "ml_basic", "--data", str(tmp_path / "semi.csv"), "--no-baselines"]
    result = _invoke([*args, "--registry", str(tmp_path / "models"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Total return" in result.stdout


# ---------------------------------------------------------------- run_backtest in Python


def _python_backtest(tmp_path, candles, **kwargs):
    registry = str(tmp_path / "models")
    return run_backtest(
        candles, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=registry, **kwargs
    )


def test_run_backtest_with_impossible_dates_names_the_parameters(tmp_path, make_bundle):
    make_bundle()
    candles = synthetic_candles(300)
    with pytest.raises(ConfigurationError, match=r"end='2024-01-02' is before start='2024-01-05'"):
        _python_backtest(tmp_path, candles, start="2024-01-05", end="2024-01-02")
    with pytest.raises(ConfigurationError, match=r"start='2024-03-01' is after the last candle"):
        _python_backtest(tmp_path, candles, start="2024-03-01")


def test_run_backtest_with_too_few_candles_says_how_many_are_needed(tmp_path, make_bundle):
    make_bundle()
    with pytest.raises(CandleDataError, match=r"3 candle\(s\) given \(.*needs at least"):
        _python_backtest(tmp_path, synthetic_candles(3))


def test_run_backtest_without_a_single_prediction_warns_once(tmp_path, make_bundle, caplog):
    make_bundle()
    need = ModelRegistry(tmp_path / "models").select_bundle("BTCUSDT", "basic").pipeline.min_bars
    candles = synthetic_candles(20 * need)
    # a gap every need - 1 bars: every prediction's rows span one, so none is made (skip)
    gapped = candles[np.arange(len(candles)) % (need - 1) != 0]
    with caplog.at_level(logging.WARNING, logger="atb_strategies.backtest.runner"):
        result = _python_backtest(tmp_path, gapped)
    assert result.predictions["predicted_return"].isna().all()
    runner = "atb_strategies.backtest.runner"
    warnings = [r.getMessage() for r in caplog.records if r.name == runner]
    assert len(warnings) == 1
    assert "made no prediction" in warnings[0] and "bar(s) gap" in warnings[0]


def test_run_backtest_with_predictions_does_not_warn(tmp_path, make_bundle, caplog):
    make_bundle()
    with caplog.at_level(logging.WARNING, logger="atb_strategies.backtest.runner"):
        result = _python_backtest(tmp_path, synthetic_candles(300))
    assert result.predictions["predicted_return"].notna().any()
    assert not [r for r in caplog.records if r.name == "atb_strategies.backtest.runner"]


@pytest.mark.parametrize(("timeframe", "hinted"), [("1h", True), ("1d", False)])
def test_daily_default_hint_only_when_the_pandas_feed_really_defaulted(
    tmp_path, make_bundle, timeframe, hinted
):
    make_bundle()
    frame = generate_ohlcv(300, timeframe=timeframe, seed=4)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame), name="BTCUSDT")  # says daily
    cerebro.addstrategy(MlBasic, registry=str(tmp_path / "models"))
    with pytest.raises(ModelNotFoundError, match="timeframe '1d'") as caught:
        cerebro.run()
    assert ("PandasData defaults to daily" in str(caught.value)) is hinted
