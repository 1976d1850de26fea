"""Monte Carlo size of the statistics under their nulls: a 5 % test says "edge" in about 5 % of
runs. Small and seeded; the bounds are wide (400 runs: a 5 % rate has a standard error of about
1.1 points) but each fails for the biased rules this project used before (shown beside them)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as scipy_stats
from scipy.signal import lfilter

from atb_strategies.data.planted import generate_planted_ohlcv
from atb_strategies.stats import diebold_mariano, edge_ci

RUNS = 400


def _null_returns(noise: str, bars: int, seed: int) -> np.ndarray:
    """Log returns of a planted market with phi = 0: a random walk or a GARCH-t market."""
    candles, _ = generate_planted_ohlcv(bars + 1, phi=0.0, noise=noise, seed=seed)
    return np.diff(np.log(candles["close"].to_numpy()))


def _persistent_noise(rng: np.random.Generator, n: int, rho: float = 0.9) -> np.ndarray:
    """A predictor without skill whose predictions move slowly, like a model's."""
    return lfilter([1.0], [1.0, -rho], rng.standard_normal(n))


@pytest.mark.slow  # about a minute: 400 block bootstraps (x2 for the old rule)
@pytest.mark.parametrize("noise", ["gaussian", "garch_t"])
def test_edge_ci_over_the_fixed_baseline_excludes_zero_at_the_nominal_rate_under_the_null(noise):
    rng = np.random.default_rng(20)
    n = 1000
    fixed = {"above": 0, "below": 0}
    majority_percentile_below = 0
    for run in range(RUNS):
        returns = _null_returns(noise, 2 * n, seed=10_000 + run)
        train, test = returns[:n], returns[n:]
        pred = _persistent_noise(rng, n)
        lo, hi = edge_ci(pred, test, float(train.mean()), reps=200, seed=run)
        fixed["above"] += lo > 0
        fixed["below"] += hi < 0
        if noise == "gaussian":  # the old rule: majority chosen on the test, percentile CI
            _, old_hi = edge_ci(pred, test, reps=200, seed=run, method="percentile")
            majority_percentile_below += old_hi < 0
    above, below = fixed["above"] / RUNS, fixed["below"] / RUNS
    assert above <= 0.065 and below <= 0.065  # each tail: nominal 2.5 %
    assert 0.02 <= above + below <= 0.09  # both: nominal 5 %
    if noise == "gaussian":
        # the biased rule says "worse than the baseline" far more often than 2.5 %
        assert majority_percentile_below / RUNS > 0.09


def _ma_errors(rng: np.random.Generator, n: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Errors of two equally good forecasts of an h-bar return: overlapping sums of h shocks
    (MA(h-1), as forecast errors of h-bar returns are), independent of each other."""
    kernel = np.ones(h)
    e1 = np.convolve(rng.standard_normal(n + h - 1), kernel, "valid")
    e2 = np.convolve(rng.standard_normal(n + h - 1), kernel, "valid")
    return e1, e2


@pytest.mark.parametrize(("horizon", "n"), [(1, 1000), (24, 2000)])
def test_diebold_mariano_one_sided_rejects_at_about_five_percent_under_equal_accuracy(horizon, n):
    rng = np.random.default_rng(30 + horizon)
    one_sided = two_sided_with_sign = 0
    for _ in range(RUNS):
        e1, e2 = _ma_errors(rng, n, horizon)
        out = diebold_mariano(e1, e2, horizon)
        one_sided += out["pvalue_one_sided"] < 0.05
        two_sided_with_sign += out["stat"] < 0 and out["pvalue"] < 0.05
    assert 0.02 <= one_sided / RUNS <= 0.09
    # the old condition (stat < 0 and two-sided p < 0.05) is a 2.5 % test
    assert two_sided_with_sign / RUNS <= 0.045 and two_sided_with_sign < one_sided


def _bartlett_rule_of_thumb_pvalue(d: np.ndarray, h: int) -> float:
    """One-sided p of the DM test with Bartlett weights at Newey-West's rule-of-thumb lags."""
    n = len(d)
    lags = max(h - 1, math.floor(4 * (n / 100) ** (2 / 9)))
    fit = sm.OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
    stat = fit.tvalues[0] * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    return float(scipy_stats.t.cdf(stat, n - 1))


@pytest.mark.slow
def test_diebold_mariano_size_at_horizon_24_is_within_a_point_of_five_percent():
    """The HAC choice (uniform kernel, lags >= h-1) against Bartlett at the rule of thumb,
    which tapers the MA(23) autocovariances away and over-rejects."""
    rng = np.random.default_rng(24)
    runs, h, n = 2000, 24, 2000
    ours = bartlett = 0
    for _ in range(runs):
        e1, e2 = _ma_errors(rng, n, h)
        ours += diebold_mariano(e1, e2, h)["pvalue_one_sided"] < 0.05
        bartlett += _bartlett_rule_of_thumb_pvalue(e1**2 - e2**2, h) < 0.05
    assert abs(ours / runs - 0.05) <= 0.01
    assert bartlett / runs > 0.065
