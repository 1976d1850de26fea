"""The significance statistics against hand-checked small cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from atb_strategies.stats import (
    diebold_mariano,
    direction_accuracy,
    edge_ci,
    fixed_baseline,
    hac_maxlags,
    majority_baseline,
    out_of_sample_block,
    seed_spread,
)
from atb_strategies.training.dataset import Part
from atb_strategies.training.evaluate import baseline_gate


def test_direction_accuracy_with_flat_bars_counts_only_moves():
    pred = np.array([0.1, -0.2, 0.3, 0.1, -0.1])
    actual = np.array([0.5, 0.4, 0.0, 0.2, -0.3])  # the flat bar is left out
    assert direction_accuracy(pred, actual) == pytest.approx(3 / 4)


def test_majority_baseline_with_more_downs_is_the_down_share():
    assert majority_baseline(np.array([-1.0, -2.0, 3.0, 0.0, -0.5])) == pytest.approx(3 / 4)


def _newey_west_dm(d: np.ndarray, lags: int, h: int) -> tuple[float, float, float]:
    """Written out by hand: uniformly weighted autocovariances, HLN factor, t(n-1);
    returns the statistic, the two-sided and the one-sided ("model smaller") p-values."""
    n, mean = len(d), d.mean()
    c = d - mean
    var = c @ c / n
    for lag in range(1, lags + 1):
        var += 2 * (c[lag:] @ c[:-lag]) / n
    stat = mean / math.sqrt(var / n)
    stat *= math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return stat, 2 * scipy_stats.t.sf(abs(stat), n - 1), scipy_stats.t.cdf(stat, n - 1)


@pytest.mark.parametrize("horizon", [1, 12])
def test_diebold_mariano_matches_a_hand_computation(horizon):
    rng = np.random.default_rng(3)
    e_model = rng.standard_normal(50)
    e_base = rng.standard_normal(50) * 1.2
    out = diebold_mariano(e_model, e_base, horizon)
    d = e_model**2 - e_base**2
    assert out["maxlags"] == hac_maxlags(d, horizon)
    assert out["maxlags"] >= max(horizon - 1, math.floor(4 * (50 / 100) ** (2 / 9)))
    assert out["kernel"] == "uniform"
    stat, pvalue, one_sided = _newey_west_dm(d, out["maxlags"], horizon)
    assert out["stat"] == pytest.approx(stat, rel=1e-10)
    assert out["pvalue"] == pytest.approx(pvalue, rel=1e-8)
    assert out["pvalue_one_sided"] == pytest.approx(one_sided, rel=1e-8)


def test_diebold_mariano_one_sided_p_is_half_the_two_sided_when_the_model_is_better():
    rng = np.random.default_rng(4)
    actual = rng.standard_normal(500)
    better = diebold_mariano(actual * 0.95 + rng.standard_normal(500) * 0.1, actual, 1)
    assert better["stat"] < 0
    assert better["pvalue_one_sided"] == pytest.approx(better["pvalue"] / 2, rel=1e-9)
    worse = diebold_mariano(actual, actual * 0.95 + rng.standard_normal(500) * 0.1, 1)
    assert worse["stat"] > 0 and worse["pvalue_one_sided"] > 0.5


def test_hac_maxlags_grows_with_the_memory_of_the_loss_differential():
    rng = np.random.default_rng(5)
    white = rng.standard_normal(2000)
    persistent = np.convolve(rng.standard_normal(2100), np.ones(60), "valid")[:2000]
    assert hac_maxlags(white, 24) == 23  # the horizon's overlap dominates
    assert hac_maxlags(persistent, 1) > hac_maxlags(white, 1)


def test_diebold_mariano_with_smaller_errors_is_negative_and_significant():
    rng = np.random.default_rng(0)
    actual = rng.standard_normal(2000)
    out = diebold_mariano(actual * 0.1, actual, 1)  # errors one tenth of the baseline's
    assert out["stat"] < -10 and out["pvalue"] < 1e-10


def test_diebold_mariano_at_the_scale_of_hourly_returns_is_defined_and_scale_free():
    """Squared hourly returns are ~1e-5: a model a hair away from the baseline (calibrated near
    the train mean) differs by far less than any absolute tolerance, yet is a defined test."""
    rng = np.random.default_rng(4)
    actual = rng.standard_normal(3000) * 0.005
    signal = 1e-5 * actual + rng.standard_normal(3000) * 1e-7  # a sliver of the real return
    small = diebold_mariano(signal - actual, 0.0 - actual, 1)
    assert np.isfinite(small["stat"]) and np.isfinite(small["pvalue_one_sided"])
    assert small["stat"] < 0  # the model's squared errors are smaller
    big = diebold_mariano(1e3 * (signal - actual), 1e3 * (0.0 - actual), 1)
    assert big["stat"] == pytest.approx(small["stat"], rel=1e-6)


def test_diebold_mariano_of_identical_errors_is_undefined_not_significant():
    actual = np.random.default_rng(5).standard_normal(500) * 0.005
    out = diebold_mariano(actual, actual.copy(), 1)
    assert math.isnan(out["stat"]) and math.isnan(out["pvalue_one_sided"])
    assert out["mean_diff"] == 0.0


def test_edge_ci_with_perfect_direction_lies_above_zero_and_with_noise_does_not():
    rng = np.random.default_rng(1)
    actual = rng.standard_normal(1500) * 0.01 + 0.002  # about 58 % up
    lo, hi = edge_ci(actual, actual, reps=300)
    edge = 1 - majority_baseline(actual)
    assert lo > 0 and lo <= edge <= hi
    # a coin flip against that trend: about 50 % right, 8 points below always-up
    _, flip_hi = edge_ci(rng.standard_normal(1500), actual, reps=300)
    assert flip_hi < 0
    driftless = rng.standard_normal(1500)
    noise_lo, noise_hi = edge_ci(rng.standard_normal(1500), driftless, reps=300)
    assert noise_lo < 0 and noise_hi < 0.05  # no edge claimed (the majority is >= 50 %)


def test_out_of_sample_block_with_real_signal_beats_baselines_and_noise_does_not():
    rng = np.random.default_rng(2)
    actual = rng.standard_normal(3000) * 0.01
    good = out_of_sample_block(actual * 0.8 + rng.standard_normal(3000) * 0.002, actual, 0.0)
    assert good["beats_baselines"] is True
    assert good["edge_ci95"][0] > 0 and good["dm_vs_last_close"]["stat"] < 0
    noise = out_of_sample_block(rng.standard_normal(3000) * 0.01, actual, 0.0)
    assert noise["beats_baselines"] is False
    assert set(noise) >= {
        "direction_accuracy",
        "majority_baseline",
        "edge",
        "edge_ci95",
        "dm_vs_last_close",
        "dm_vs_drift",
        "beats_baselines",
    }


def test_seed_spread_reports_mean_std_and_range():
    out = seed_spread([0.50, 0.52, 0.54])
    assert out == {
        "seeds": 3,
        "mean": pytest.approx(0.52),
        "std": pytest.approx(0.02),
        "min": 0.50,
        "max": 0.54,
    }


def test_fixed_baseline_is_the_share_of_the_training_drift_sign_fixed_per_sample():
    actual = np.array([0.5, -0.4, 0.0, 0.2, -0.3, 0.1])  # moved: 3 up, 2 down
    assert fixed_baseline(actual, 0.01) == pytest.approx(3 / 5)
    assert fixed_baseline(actual, -0.01) == pytest.approx(2 / 5)
    per_fold = np.array([1.0, -1.0, -1.0, -1.0, -1.0, -1.0])  # first fold up, second down
    assert fixed_baseline(actual, per_fold) == pytest.approx(3 / 5)  # +0.5 -0.4 -0.3 right


def test_edge_ci_over_the_fixed_baseline_is_zero_for_the_baseline_itself_and_positive_for_skill():
    rng = np.random.default_rng(6)
    actual = rng.standard_normal(2000) * 0.01 + 0.001
    lo, hi = edge_ci(np.ones(2000), actual, 0.002, reps=200)  # "always up" is the baseline
    assert lo == 0 and hi == 0
    skill_lo, _ = edge_ci(actual + rng.standard_normal(2000) * 0.01, actual, 0.002, reps=200)
    assert skill_lo > 0.1
    wrong_lo, wrong_hi = edge_ci(-actual, actual, 0.002, reps=200)  # every sign wrong
    assert wrong_hi < 0 and wrong_lo < -0.4


def test_out_of_sample_block_reports_both_baselines_and_gates_on_the_fixed_one():
    rng = np.random.default_rng(8)
    actual = rng.standard_normal(3000) * 0.01 + 0.003  # about 62 % up
    oos = out_of_sample_block(actual * 0.5 + rng.standard_normal(3000) * 0.004, actual, 0.003)
    assert oos["fixed_baseline"] == pytest.approx(np.mean(actual > 0))
    assert oos["fixed_baseline"] == pytest.approx(oos["majority_baseline"])  # drift sign right
    assert oos["fixed_baseline_up_share"] == 1.0
    assert oos["edge_vs_fixed"] == pytest.approx(oos["direction_accuracy"] - oos["fixed_baseline"])
    assert oos["edge_ci95_method"].startswith("basic")
    lo, hi = oos["edge_vs_fixed_ci95"]
    assert 0 < lo <= oos["edge_vs_fixed"] <= hi
    assert oos["dm_vs_last_close"]["pvalue_one_sided"] < 0.05
    assert oos["beats_baselines"] is True
    # a training drift of the wrong sign makes "always down" the baseline: far below majority
    flipped = out_of_sample_block(actual * 0.5, actual, -0.003, reps=200)
    assert flipped["fixed_baseline"] == pytest.approx(1 - oos["fixed_baseline"])


def _part(y: np.ndarray) -> Part:
    n = len(y)
    stamps = pd.date_range("2024-01-01", periods=n, freq="h")
    close = np.full(n, 100.0)
    return Part(np.zeros((n, 2, 1), np.float32), y, np.arange(n), close, close, stamps)


def test_baseline_gate_names_the_fixed_baseline_and_the_one_sided_p_when_there_is_no_edge():
    rng = np.random.default_rng(9)
    train_y = rng.standard_normal(500) * 0.01 - 0.002  # a falling training market
    val_y = rng.standard_normal(200) * 0.01
    test_y = rng.standard_normal(1000) * 0.01
    oos = out_of_sample_block(rng.standard_normal(1000) * 0.01, test_y, train_y.mean(), reps=200)
    parts = {"train": _part(train_y), "val": _part(val_y), "test": _part(test_y)}
    gate = baseline_gate(np.zeros(200) + train_y.mean(), parts, oos)
    assert gate["passed"] is False
    reason = gate["reasons"][-1]
    assert "training drift's sign (always down)" in reason
    assert f"{100 * oos['edge_vs_fixed']:+.1f} points" in reason
    assert f"one-sided p={oos['dm_vs_last_close']['pvalue_one_sided']:.2g}" in reason


def test_a_negative_uniform_kernel_variance_falls_back_to_bartlett_without_a_warning() -> None:
    """Over-differenced noise has a long-run variance near 0: the uniform kernel's estimate goes
    negative; the test falls back to Bartlett and the user sees no numpy warning from it."""
    import warnings

    d = np.diff(np.random.default_rng(0).standard_normal(301))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = diebold_mariano(np.sqrt(9 + d), np.full(300, 3.0), horizon=1)
    assert result["kernel"] == "bartlett" and np.isfinite(result["stat"])
