"""``run_walk_forward`` and ``atb train walk-forward``: folds trained like ``atb train model``,
registered with their lineage, tested only on bars after their training data, pooled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.bundle.jsonio import read_json
from atb_strategies.cli.main import cli
from atb_strategies.evaluation.oracle import oracle_oos, oracle_samples
from atb_strategies.evaluation.report import write_report
from atb_strategies.evaluation.walkforward import WalkForwardConfig, run_walk_forward
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.registry.layout import RegistryLayout

pytestmark = pytest.mark.slow


def ar_market(n: int, phi: float, seed: int = 0) -> pd.DataFrame:
    """Candles whose hourly log returns are AR(1): predictable when ``phi`` is far from 0."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n)
    shocks = rng.normal(0, 0.004, n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + shocks[t]
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    index = pd.date_range("2024-01-01", periods=n, freq="h", name="timestamp")
    volume = rng.lognormal(3, 0.3, n)
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


def _config(registry: Path, **changes) -> WalkForwardConfig:
    settings = {
        "symbol": "BTCUSDT",
        "train_bars": 1200,
        "test_bars": 400,
        "sequence_length": 16,
        "epochs": 3,
        "registry": registry,
        "bootstrap_reps": 200,
    }
    return WalkForwardConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    registry = tmp_path_factory.mktemp("wf") / "models"
    market = ar_market(2700, phi=0.0, seed=1)
    return market, registry, run_walk_forward(market, _config(registry), executor="serial")


def test_walk_forward_registers_every_fold_with_its_lineage_and_never_moves_latest(noise_run):
    market, registry, result = noise_run
    assert len(result.folds) == 4 and all(r.error is None for r in result.results)
    layout = RegistryLayout(registry)
    assert layout.read_latest("BTCUSDT", "basic") is None
    for r in result.results:
        meta = read_json(layout.version_dir("BTCUSDT", "basic", r.version) / "metadata.json")
        lineage = meta["training"]
        assert lineage["walk_forward_id"] == result.walk_forward_id
        assert lineage["fold"] == r.fold.number and lineage["seed"] == 0
        assert lineage["data_sha256"] == result.data_sha256
        assert lineage["train_start"] == str(market.index[r.fold.train_start])
        assert lineage["train_end"] == str(market.index[r.fold.train_end - 1])
        assert lineage["test_start"] == str(market.index[r.fold.test_start])
        assert pd.Timestamp(lineage["train_end"]) < pd.Timestamp(lineage["test_start"])


def test_walk_forward_tests_each_fold_only_on_bars_after_its_training_and_embargo(noise_run):
    market, _, result = noise_run
    preds = result.predictions
    for fold in result.folds:
        bars = market.index.get_indexer(preds.index[preds["fold"] == fold.number])
        assert len(bars) > 0.9 * (fold.test_end - fold.test_start)  # gap-free: ~every bar
        assert bars.min() >= fold.test_start and bars.max() < fold.test_end
        assert bars.min() >= fold.train_end + result.embargo
    assert not preds.index.duplicated().any()
    actual = np.log(market["close"].shift(-1) / market["close"]).loc[preds.index]
    np.testing.assert_allclose(preds["actual"], actual, rtol=1e-12)


def test_walk_forward_on_noise_does_not_beat_the_baselines(noise_run):
    _, _, result = noise_run
    oos = result.oos
    assert oos["beats_baselines"] is False
    assert oos["samples"] == len(result.predictions)
    assert oos["edge_ci95"][0] < 0
    assert oos["edge_vs_fixed_ci95"][0] < 0  # the gate's interval: the baseline fixed in training
    drifts = result.predictions.groupby("fold")["drift"].first()
    assert oos["fixed_baseline_up_share"] == pytest.approx(
        np.mean(result.predictions["drift"] >= 0)
    )
    assert len(drifts) == len(result.folds)  # each fold brings its own training drift


def test_oracle_is_scored_on_the_walk_forwards_test_bars_with_each_folds_training_drift(
    noise_run,
):
    market, _, result = noise_run
    perfect = np.log(market["close"].shift(-1) / market["close"]).fillna(0.0)
    rows = oracle_samples(market, perfect, result.config)
    preds = result.predictions
    assert rows.index.equals(preds.index)
    np.testing.assert_array_equal(rows["fold"], preds["fold"])
    np.testing.assert_allclose(rows["actual"], preds["actual"], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(rows["drift"], preds["drift"], rtol=1e-9)
    oos = oracle_oos(market, perfect, result.config)  # the future itself: the perfect oracle
    assert oos["samples"] == len(preds) and oos["direction_accuracy"] == 1.0
    assert oos["beats_baselines"] is True
    with pytest.raises(ConfigurationError, match="'true_mean'"):
        oracle_samples(market, perfect.iloc[1:], result.config)


def test_walk_forward_report_writes_folds_predictions_summary_and_chart(noise_run, tmp_path):
    _, _, result = noise_run
    paths = write_report(result, tmp_path / "report")
    folds = pd.read_csv(paths["folds_csv"])
    assert list(folds["fold"]) == [0, 1, 2, 3]
    assert len(pd.read_parquet(paths["predictions"])) == len(result.predictions)
    summary = json.loads(paths["summary"].read_text())
    for key in (
        "direction_accuracy",
        "majority_baseline",
        "edge",
        "edge_ci95",
        "dm_vs_last_close",
        "dm_vs_drift",
        "seed_spread",
        "beats_baselines",
        "fixed_baseline",
        "edge_vs_fixed",
        "edge_vs_fixed_ci95",
        "edge_ci95_method",
    ):
        assert key in summary["oos"]
    assert "pvalue_one_sided" in summary["oos"]["dm_vs_last_close"]
    assert {"fixed_baseline", "edge_vs_fixed", "dm_pvalue_one_sided"} <= set(folds.columns)
    assert paths["chart"].stat().st_size > 10_000


def test_walk_forward_local_executor_gives_the_serial_results(noise_run, tmp_path):
    market, _, serial = noise_run
    local = run_walk_forward(market, _config(tmp_path / "models"), executor="local", workers=2)
    pd.testing.assert_frame_equal(
        local.predictions.drop(columns="version"), serial.predictions.drop(columns="version")
    )


def test_walk_forward_on_a_predictable_market_beats_baselines_and_promotes_last(tmp_path):
    market = ar_market(1200 + 184 + 3 * 400 + 1, phi=0.7, seed=2)  # three whole test periods
    config = _config(tmp_path / "models", promote_last=True, epochs=8)
    result = run_walk_forward(market, config, executor="serial")
    assert result.oos["beats_baselines"] is True
    assert result.oos["edge_ci95"][0] > 0
    assert result.oos["edge_vs_fixed_ci95"][0] > 0
    assert result.oos["dm_vs_last_close"]["pvalue_one_sided"] < 0.05
    last = next(r for r in result.results if r.fold.number == result.folds[-1].number)
    assert result.promoted == last.version
    assert RegistryLayout(tmp_path / "models").read_latest("BTCUSDT", "basic") == last.version


def test_atb_train_walk_forward_prints_the_verdict_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    args = [
        "train",
        "walk-forward",
        "BTCUSDT",
        "--synthetic",
        "--bars",
        "2700",
        "--train-bars",
        "1200",
        "--test-bars",
        "400",
        "--sequence-length",
        "16",
        "--epochs",
        "2",
        "--executor",
        "serial",
        "--bootstrap-reps",
        "200",
        "--registry",
        str(tmp_path / "models"),
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "4 fold(s), 4 trained version(s)" in result.stdout
    assert "verdict: does NOT beat the baselines" in result.stdout
    assert (out / "summary.json").is_file() and (out / "chart.png").is_file()
    assert "verdict: does NOT beat the baselines" in (out / "report.html").read_text()
    _assert_printed_numbers_are_the_gates(result.stdout, read_json(out / "summary.json")["oos"])


def _assert_printed_numbers_are_the_gates(stdout: str, oos: dict) -> None:
    """The printed edge, CI and p are those the verdict is made of (not the majority's)."""
    lo, hi = oos["edge_vs_fixed_ci95"]
    dm = oos["dm_vs_last_close"]
    assert f"edge {100 * oos['edge_vs_fixed']:+.1f} points" in stdout
    assert f"(95 % CI {100 * lo:+.1f}..{100 * hi:+.1f})" in stdout
    assert f"fixed baseline (training drift's direction) {100 * oos['fixed_baseline']:.1f} %" in (
        stdout
    )
    assert f"majority share, hindsight: {100 * oos['majority_baseline']:.1f} %" in stdout
    assert f"vs last close: {dm['stat']:+.2f} (one-sided p={dm['pvalue_one_sided']:.3g})" in stdout
    ci_ok, dm_ok = lo > 0, dm["pvalue_one_sided"] < 0.05
    assert f"gate: edge CI above 0 {'yes' if ci_ok else 'no'}" in stdout
    assert f"< 0.05 {'yes' if dm_ok else 'no'}" in stdout
    assert oos["beats_baselines"] == (ci_ok and dm_ok)
    verdict = "BEATS the baselines" if oos["beats_baselines"] else "does NOT beat the baselines"
    assert f"verdict: {verdict}" in stdout


def test_walk_forward_printout_reports_the_gates_edge_not_the_majoritys():
    """A record where the hindsight majority edge looks good but the gate's does not: the
    printout shows the gate's numbers, and a DM left undefined by equal errors says so."""
    from atb_strategies.cli.walkforward import oos_lines

    nan = float("nan")
    oos = {
        "samples": 900,
        "direction_accuracy": 0.53,
        "majority_baseline": 0.50,
        "edge": 0.03,
        "edge_ci95": [0.01, 0.05],
        "fixed_baseline": 0.55,
        "edge_vs_fixed": -0.02,
        "edge_vs_fixed_ci95": [-0.04, 0.0],
        "dm_vs_last_close": {"stat": nan, "pvalue": nan, "pvalue_one_sided": nan},
        "dm_vs_drift": {"stat": -2.5, "pvalue": 0.012, "pvalue_one_sided": 0.006},
    }
    text = "\n".join(oos_lines(oos))
    assert "edge -2.0 points (95 % CI -4.0..+0.0)" in text
    assert "+3.0" not in text and "+1.0..+5.0" not in text  # the majority's edge and CI
    assert "majority share, hindsight: 50.0 %" in text
    assert "vs last close: +nan (one-sided p=nan)  undefined (errors equal)" in text
    assert "vs drift: -2.50 (one-sided p=0.006)  model errors smaller" in text
    assert "gate: edge CI above 0 no; one-sided DM p vs last close < 0.05 no" in text


def test_atb_train_walk_forward_threads_recipe_target_and_calibrate_to_every_fold(tmp_path):
    registry = tmp_path / "models"
    args = [
        "train",
        "walk-forward",
        "BTCUSDT",
        "--synthetic",
        "--bars",
        "2300",
        "--train-bars",
        "1200",
        "--test-bars",
        "400",
        "--sequence-length",
        "16",
        "--architecture",
        "ridge",
        "--recipe",
        "price",
        "--target",
        "direction",
        "--calibrate",
        "--executor",
        "serial",
        "--bootstrap-reps",
        "200",
        "--no-backtest",
        "--registry",
        str(registry),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    config = read_json(tmp_path / "out" / "summary.json")["config"]
    assert (config["recipe"], config["target"], config["calibrate"]) == (
        "price",
        "direction",
        True,
    )
    layout = RegistryLayout(registry)
    versions = layout.versions("BTCUSDT", "basic")
    assert len(versions) >= 2
    for version in versions:
        metrics = read_json(layout.version_dir("BTCUSDT", "basic", version) / "metrics.json")
        assert metrics["recipe"] == "price" and metrics["target"] == "direction"
        # a direction classifier calibrates with its temperature, not the regression slope
        assert metrics["architecture"] == "ridge" and not metrics["calibration"]


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--train-bars", "0"], "--train-bars"),
        (["--seeds", "x"], "--seeds"),
        (["--train-bars", "5000"], "--train-bars"),
        (["--executor", "dask"], "--executor"),
        (["--target", "direction"], "--architecture"),  # mlp cannot export class probabilities
        (["--recipe", "ohlc"], "--recipe"),
        # a direction classifier always calibrates its probabilities
        (["--target", "direction", "--architecture", "ridge", "--no-calibrate"], "--no-calibrate"),
    ],
)
def test_atb_train_walk_forward_with_bad_value_exits_1_with_one_line(tmp_path, extra, names):
    base = [
        "train",
        "walk-forward",
        "BTCUSDT",
        "--synthetic",
        "--bars",
        "2700",
        "--test-bars",
        "400",
        "--registry",
        str(tmp_path / "m"),
    ]
    if "--train-bars" not in extra:
        base += ["--train-bars", "1200"]
    result = CliRunner().invoke(cli, [*base, *extra])
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and names in result.stderr
