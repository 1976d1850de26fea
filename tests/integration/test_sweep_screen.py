"""The vectorised pre-screen (``run_sweep(screen=True)``, ``atb sweep --screen``): the screen's
equity per bar equals backtrader's, its ranking agrees with backtrader on the verified cells,
only the best cells are backtested, the overfitting statistics count every screened cell, and
what it cannot model is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.bundle.format import BundleMetadata, FeatureSchema, InputSpec, OutputSpec
from atb_strategies.cli.main import cli
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.registry.writer import write_bundle
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.sweep import run_sweep
from atb_strategies.sweep.predictions import compute_predictions
from atb_strategies.sweep.screen_kernel import (
    PARAMS,
    STATS,
    cell_values,
    simulate_cell,
    simulate_cells,
)
from tests.conftest import RICH_FEATURES, linear_onnx, synthetic_candles

V1 = "2026-01-01_1h_v1"
BARS = 900
COMMISSION = 0.001


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("screen") / "models"
    meta = BundleMetadata(
        symbol="BTCUSDT",
        model_type="basic",
        timeframe="1h",
        version=V1,
        input=InputSpec("features", "float32", 16, 3),
        output=OutputSpec("log_return", 1, "prediction", {}, None),
        model_sha256=None,
        created_at="2026-01-01T00:00:00+00:00",
        framework="onnx-test",
    )
    schema = FeatureSchema(16, tuple(RICH_FEATURES[:3]))
    write_bundle(root, meta, schema, linear_onnx(16, 3, seed=3), promote=True)
    return str(root)


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return synthetic_candles(BARS, seed=11)


@pytest.fixture(scope="module")
def predictions(market, registry) -> tuple[np.ndarray, np.ndarray]:
    entries = compute_predictions(
        market, MlBasic, symbol="BTCUSDT", timeframe="1h", params={"registry": registry}
    )
    lines = next(iter(entries.values())).lines
    return np.asarray(lines["predicted_return"]), np.asarray(lines["confidence"])


def _row(**params) -> np.ndarray:
    return np.array([float(params.get(n, getattr(MlBasic.params, n))) for n in PARAMS])


def _thresholds(ret: np.ndarray) -> tuple[float, float]:
    """Entry thresholds inside the predictions' range (so that cells trade)."""
    finite = ret[np.isfinite(ret)]
    return float(np.quantile(finite, 0.6)), float(-np.quantile(finite, 0.4))


CASES = [
    {"stop_loss": 0.01, "take_profit": 0.02, "position_size": 0.5},
    {"stop_loss": 0.005, "take_profit": 0.0, "position_size": 0.3, "allow_shorts": True},
    {"stop_loss": 0.0, "take_profit": 0.0, "position_size": 0.9, "exit_threshold": 0.0005},
    {"min_confidence": 0.5, "allow_shorts": True, "position_size": 0.2},
]


@pytest.mark.parametrize("slippage_bps", [0.0, 5.0])
@pytest.mark.parametrize("case", CASES)
def test_screen_equity_per_bar_equals_backtrader(case, slippage_bps, market, registry, predictions):
    ret, conf = predictions
    long_t, short_t = _thresholds(ret)
    params = {"long_threshold": long_t, "short_threshold": short_t, **case}
    result = run_backtest(
        market,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        commission=COMMISSION,
        slippage_bps=slippage_bps,
        registry=registry,
        **params,
    )
    first = 0  # the equity starts at the first bar (no start date)
    bars = market[["open", "high", "low", "close"]].to_numpy()
    values = cell_values(
        bars, ret, conf, first, _row(**params), 10_000.0, COMMISSION, slippage_bps / 1e4
    )
    expected = result.equity["value"].to_numpy()
    assert len(result.trades) > 5  # the case trades
    assert len(values) == len(expected)
    # the same fills: equal to float rounding (documented tolerance 1e-9 relative)
    np.testing.assert_allclose(values, expected, rtol=1e-9)
    stats = simulate_cells(
        bars, ret, conf, first, _row(**params)[None], 10_000.0, COMMISSION, slippage_bps / 1e4
    )[0]
    assert stats[STATS.index("trades")] == len(result.trades)
    assert stats[STATS.index("fees")] == pytest.approx(result.summary["fees_paid"], rel=1e-9)


def test_the_python_loop_equals_the_compiled_one(market, predictions):
    """The fallback without numba is the same code, uncompiled: same accumulators."""
    ret, conf = predictions
    long_t, short_t = _thresholds(ret)
    row = _row(long_threshold=long_t, short_threshold=short_t, allow_shorts=True)
    bars = market[["open", "high", "low", "close"]].to_numpy()
    args = [np.ascontiguousarray(bars[:, i]) for i in range(4)] + [ret, conf, 20, row]
    compiled = simulate_cells(bars, ret, conf, 20, row[None], 10_000.0, COMMISSION, 0.0005)[0]
    plain = np.zeros(len(STATS))
    simulate_cell.py_func(*args, 10_000.0, COMMISSION, 0.0005, plain, np.empty(1), False)
    assert plain[STATS.index("trades")] > 5
    np.testing.assert_allclose(plain, compiled, rtol=1e-12)
