"""Fixes from a review of this round's merged work: each asserts behaviour that was wrong."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.report import write_trades
from atb_strategies.backtest.runner import BacktestResult
from atb_strategies.bundle.format import OutputSpec
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.inference.decode import decode
from atb_strategies.training.config import TrainingConfig


def test_decode_of_a_50_50_class_vector_is_direction_0_not_the_first_class() -> None:
    spec = OutputSpec("class_probabilities", classes=("down", "up"))
    raw = np.array([[0.5, 0.5], [0.4, 0.6], [0.7, 0.3], [0.5004, 0.4996]])
    out = decode(spec, raw, None)
    # a no-skill classifier's 50/50 (temperature 0) used to decode as "down", so MlStrategy
    # with allow_shorts sold short on every bar
    assert out.direction.tolist() == [0, 1, -1, 0]
    assert out.reason is None or all(r is None for r in out.reason)


def test_training_config_refuses_an_uncalibrated_direction_classifier() -> None:
    with pytest.raises(ConfigurationError, match="calibrate"):
        TrainingConfig(symbol="X", target="direction", architecture="ridge", calibrate=False)
    # unset, it calibrates
    TrainingConfig(symbol="X", target="direction", architecture="ridge")


def test_trades_json_is_strict_json_when_a_trade_has_no_predicted_return(tmp_path) -> None:
    trade = {"ref": 1, "entry_predicted_return": math.nan, "entry_confidence": 0.7, "pnl": 1.5}
    result = BacktestResult(summary={"bars": 1}, equity=None, orders=[], trades=[trade])
    paths = write_trades(result, tmp_path)
    text = paths["trades_json"].read_text()
    rows = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert rows[0]["entry_predicted_return"] is None and rows[0]["pnl"] == 1.5


def test_sweep_fed_candles_read_a_bare_end_date_as_its_whole_day_like_run_backtest() -> None:
    """The sweep computes predictions once over the candles a cell's backtest feeds; with the
    old cut (``loc[:Timestamp(end)]``) a bare end date stopped at midnight, every cell missed
    the shared predictions and recomputed them."""
    from atb_strategies.data.synthetic import generate_ohlcv
    from atb_strategies.strategies.ml_basic import MlBasic
    from atb_strategies.sweep.predictions import fed_candles

    candles = generate_ohlcv(24 * 5, timeframe="1h", seed=0)
    day = candles.index[24 * 2].strftime("%Y-%m-%d")
    fed = fed_candles(
        candles, MlBasic, symbol="BTCUSDT", timeframe="1h", start=None, end=day, params={}
    )
    assert fed.index[-1] == candles.index[24 * 2] + pd.Timedelta(hours=23)
