"""Baselines in the same engine, slippage on every market fill, and the in-sample guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from atb_strategies.backtest.report import backtest_figure, format_summary
from atb_strategies.backtest.runner import run_backtest
from atb_strategies.cli.main import cli
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.strategies.ml_basic import MlBasic

pytestmark = pytest.mark.slow  # trains, runs the examples or runs live sessions

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def market():
    return generate_ohlcv(1500, timeframe="1h", seed=4)


def _run(market, **kwargs):
    settings = {"symbol": "BTCUSDT", "timeframe": "1h", "long_threshold": 0.0005, "commission": 0}
    return run_backtest(market, MlBasic, **{**settings, **kwargs})


def test_always_long_baseline_matches_a_hand_computed_return(market):
    result = _run(market, baselines=True, start=str(market.index[400]))
    row = result.summary["baselines"]["always_long"]
    first = market.index.get_loc(market.index[400])
    fill = market["open"].iloc[first + 1]  # bought at the next bar's open
    expected = 0.1 * (market["close"].iloc[-1] - fill) / market["close"].iloc[first]
    assert row["total_return"] == pytest.approx(expected, rel=1e-9)
    assert row["trades"] == 1 and row["fees_paid"] == 0
    assert set(result.summary["baselines"]) == {
        "buy_and_hold_scaled",
        "always_long",
        "sma_cross",
        "reversal_1bar",
    }


def test_scaled_buy_and_hold_uses_the_strategy_invested_fraction(market):
    result = _run(market, baselines=True, commission=0.001)
    scaled = result.summary["baselines"]["buy_and_hold_scaled"]
    assert scaled["fraction"] == pytest.approx(result.summary["invested_fraction"])
    assert 0 < scaled["fraction"] < 0.1
    for row in result.summary["baselines"].values():
        assert row["gross_return"] >= row["total_return"]  # fees only take away
        assert "sharpe" in row


def test_slippage_worsens_every_market_fill_by_its_basis_points(market):
    plain = _run(market)
    slipped = _run(market, slippage_bps=10)
    assert len(plain.orders) == len(slipped.orders) > 10
    for a, b in zip(plain.orders, slipped.orders, strict=True):
        if b["role"] in ("entry", "exit") and a["time"] == b["time"]:
            worse = b["price"] > a["price"] if b["side"] == "buy" else b["price"] < a["price"]
            assert worse
    assert slipped.summary["end_value"] < plain.summary["end_value"]


def test_in_sample_guard_splits_a_backtest_over_the_training_period(market):
    shipped = REPO / "models"
    real_like = generate_ohlcv(9000, timeframe="1h", seed=2, start="2024-06-01")
    result = run_backtest(
        real_like,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=str(shipped),
        long_threshold=0.0005,
    )
    guard = result.summary["in_sample"]
    assert guard["training_period"]["available_from"] == "2024-09-29 12:00:00"
    assert guard["in_sample_bars"] > 0 and guard["out_of_sample_bars"] > 0
    assert guard["in_sample"]["bars"] + guard["out_of_sample"]["bars"] == result.summary["bars"]
    assert "inside the training period" in guard["warning"]
    assert "WARNING:" in format_summary(result.summary)
    fig = backtest_figure(result, real_like)
    labels = fig.axes[-1].get_legend_handles_labels()[1]
    assert f"in-sample ({guard['in_sample_bars']:,} bars)" in labels


def test_atb_backtest_with_oos_only_starts_at_the_first_unseen_bar(tmp_path):
    real_like = generate_ohlcv(9000, timeframe="1h", seed=2, start="2024-06-01")
    real_like.to_csv(tmp_path / "c.csv")
    args = [
        "backtest",
        "ml_basic",
        "--data",
        str(tmp_path / "c.csv"),
        "--oos-only",
        "--no-baselines",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "2024-09-29 12:00:00 .." in result.stdout
    assert "In-sample bars         0 of" in result.stdout
    assert "WARNING" not in result.stdout


def test_in_sample_guard_with_reference_bundle_says_training_period_unknown(shared_dir, market):
    registry = shared_dir / "reference-bundles" / "models"
    frame = generate_ohlcv(600, timeframe="1h", seed=1)
    result = run_backtest(
        frame,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=str(registry),
        version="2025-10-30_12h_v1",
    )
    guard = result.summary["in_sample"]
    assert guard["training_period"] is None
    assert "training period unknown" in guard["warning"]


@pytest.mark.parametrize(
    ("param", "value", "words"),
    [
        ("position_size", 0, "(0, 1]"),
        ("position_size", 1.5, "(0, 1]"),
        ("stop_loss", 1, "[0, 1)"),
        ("take_profit", -0.1, ">= 0"),
        ("min_confidence", 2, "[0, 1]"),
        ("exit_threshold", float("nan"), ">= 0"),
        ("long_threshold", "high", "a number"),
    ],
)
def test_ml_strategy_with_bad_param_raises_one_line_naming_it(market, param, value, words):
    from atb_strategies.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match=f"The '{param}' parameter of MlBasic") as info:
        _run(market.iloc[:300], **{param: value})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_ml_strategy_with_position_size_one_is_accepted(market):
    assert _run(market.iloc[:300], position_size=1).summary["bars"] > 0


def test_split_by_period_keeps_bars_before_training_out_of_the_out_of_sample_part():
    import numpy as np
    import pandas as pd

    from atb_strategies.backtest.runner import split_by_period
    from atb_strategies.bundle.lineage import TrainingPeriod

    index = pd.date_range("2024-01-01", periods=300, freq="h", name="time")
    value = np.r_[np.full(100, 100.0), np.linspace(100, 150, 100), np.full(100, 150.0)]
    equity = pd.DataFrame({"value": value, "exposed": False}, index=index)
    candles = pd.DataFrame({"close": 1.0}, index=index)
    period = TrainingPeriod(index[100], index[199], index[200])
    split = split_by_period(equity, candles, [], "1h", period, "X/basic@v1")
    assert split["pre_training_bars"] == 100 and split["in_sample_bars"] == 100
    assert split["out_of_sample"]["total_return"] == 0.0  # the flat bars after training
    assert split["pre_training"]["total_return"] == 0.0
    assert split["in_sample"]["total_return"] == pytest.approx(
        150 / 100 * (100 / 100) - 1, rel=0.02
    )
    assert "trained on their future" in split["warning"]
