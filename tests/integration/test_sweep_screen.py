"""The vectorised pre-screen (``run_sweep(screen=True)``, ``atb sweep --screen``): the screen's
equity per bar equals backtrader's, its ranking agrees with backtrader on the verified cells,
only the best cells are backtested, the overfitting statistics count every screened cell, and
what it cannot model is refused."""

from __future__ import annotations

import json
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
    """Synthetic candles whose opens gap from the previous close (as real ones do), so that a
    fill at the open differs from the decision's close (sizing, the cash check)."""
    frame = synthetic_candles(BARS, seed=11).copy()
    noise = np.random.default_rng(5).normal(0.0, 0.002, len(frame))
    opens = frame["close"].shift(1).fillna(frame["open"]) * (1 + noise)
    frame["open"] = opens
    frame["high"] = np.maximum(frame["high"], opens)
    frame["low"] = np.minimum(frame["low"], opens)
    return frame


@pytest.fixture(scope="module")
def predictions(market, registry) -> tuple[np.ndarray, np.ndarray]:
    entries = compute_predictions(
        market, MlBasic, symbol="BTCUSDT", timeframe="1h", params={"registry": registry}
    )
    lines = next(iter(entries.values())).lines
    return np.asarray(lines["predicted_return"]), np.asarray(lines["confidence"])


def _row(**params) -> np.ndarray:
    row = {**{n: getattr(MlBasic.params, n) for n in PARAMS if n != "units"}, "units": 0}
    return np.array([float(params.get(n, row[n])) for n in PARAMS])


def _thresholds(ret: np.ndarray) -> tuple[float, float]:
    """Entry thresholds inside the predictions' range (so that cells trade)."""
    finite = ret[np.isfinite(ret)]
    return float(np.quantile(finite, 0.6)), float(-np.quantile(finite, 0.4))


CASES = [
    {"stop_loss": 0.01, "take_profit": 0.02, "position_size": 0.5},
    {"stop_loss": 0.005, "take_profit": 0.0, "position_size": 0.3, "allow_shorts": True},
    {"stop_loss": 0.0, "take_profit": 0.0, "position_size": 0.9, "exit_threshold": 0.0005},
    {"min_confidence": 0.5, "allow_shorts": True, "position_size": 0.2},
    # entries the cash cannot pay for (Margin, the bracket refused with them)
    {"stop_loss": 0.01, "take_profit": 0.02, "position_size": 1.0, "allow_shorts": True},
    # a short bracket whose legs checked in turn need more cash than there is
    {"stop_loss": 0.04, "take_profit": 0.04, "position_size": 1.0, "allow_shorts": True},
]


@pytest.mark.parametrize("slippage_bps", [0.0, 5.0])
@pytest.mark.parametrize("case", CASES)
def test_screen_equity_per_bar_equals_backtrader(
    case, slippage_bps, market, registry, predictions, caplog
):
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
    if case["position_size"] == 1.0:
        assert "Margin" in caplog.text  # backtrader refused entries: the screen too
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
    python_loop = getattr(simulate_cell, "py_func", simulate_cell)  # numba's original
    python_loop(*args, 10_000.0, COMMISSION, 0.0005, plain, np.empty(1), False)
    assert plain[STATS.index("trades")] > 5
    np.testing.assert_allclose(plain, compiled, rtol=1e-12)


def _grid(predictions) -> dict:
    ret, _ = predictions
    finite = ret[np.isfinite(ret)]
    return {
        "long_threshold": [round(float(np.quantile(finite, q)), 6) for q in (0.5, 0.65, 0.8)],
        "stop_loss": [0.005, 0.02],
        "allow_shorts": [False, True],
    }


def _sweep(market, registry, grid, **kwargs) -> pd.DataFrame:
    settings = {
        "params": {"registry": registry},
        "commission": COMMISSION,
        "slippage_bps": 2.0,
        "executor": "serial",
        "start": "2024-01-03",
    }
    return run_sweep("ml_basic", market, grid, **{**settings, **kwargs})


@pytest.fixture(scope="module")
def screened(market, registry, predictions, tmp_path_factory):
    out = tmp_path_factory.mktemp("screened")
    return out, _sweep(market, registry, _grid(predictions), screen=True, verify=4, out=out)


@pytest.mark.slow
def test_screen_metrics_of_every_cell_equal_a_full_backtest_sweep(
    screened, market, registry, predictions
):
    out, _ = screened
    screen = pd.read_csv(out / "screen.csv")
    full = _sweep(market, registry, _grid(predictions))
    assert len(screen) == len(full) == 12
    assert list(screen["cell"]) == list(full["cell"])  # the same cells, by hash
    assert (full["trades"] > 0).sum() >= 6
    for name in ("total_return", "sharpe", "sortino", "max_drawdown", "trades", "win_rate",
                 "exposure", "fees_paid", "cagr"):  # fmt: skip
        np.testing.assert_allclose(
            screen[name].to_numpy(float), full[name].to_numpy(float), rtol=1e-6, err_msg=name
        )


def test_screen_backtests_only_the_best_cells_and_reports_agreement(screened):
    out, results = screened
    screen = pd.read_csv(out / "screen.csv")
    best = screen.sort_values("sharpe", ascending=False, kind="stable")["cell"].head(4)
    assert set(results["cell"]) == set(best)
    assert len(list((out / "cells").glob("*.json"))) == 4  # only the verified cells ran
    block = results.attrs["screen"]
    assert block["screened"] == 12 and block["verified"] == 4
    assert block["spearman"] >= 0.9
    assert block["max_abs_return_difference"] < 1e-9
    for row in block["per_cell"]:
        assert row["backtest_return"] == pytest.approx(row["screen_return"], abs=1e-9)
        assert row["backtest_trades"] == row["screen_trades"]
    written = json.loads((out / "sweep.json").read_text())
    assert written["screen"]["verified"] == 4


def test_screen_deflated_sharpe_counts_every_screened_cell(screened):
    _, results = screened
    report = results.attrs["overfitting"]
    assert report["trials"] == 12  # the screened cells
    assert report["verified_trials"] == 4  # PBO and SPA over the backtested ones
    assert "over 12 screened trials" in report["verdict"]
    assert results["dsr"].between(0, 1).all()


def test_screen_refuses_what_it_cannot_model(market, registry, predictions):
    grid = {"stop_loss": [0.01, 0.02]}
    with pytest.raises(ConfigurationError, match="max_model_age"):
        _sweep(market, registry, grid, screen=True, params={"registry": registry,
               "max_model_age": "30d"})  # fmt: skip
    with pytest.raises(ConfigurationError, match="'verify' parameter"):
        _sweep(market, registry, grid, screen=True, verify=0)


def test_sweep_cli_screen_prints_the_agreement_and_writes_screen_csv(registry, tmp_path):
    out = tmp_path / "out"
    args = ["sweep", "ml_basic", "--synthetic", "--bars", "700", "--registry", registry,
            "--grid", "stop_loss=0.005,0.01,0.02", "--grid", "allow_shorts=false,true",
            "--grid", "long_threshold=0,0.0001", "--executor", "serial", "--no-progress",
            "--screen", "--verify", "3", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Screen: 12 cells" in result.output
    assert "backtrader verified the best 3 by sharpe: Spearman" in result.output
    assert len(pd.read_csv(out / "screen.csv")) == 12
    assert len(pd.read_csv(out / "results.csv")) == 3
    page = (out / "report.html").read_text()  # heatmaps of every screened cell
    assert "Every screened cell (12; the screen" in page and "Screen against backtrader" in page
    for cell in pd.read_csv(out / "screen.csv")["cell"]:
        assert cell in page
    # the static heatmap too: every screened cell (3 verified backtests cannot fill the grid)
    assert "could not be drawn" not in result.output
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["heatmap"] and Path(summary["heatmap"]).stat().st_size > 10_000


def test_sweep_cli_verify_without_screen_is_one_line_error(registry, tmp_path):
    args = ["sweep", "ml_basic", "--synthetic", "--registry", registry, "--verify", "3",
            "--out", str(tmp_path / "o")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert "--verify" in result.output and "only applies with --screen" in result.output
    assert "Traceback" not in result.output


def test_screen_of_a_missing_model_backtests_one_cell_per_error(market, tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    grid = {"stop_loss": [0.01, 0.02, 0.03]}
    results = _sweep(
        market, str(empty), grid, screen=True, verify=2, params={"registry": str(empty)}
    )
    assert len(results) == 1  # one cell says why, not three
    assert "BTCUSDT" in results["error"].iloc[0]
    assert results.attrs["screen"]["screened"] == 3
