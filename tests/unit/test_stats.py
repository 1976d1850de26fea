"""The significance statistics against hand-checked small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from atb_strategies.stats import (
    diebold_mariano,
    direction_accuracy,
    edge_ci,
    majority_baseline,
    out_of_sample_block,
    seed_spread,
)


def test_direction_accuracy_with_flat_bars_counts_only_moves():
    pred = np.array([0.1, -0.2, 0.3, 0.1, -0.1])
    actual = np.array([0.5, 0.4, 0.0, 0.2, -0.3])  # the flat bar is left out
    assert direction_accuracy(pred, actual) == pytest.approx(3 / 4)


def test_majority_baseline_with_more_downs_is_the_down_share():
    assert majority_baseline(np.array([-1.0, -2.0, 3.0, 0.0, -0.5])) == pytest.approx(3 / 4)


def _newey_west_dm(d: np.ndarray, lags: int, h: int) -> tuple[float, float]:
    """Written out by hand: Bartlett-weighted (h=1) or uniformly weighted (h>1)
    autocovariances, HLN factor, t(n-1)."""
    n, mean = len(d), d.mean()
    c = d - mean
    var = c @ c / n
    for lag in range(1, lags + 1):
        weight = 1 - lag / (lags + 1) if h == 1 else 1.0
        var += 2 * weight * (c[lag:] @ c[:-lag]) / n
    stat = mean / math.sqrt(var / n)
    stat *= math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return stat, 2 * scipy_stats.t.sf(abs(stat), n - 1)


@pytest.mark.parametrize("horizon", [1, 12])
def test_diebold_mariano_matches_a_hand_computation(horizon):
    rng = np.random.default_rng(3)
    e_model = rng.standard_normal(50)
    e_base = rng.standard_normal(50) * 1.2
    out = diebold_mariano(e_model, e_base, horizon)
    lags = max(horizon - 1, math.floor(4 * (50 / 100) ** (2 / 9)))
    stat, pvalue = _newey_west_dm(e_model**2 - e_base**2, lags, horizon)
    assert out["maxlags"] == lags
    assert out["stat"] == pytest.approx(stat, rel=1e-10)
    assert out["pvalue"] == pytest.approx(pvalue, rel=1e-8)


def test_diebold_mariano_with_smaller_errors_is_negative_and_significant():
    rng = np.random.default_rng(0)
    actual = rng.standard_normal(2000)
    out = diebold_mariano(actual * 0.1, actual, 1)  # errors one tenth of the baseline's
    assert out["stat"] < -10 and out["pvalue"] < 1e-10


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
