"""Markets that close (issue 19): training and serving in trading time with ``--calendar``.

Daily stock candles on the XNYS sessions of 2015-2024 (weekends and holidays closed) and
5-minute session candles (09:30-16:00 New York, 78 bars a day) are built with the project's
generator and re-stamped onto the sessions of the exchange_calendars library. Everything is
real: the trainer fits and exports, onnxruntime serves, backtrader runs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.bundle.jsonio import read_json
from atb_strategies.config import PredictionConfig
from atb_strategies.data.feeds import make_feed
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.evaluation.folds import Fold
from atb_strategies.exceptions import CandleDataError, ConfigurationError
from atb_strategies.features.periods import bars_per_year
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.sweep import run_sweep
from atb_strategies.sweep.predictions import model_bars_per_year
from atb_strategies.training.trainer import TrainingConfig, train_model
from tests.conftest import BundleFactory

xcals = pytest.importorskip("exchange_calendars")

pytestmark = pytest.mark.slow  # trains models

SEQ = 20
BASE = {"sequence_length": SEQ, "epochs": 3, "seed": 0, "force_promote": True}


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No ATB_* variables, ./atb.toml or ./models influence training or its quick backtest."""
    work = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith("ATB_"):
                mp.delenv(var)
        mp.chdir(work)
        yield work


def _schedule(start: str, end: str) -> pd.DataFrame:
    with warnings.catch_warnings():  # the library's own pandas deprecation notices
        warnings.simplefilter("ignore")
        return xcals.get_calendar("XNYS", start=start, end=end).schedule


def daily_stock_candles(start: str = "2015-01-01", end: str = "2024-12-31") -> pd.DataFrame:
    """A random walk on the XNYS sessions, stamped at each session's date (Yahoo style)."""
    days = _schedule(start, end).index
    frame = generate_ohlcv(len(days), timeframe="1d", seed=5, start_price=40.0)
    frame.index = pd.DatetimeIndex(days, name="timestamp")
    return frame


def session_candles(start: str = "2024-01-02", end: str = "2024-04-30") -> pd.DataFrame:
    """5-minute candles inside the XNYS sessions (UTC open times), 78 a full day."""
    sched = _schedule(start, end)
    stamps = np.concatenate(
        [
            pd.date_range(o, c, freq="5min", inclusive="left").tz_convert(None).as_unit("ns")
            for o, c in zip(sched["open"], sched["close"], strict=True)
        ]
    )
    frame = generate_ohlcv(len(stamps), timeframe="5m", seed=9, start_price=100.0)
    frame.index = pd.DatetimeIndex(stamps, name="timestamp")
    return frame


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    return daily_stock_candles()


@pytest.fixture(scope="module")
def daily_model(tmp_path_factory: pytest.TempPathFactory, daily: pd.DataFrame) -> Path:
    registry = tmp_path_factory.mktemp("daily")
    config = TrainingConfig(
        symbol="ORCL", timeframe="1d", registry=registry, calendar="XNYS", **BASE
    )
    result = train_model(config, daily)
    assert result.metrics["test"]["samples"] >= 100
    return result.path


class _Record(bt.Strategy):
    params = (("registry", None), ("symbol", None))

    def __init__(self) -> None:
        self.pred = MlPrediction(self.data, registry=self.p.registry, symbol=self.p.symbol)
        self.values: list[float] = []

    def next(self) -> None:
        self.values.append(self.pred.predicted_return[0])


def _predictions(feed: bt.AbstractDataBase, registry: Path, **kwargs) -> tuple:
    cerebro = bt.Cerebro(stdstats=False, **kwargs)
    cerebro.adddata(feed, name="ORCL")
    cerebro.addstrategy(_Record, registry=str(registry))
    strat = cerebro.run()[0]
    return np.array(strat.values), strat.pred


def _registry(bundle_path: Path) -> Path:
    return bundle_path.parents[2]


# ---------------------------------------------------------------- daily stock data


def test_train_model_with_xnys_calendar_on_daily_stock_candles_records_calendar(
    daily_model: Path,
) -> None:
    meta = read_json(daily_model / "metadata.json")
    schema = read_json(daily_model / "feature_schema.json")
    assert meta["calendar"] == "XNYS"
    assert meta["training"]["data"]["gaps"] == 0  # no weekend or holiday counted as a gap
    assert schema["warmup_bars"] < 300


def test_train_model_without_calendar_on_daily_stock_candles_names_the_calendar_that_fits(
    tmp_path: Path, daily: pd.DataFrame
) -> None:
    config = TrainingConfig(symbol="ORCL", timeframe="1d", registry=tmp_path / "r", **BASE)
    with pytest.raises(ConfigurationError) as err:
        train_model(config, daily)
    message = str(err.value)
    assert "calendar='XNYS'" in message
    assert "weekends and holidays" in message
    assert "\n" not in message


@pytest.mark.parametrize("mode", [{}, {"runonce": False}], ids=["runonce", "next"])
def test_ml_prediction_with_xnys_bundle_predicts_on_nearly_every_bar_after_warm_up(
    daily_model: Path, daily: pd.DataFrame, mode: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        values, pred = _predictions(
            make_feed(daily, timeframe="1d"), _registry(daily_model), **mode
        )
    assert pred.calendar.name == "XNYS"
    assert np.isfinite(values).mean() >= 0.98
    assert pred.skipped_bars == 0 and pred.gap_bars == []
    assert pred.silence_warning is None
    assert "no prediction" not in caplog.text


def test_ml_prediction_with_xnys_bundle_gives_identical_values_runonce_and_bar_by_bar(
    daily_model: Path, daily: pd.DataFrame
) -> None:
    once, _ = _predictions(make_feed(daily, timeframe="1d"), _registry(daily_model))
    bars, _ = _predictions(make_feed(daily, timeframe="1d"), _registry(daily_model), runonce=False)
    streamed, _ = _predictions(
        make_feed(daily, timeframe="1d"), _registry(daily_model), preload=False
    )
    np.testing.assert_array_equal(once, bars)
    np.testing.assert_allclose(streamed, once, rtol=1e-6, atol=1e-9)


def test_ml_prediction_with_xnys_bundle_skips_windows_over_a_bar_missing_inside_sessions(
    daily_model: Path, daily: pd.DataFrame
) -> None:
    missing_at = 1000  # a trading day removed: a real gap
    values, pred = _predictions(
        make_feed(daily.drop(daily.index[missing_at]), timeframe="1d"), _registry(daily_model)
    )
    min_bars = pred.bundle.pipeline.min_bars
    assert len(pred.gap_bars) == 1
    assert pred.skipped_bars == min_bars - 1
    positions = np.arange(min_bars - 1, len(daily) - 1)
    spans = (positions - min_bars + 1 < missing_at) & (positions >= missing_at)
    assert np.isnan(values[spans]).all()


def test_ml_prediction_with_xnys_bundle_refuses_a_bar_on_a_closed_day(
    daily_model: Path, daily: pd.DataFrame
) -> None:
    saturday = pd.Timestamp("2020-06-06")
    extra = daily.iloc[[0]].set_axis(pd.DatetimeIndex([saturday], name="timestamp"))
    with pytest.raises(CandleDataError, match="outside the sessions of calendar 'XNYS'"):
        _predictions(
            make_feed(pd.concat([daily, extra]).sort_index(), timeframe="1d"),
            _registry(daily_model),
        )


def test_prediction_engine_with_xnys_bundle_predicts_across_weekends(
    daily_model: Path, daily: pd.DataFrame
) -> None:
    engine = PredictionEngine(
        PredictionConfig(model_registry_path=_registry(daily_model)), gap_policy="raise"
    )
    series = engine.predict_series(daily.iloc[-400:], "ORCL", "basic", "1d")
    assert np.isfinite(series["predicted_return"]).all()
    one = engine.predict(daily.iloc[-400:], "ORCL", "basic", "1d")
    assert one.predicted_return == pytest.approx(series["predicted_return"].iloc[-1], rel=1e-6)


@pytest.mark.parametrize("mode", [{}, {"preload": False}], ids=["runonce", "streaming"])
def test_ml_prediction_with_24_7_bundle_on_closing_market_warns_once_naming_the_calendar(
    make_bundle: BundleFactory, caplog: pytest.LogCaptureFixture, mode: dict
) -> None:
    # a crypto-style (24/7) model served on daily stock bars: every window spans a weekend
    path = make_bundle(symbol="ORCL", timeframe="1d", version="2026-01-01_1d_v1")
    stock = daily_stock_candles("2019-01-01", "2020-12-31")
    with caplog.at_level(logging.WARNING):
        values, pred = _predictions(make_feed(stock, timeframe="1d"), _registry(path), **mode)
    warnings = [r.getMessage() for r in caplog.records if "no prediction in the" in r.getMessage()]
    assert len(warnings) == 1
    min_bars = pred.bundle.pipeline.min_bars
    assert f"no prediction in the {min_bars} bars after the warm-up" in warnings[0]
    assert "skipped because their" in warnings[0]
    if not mode:  # the batch path sees the whole feed and names the calendar that fits
        assert "calendar='XNYS'" in warnings[0]
    else:
        assert "--calendar XNYS" in warnings[0]
    assert pred.silence_warning == warnings[0]
    assert pred.skipped_bars > 0 and not np.isfinite(values).any()


def test_sweep_screen_and_walk_forward_on_xnys_model_annualise_like_its_backtests(
    daily_model: Path, daily: pd.DataFrame, tmp_path: Path
) -> None:
    """Sharpe per trading year of the model's calendar (about 252 daily bars on XNYS, not
    365) in the screen, the walk-forward selection and the backtests alike."""
    registry = str(_registry(daily_model))
    per_year = bars_per_year("XNYS", "1d")
    assert 245 < per_year < 256
    assert model_bars_per_year(
        MlBasic, symbol="ORCL", timeframe="1d", params={"registry": registry}
    ) == pytest.approx(per_year)
    settings = {"symbol": "ORCL", "params": {"registry": registry}, "executor": "serial"}
    grid = {"long_threshold": [-1.0, 0.0], "stop_loss": [0.02, 0.05]}
    full = run_sweep("ml_basic", daily, grid, **settings)
    run_sweep("ml_basic", daily, grid, screen=True, verify=1, out=tmp_path, **settings)
    screen = pd.read_csv(tmp_path / "screen.csv")
    assert list(screen["cell"]) == list(full["cell"])
    assert (full["trades"] > 0).all()
    np.testing.assert_allclose(screen["sharpe"], full["sharpe"], rtol=1e-6)

    def whole(n: int) -> list[Fold]:  # one fold: every bar but the first is tested
        return [Fold(number=1, train_start=0, val_start=0, train_end=1, test_start=1, test_end=n)]

    one = run_sweep("ml_basic", daily, {"stop_loss": [0.02]}, walk_forward=whole, **settings)
    stitched = one.attrs["walk_forward"]["out_of_sample"]
    assert stitched["bars"] >= 2000
    assert stitched["sharpe"] == pytest.approx(one["sharpe"].iloc[0], rel=0.02)


# ---------------------------------------------------------------- 5-minute sessions


def test_train_model_with_xnys_calendar_on_5_minute_sessions_predicts_through_nights(
    tmp_path: Path,
) -> None:
    frame = session_candles()
    assert (frame.groupby(frame.index.date).size().max()) == 78
    config = TrainingConfig(
        symbol="ORCL", timeframe="5m", registry=tmp_path / "r", calendar="XNYS", **BASE
    )
    result = train_model(config, frame)
    assert read_json(result.path / "metadata.json")["calendar"] == "XNYS"
    once, pred = _predictions(make_feed(frame, timeframe="5m"), tmp_path / "r")
    bars, _ = _predictions(make_feed(frame, timeframe="5m"), tmp_path / "r", runonce=False)
    np.testing.assert_array_equal(once, bars)
    assert np.isfinite(once).mean() >= 0.98
    assert pred.gap_bars == []


# ---------------------------------------------------------------- the CLI, a Yahoo file


def _atb(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "atb_strategies.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_cli_train_with_yahoo_csv_and_calendar_infers_timeframe_and_registers(
    tmp_path: Path, daily: pd.DataFrame
) -> None:
    yahoo = daily.iloc[-1500:].copy()
    yahoo.insert(4, "Adj Close", yahoo["close"] * 0.9)
    yahoo.index = yahoo.index.strftime("%Y-%m-%d")
    yahoo.columns = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
    path = tmp_path / "orcl.csv"
    yahoo.to_csv(path, index_label="Date")
    common = ["train", "model", "ORCL", "--data", str(path), "--sequence-length", str(SEQ)]
    common += ["--epochs", "2", "--force-promote", "--no-backtest"]

    refused = _atb(*common, "--registry", str(tmp_path / "a"), cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].startswith("error: ")
    assert "pass --calendar XNYS" in refused.stderr.splitlines()[-1]
    assert "Traceback" not in refused.stderr

    done = _atb(
        *common, "--calendar", "XNYS", "--json", "--registry", str(tmp_path / "b"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    meta = read_json(next((tmp_path / "b").glob("ORCL/basic/*/metadata.json")))
    assert meta["calendar"] == "XNYS" and meta["timeframe"] == "1d"
    assert json.loads(done.stdout)["test"]["samples"] >= 10


def test_cli_train_with_local_date_time_session_file_and_data_tz_registers(
    tmp_path: Path,
) -> None:
    frame = session_candles("2024-02-01", "2024-04-30")
    local = frame.index.tz_localize("UTC").tz_convert("America/New_York")
    table = frame.reset_index(drop=True)
    table.insert(0, "Time", local.strftime("%H:%M:%S"))
    table.insert(0, "Date", local.strftime("%Y-%m-%d"))
    table["OpenInterest"] = 0
    path = tmp_path / "session.txt"
    table.to_csv(path, index=False)
    common = ["train", "model", "ORCL", "--data", str(path), "--calendar", "XNYS"]
    common += ["--sequence-length", str(SEQ), "--epochs", "2", "--force-promote", "--no-backtest"]

    utc = _atb(*common, "--registry", str(tmp_path / "a"), cwd=tmp_path)
    assert utc.returncode == 1
    assert "outside the sessions of calendar 'XNYS'" in utc.stderr.splitlines()[-1]

    done = _atb(
        *common, "--data-tz", "America/New_York", "--registry", str(tmp_path / "b"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    meta = read_json(next((tmp_path / "b").glob("ORCL/basic/*/metadata.json")))
    assert meta["calendar"] == "XNYS" and meta["timeframe"] == "5m"
    assert meta["training"]["data"]["gaps"] == 0

    backtest = ["backtest", "ml_basic", "--symbol", "ORCL", "--timeframe", "5m"]
    backtest += ["--data", str(path), "--registry", str(tmp_path / "b"), "--no-baselines"]
    backtest += ["--no-progress", "--out", str(tmp_path / "out")]
    shifted = _atb(*backtest, cwd=tmp_path)
    assert shifted.returncode == 1
    assert "outside the sessions of calendar 'XNYS'" in shifted.stderr.splitlines()[-1]
    ran = _atb(*backtest, "--data-tz", "America/New_York", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "No prediction" in line)
    missing = int(lines[at].split()[2].replace(",", ""))  # "No prediction  N of M bars"
    reasons = lines[at + 1 : next(i for i in range(at + 1, len(lines)) if "In-sample" in lines[i])]
    assert [r.split(":")[0].strip() for r in reasons] == [str(missing)]  # one reason: warm-up
    assert "warm-up" in reasons[0]


def test_run_backtest_with_xnys_bundle_counts_a_missing_friday_as_one_bar(
    daily_model: Path, daily: pd.DataFrame
) -> None:
    from atb_strategies.backtest.runner import run_backtest
    from atb_strategies.strategies.ml_basic import MlBasic

    fridays = np.flatnonzero(daily.index.day_of_week == 4)
    friday = int(fridays[fridays > len(daily) - 200][0])  # inside the traded period
    result = run_backtest(
        daily.drop(daily.index[friday]),
        MlBasic,
        symbol="ORCL",
        timeframe="1d",
        start=str(daily.index[len(daily) - 300].date()),
        registry=str(_registry(daily_model)),
        baselines=False,
    )
    gaps = result.summary["gaps"]
    assert [(g["after"], g["resumes"], g["missing_bars"]) for g in gaps] == [
        (str(daily.index[friday - 1]), str(daily.index[friday + 1]), 1)
    ]
    assert result.summary["no_prediction"]["gap"]["bars"] > 0
    assert "warm_up" not in result.summary["no_prediction"]


def test_train_model_with_csv_sessions_of_102_bars_records_and_serves_them(
    tmp_path: Path,
) -> None:
    days = pd.bdate_range("2024-01-01", "2024-03-29")
    opens = days + pd.Timedelta(hours=8, minutes=30)
    closes = opens + pd.Timedelta(minutes=5 * 102)
    sessions = tmp_path / "sessions.csv"
    pd.DataFrame({"open": opens, "close": closes}).to_csv(sessions, index=False)
    stamps = np.concatenate(
        [
            pd.date_range(o, c, freq="5min", inclusive="left").as_unit("ns")
            for o, c in zip(opens, closes, strict=True)
        ]
    )
    frame = generate_ohlcv(len(stamps), timeframe="5m", seed=3, start_price=20.0)
    frame.index = pd.DatetimeIndex(stamps, name="timestamp")
    config = TrainingConfig(
        symbol="ORCL", timeframe="5m", registry=tmp_path / "r", calendar=f"csv:{sessions}", **BASE
    )
    result = train_model(config, frame)
    assert read_json(result.path / "metadata.json")["calendar"] == f"csv:{sessions.resolve()}"
    values, pred = _predictions(make_feed(frame, timeframe="5m"), tmp_path / "r")
    assert np.isfinite(values).mean() >= 0.98 and pred.gap_bars == []


def test_cli_walk_forward_with_xnys_calendar_trains_folds_and_predicts_every_asof_bar(
    tmp_path: Path, daily: pd.DataFrame
) -> None:
    path = tmp_path / "orcl.csv"
    daily.iloc[-1500:].to_csv(path, index_label="Date")
    run = _atb(
        *["train", "walk-forward", "ORCL", "--data", str(path), "--calendar", "XNYS"],
        *["--train-bars", "900", "--test-bars", "150", "--max-folds", "2", "--seeds", "1"],
        *["--epochs", "2", "--sequence-length", str(SEQ), "--workers", "1", "--no-progress"],
        *["--registry", str(tmp_path / "wf")],
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    metas = [read_json(p) for p in (tmp_path / "wf").glob("ORCL/basic/*/metadata.json")]
    assert len(metas) == 2 and {m["calendar"] for m in metas} == {"XNYS"}
    line = next(x for x in run.stdout.splitlines() if "No prediction" in x)
    assert line.split()[2] == "0", line  # the asof backtest predicted on every bar
