"""Bars without a prediction in a backtest: counted and explained in the summary, the printed
report, ``summary.json`` and the decision log; candles older than the model's history need
before ``start`` are not fed at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.report import format_summary, write_trades
from atb_strategies.backtest.runner import model_history_bars, run_backtest
from atb_strategies.data.feeds import make_feed
from atb_strategies.exceptions import CandleDataError
from atb_strategies.strategies.base import NO_PREDICTION_REASONS
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import RICH_FEATURES, BundleFactory, synthetic_candles

GAP_AT = 300  # the candle at this position is removed
START_AT = 100  # first traded bar (position in the gapped candles)
GAP_REASON = "no prediction: its rows span a gap in the candles"


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    make_bundle()  # fixed look-back features: history_bars == min_bars
    return str(tmp_path / "models")


@pytest.fixture
def gapped() -> pd.DataFrame:
    frame = synthetic_candles(600)
    return frame.drop(frame.index[GAP_AT])


def _min_bars(registry: str) -> int:
    history = model_history_bars(
        MlBasic, symbol="BTCUSDT", timeframe="1h", params={"registry": registry}
    )
    assert history is not None
    return history


def _backtest(candles: pd.DataFrame, registry: str, **kwargs):
    return run_backtest(
        candles, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=registry, **kwargs
    )


# ---------------------------------------------------------------- summary, report, summary.json


def test_run_backtest_with_gap_counts_bars_without_prediction_and_names_the_gap(
    registry, gapped, tmp_path
):
    min_bars = _min_bars(registry)
    assert min_bars <= START_AT  # the traded bars have no warm-up to do

    result = _backtest(gapped, registry, start=gapped.index[START_AT])

    summary = result.summary
    assert summary["bars_without_prediction"] == min_bars - 1
    assert summary["no_prediction"] == {
        "gap": {"bars": min_bars - 1, "why": NO_PREDICTION_REASONS["gap"]}
    }
    assert summary["gaps"] == [
        {
            "after": str(gapped.index[GAP_AT - 1]),
            "resumes": str(gapped.index[GAP_AT]),
            "missing_bars": 1,
        }
    ]
    assert summary["gap_policy"] == "skip"
    assert summary["model_key"].startswith("BTCUSDT/basic@")
    # exactly the bars whose warm-up + window rows span the gap, by open time
    skipped = result.no_prediction[result.no_prediction == "gap"].index
    assert list(skipped) == list(gapped.index[GAP_AT : GAP_AT + min_bars - 1])
    assert result.predictions.loc[skipped, "predicted_return"].isna().all()

    text = format_summary(summary, "MlBasic")
    assert f"No prediction          {min_bars - 1} of {summary['bars']:,} bars" in text
    assert f"{min_bars - 1}: its rows span a gap in the candles" in text
    assert f"1 missing after {gapped.index[GAP_AT - 1]}" in text

    write_trades(result, tmp_path / "report")
    written = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert written["bars_without_prediction"] == min_bars - 1
    assert written["no_prediction"]["gap"]["why"] == "its rows span a gap in the candles"


def test_run_backtest_without_start_counts_warm_up_bars_apart_from_gap_bars(registry, gapped):
    min_bars = _min_bars(registry)

    summary = _backtest(gapped, registry).summary

    assert summary["bars"] == len(gapped)
    assert {code: v["bars"] for code, v in summary["no_prediction"].items()} == {
        "warm_up": min_bars - 1,
        "gap": min_bars - 1,
    }
    assert summary["bars_without_prediction"] == 2 * (min_bars - 1)
    assert "the model's warm-up" in format_summary(summary)


def test_run_backtest_with_warn_policy_lists_gap_but_predicts_every_bar(registry, gapped):
    summary = _backtest(gapped, registry, start=gapped.index[START_AT], gap_policy="warn").summary

    assert summary["bars_without_prediction"] == 0
    assert summary["no_prediction"] == {}
    assert len(summary["gaps"]) == 1
    assert "gap_policy 'warn': predicted across them" in format_summary(summary)


# ---------------------------------------------------------------- decision log


class _Modes:
    PARAMS = pytest.mark.parametrize(
        "mode",
        [{}, {"runonce": False}, {"preload": False}, {"exactbars": 1}],
        ids=["runonce", "next", "streaming", "exactbars"],
    )


@_Modes.PARAMS
def test_decisions_with_gap_record_a_skip_with_reason_at_each_bar_without_prediction(
    registry, gapped, mode
):
    min_bars = _min_bars(registry)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(make_feed(gapped, timeframe="1h"), name="BTCUSDT")
    cerebro.addstrategy(MlBasic, registry=registry, long_threshold=-1.0)
    (strategy,) = cerebro.run(**mode)

    decisions = strategy.decisions
    closes = gapped.index + pd.Timedelta("1h")  # decisions carry bar close times
    # one decision per bar from the first complete window on, skipped bars included
    assert [d["bar"] for d in decisions] == [t.isoformat() for t in closes[min_bars - 1 :]]
    skips = [d for d in decisions if d["action"] == "skip"]
    assert [d["bar"] for d in skips] == [
        t.isoformat() for t in closes[GAP_AT : GAP_AT + min_bars - 1]
    ]
    for d in skips:
        assert d["reason"] == GAP_REASON
        assert d["gap_bar"] == closes[GAP_AT].isoformat()
        assert d["signal"] == "none" and np.isnan(d["predicted_return"])
    others = [d for d in decisions if d["action"] != "skip"]
    assert all(d["reason"] is None and np.isfinite(d["predicted_return"]) for d in others)
    assert {"enter_long", "exit"} <= {d["action"] for d in others}  # it does trade


def test_decisions_with_log_decisions_log_the_skip_reason(registry, gapped, caplog):
    caplog.set_level("INFO", logger="atb_strategies.strategies.base")
    _backtest(gapped, registry, log_decisions=True, record_decisions=False)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().endswith("-> skip")]
    assert len(skipped) == _min_bars(registry) - 1
    assert GAP_REASON in skipped[0]
    after_gap = gapped.index[GAP_AT] + pd.Timedelta("1h")  # its close time
    assert f"gap before the bar closing at {after_gap.isoformat()}" in skipped[0]


# ---------------------------------------------------------------- only the history need is fed


def _break(frame: pd.DataFrame, how: str, at: int) -> pd.DataFrame:
    if how == "gap":
        return frame.drop(frame.index[at])
    broken = frame.copy()
    broken.iloc[at, broken.columns.get_loc("close")] = np.nan
    return broken


@pytest.mark.parametrize(
    ("how", "policy"),
    [("gap", "raise"), ("gap", None), ("nan_close", None)],
    ids=["gap-raise", "gap-skip", "nan-close"],
)
def test_run_backtest_with_start_ignores_bad_candles_older_than_the_history_need(
    registry, how, policy
):
    clean = synthetic_candles(900)
    start = clean.index[700]
    broken = _break(clean, how, 150)  # far before start - history_bars
    params = {"start": start, "long_threshold": -1.0}
    if policy:
        params["gap_policy"] = policy
    # the problem is real: fed from the first candle, the backtest fails on it
    with pytest.raises(CandleDataError):
        _backtest(broken, registry, gap_policy="raise")

    expected = _backtest(clean, registry, **params)
    result = _backtest(broken, registry, **params)

    assert result.summary["trades"] > 10
    assert result.summary == expected.summary
    assert result.trades == expected.trades
    assert result.summary["bars_without_prediction"] == 0 and result.summary["gaps"] == []


def test_run_backtest_with_start_feeds_history_bars_before_it_and_predicts_at_start(registry):
    candles = synthetic_candles(900)
    history = _min_bars(registry)
    start = candles.index[700]

    result = _backtest(candles, registry, start=start)

    assert result.predictions.index[0] == candles.index[700 - (history - 1)]
    assert np.isfinite(result.predictions.loc[start, "predicted_return"])
    assert result.predictions.loc[:start, "predicted_return"].iloc[:-1].isna().all()
    assert result.summary["start"] == str(start)
    assert result.summary["bars_without_prediction"] == 0


def test_run_backtest_with_start_and_gap_inside_the_history_need_counts_traded_bars_skipped(
    registry,
):
    history = _min_bars(registry)
    clean = synthetic_candles(900)
    candles = clean.drop(clean.index[695])
    start = candles.index[700]  # 5 bars after the gap: its rows still span it

    summary = _backtest(candles, registry, start=start).summary

    # bars 695 .. 695 + history - 2 lack a prediction; 700 onwards are traded
    assert summary["no_prediction"]["gap"]["bars"] == history - 1 - 5
    assert [g["resumes"] for g in summary["gaps"]] == [str(candles.index[695])]


def test_run_backtest_with_recursive_features_keeps_all_history(make_bundle, tmp_path):
    make_bundle(features=(RICH_FEATURES[1], RICH_FEATURES[4]))  # log return + EMA (recursive)
    registry = str(tmp_path / "models")
    candles = synthetic_candles(900)
    assert (
        model_history_bars(MlBasic, symbol="BTCUSDT", timeframe="1h", params={"registry": registry})
        is None
    )

    result = _backtest(candles, registry, start=candles.index[700])

    assert result.predictions.index[0] == candles.index[0]
    assert result.summary["start"] == str(candles.index[700])
