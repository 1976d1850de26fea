"""Recipe windows, the default sequence length and annualisation follow the timeframe and the
calendar (issue 19 item 5); 24/7 ``1h`` stays exactly as the shipped models were trained."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
import pytest

from atb_strategies.bundle.format import FeatureSchema, FeatureSpec
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.periods import (
    bars_per_day,
    bars_per_week,
    bars_per_year,
    sessions_per_week,
)
from atb_strategies.training.config import TrainingConfig, default_sequence_length
from atb_strategies.training.recipes import recipe_for, windows_for

ROOT = Path(__file__).resolve().parents[2]


def _min_bars(model_type: str, recipe: str, timeframe: str, calendar: str, seq: int) -> int:
    features = recipe_for(model_type, recipe, timeframe=timeframe, calendar=calendar)
    specs = tuple(FeatureSpec(f.name, f.source, f.transforms) for f in features)
    return FeatureSchema(seq, specs).min_bars


def _periods(model_type: str, recipe: str, timeframe: str, calendar: str) -> dict[str, int]:
    features = recipe_for(model_type, recipe, timeframe=timeframe, calendar=calendar)
    return {f.name: t["period"] for f in features for t in f.transforms if "period" in t}


def _plain(features: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return [(f.name, f.source, f.transforms, f.standardize) for f in features]


def test_hourly_crypto_recipes_are_the_shipped_ones(tmp_path: Path) -> None:
    """The recipes before timeframes existed, read from git's copy of the old module."""
    old_path = tmp_path / "atb_old_recipes.py"
    old_source = subprocess.run(
        ["git", "show", "90e8f9e:atb_strategies/training/recipes.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if old_source.returncode != 0:
        pytest.skip("the commit before timeframe-aware recipes is not in this clone")
    old_path.write_text(old_source.stdout)
    spec = importlib.util.spec_from_file_location("atb_old_recipes", old_path)
    assert spec and spec.loader
    old = importlib.util.module_from_spec(spec)
    sys.modules["atb_old_recipes"] = old
    spec.loader.exec_module(old)
    for model_type in ("basic", "sentiment"):
        for recipe in ("price", "lags"):
            before = _plain(old.recipe_for(model_type, recipe))
            assert _plain(recipe_for(model_type, recipe)) == before
            assert _plain(recipe_for(model_type, recipe, timeframe="1h")) == before


def test_periods_per_calendar() -> None:
    assert (bars_per_day("24/7", "1h"), bars_per_week("24/7", "1h")) == (24, 168)
    assert bars_per_year("24/7", "1h") == 8760
    assert (bars_per_day("XNYS", "5m"), bars_per_week("XNYS", "5m")) == (78, 390)
    assert (bars_per_day("XNYS", "1d"), bars_per_week("XNYS", "1d")) == (1, 5)
    assert 250 <= bars_per_year("XNYS", "1d") <= 253  # 2024's sessions, holidays off
    assert bars_per_year("weekdays", "1d") == 262
    assert sessions_per_week("24/7") == 7 and sessions_per_week("XNYS") == 5
    assert bars_per_week("24/7", "1w") == 1


@pytest.mark.parametrize(
    ("timeframe", "calendar", "volume", "volatility", "day"),
    [
        ("1h", "24/7", 168, 24, 24),
        ("4h", "24/7", 42, 20, 6),
        ("1d", "24/7", 20, 20, 1),
        ("1d", "XNYS", 20, 20, 1),
        ("5m", "XNYS", 390, 78, 78),
    ],
)
def test_windows_follow_the_timeframe(
    timeframe: str, calendar: str, volume: int, volatility: int, day: int
) -> None:
    w = windows_for(timeframe, calendar)
    assert (w.volume, w.volatility, w.day, w.rsi) == (volume, volatility, day, 14)
    periods = _periods("sentiment", "lags", timeframe, calendar)
    assert periods == {"realized_vol": volatility, "volume_z": volume, "sentiment_change": day}
    assert _periods("basic", "price", timeframe, calendar) == {"volume_z": volume, "rsi": 14}


def test_a_daily_model_predicts_within_about_60_bars() -> None:
    seq = default_sequence_length("1d")
    for recipe in ("price", "lags"):
        assert _min_bars("basic", recipe, "1d", "XNYS", seq) <= 60
    # before: a 168-bar volume z-score and 120-bar windows, 289 bars
    assert _min_bars("basic", "price", "1h", "24/7", 120) > 280


def test_default_sequence_length_follows_the_timeframe() -> None:
    assert TrainingConfig(symbol="X").sequence_length == 120
    assert TrainingConfig(symbol="X", timeframe="5m").sequence_length == 120
    assert TrainingConfig(symbol="X", timeframe="1d").sequence_length == 30
    assert TrainingConfig(symbol="X", timeframe="1d", sequence_length=64).sequence_length == 64
    with pytest.raises(ConfigurationError, match="'sequence_length' parameter"):
        TrainingConfig(symbol="X", sequence_length=1)


def test_sequence_length_option_states_its_real_limit() -> None:
    from atb_strategies.cli.train import model
    from atb_strategies.cli.walkforward import walk_forward

    for command in (model, walk_forward):
        (option,) = [p for p in command.params if p.name == "sequence_length"]
        assert isinstance(option.type, click.IntRange) and option.type.min == 2
        assert "at least 2" in (option.help or "")


def test_sharpe_annualises_by_the_calendars_trading_bars() -> None:
    from atb_strategies.backtest.runner import value_metrics
    from atb_strategies.features.calendar import get_calendar

    rng = np.random.default_rng(0)
    stamps = pd.date_range("2024-03-04 14:30", periods=400, freq="5min")
    values = pd.Series(10_000 * np.cumprod(1 + rng.normal(2e-5, 1e-3, 400)), index=stamps)
    always = value_metrics(values, "5m")
    assert always == value_metrics(values, "5m", "24/7")
    stocks = value_metrics(values, "5m", get_calendar("XNYS"))
    ratio = math.sqrt(bars_per_year("24/7", "5m") / bars_per_year("XNYS", "5m"))
    assert always["sharpe"] == pytest.approx(stocks["sharpe"] * ratio)
    assert always["sortino"] == pytest.approx(stocks["sortino"] * ratio)
    assert always["cagr"] == stocks["cagr"]  # calendar years either way


def test_walk_forward_embargo_covers_the_familys_recipe_for_these_bars() -> None:
    from atb_strategies.evaluation.walkforward import WalkForwardConfig

    base = {"symbol": "X", "train_bars": 500, "test_bars": 100, "sequence_length": 24}
    hourly_ridge = WalkForwardConfig(architecture="ridge", **base)
    assert hourly_ridge.sample_bars() == _min_bars("basic", "lags", "1h", "24/7", 24)
    daily_mlp = WalkForwardConfig(timeframe="1d", calendar="XNYS", **base)
    assert daily_mlp.sample_bars() == _min_bars("basic", "lags", "1d", "XNYS", 24)
    assert daily_mlp.resolved_embargo() == 1 + daily_mlp.sample_bars()
    assert daily_mlp.sample_bars() < hourly_ridge.sample_bars()
    daily_gru = WalkForwardConfig(architecture="gru", timeframe="1d", calendar="XNYS", **base)
    assert daily_gru.sample_bars() == _min_bars("basic", "price", "1d", "XNYS", 24)
