"""Statistics that say whether a model's out-of-sample record is more than luck.

Every function takes per-sample arrays aligned on the same decision bars (predictions made at
bar ``t`` from bars ``<= t``, outcomes at ``t + horizon``). The maintained libraries do the
statistics: ``arch`` resamples blocks (returns and hits are autocorrelated, so points must not
be resampled one by one) and chooses the automatic HAC bandwidth, ``statsmodels`` computes the
HAC (Newey-West) standard error of the Diebold-Mariano test, ``scipy`` its t distribution.

* **Direction.** ``direction_accuracy`` counts bars where the realised move is non-zero. Two
  baselines are measured on the same bars:

  - the **fixed baseline**, which the gate uses: the direction of the *training* drift, chosen
    before the test period ("always up" when the training drift is >= 0, else "always down";
    per sample when folds trained on different data). ``edge_vs_fixed`` = accuracy - its
    share; an unbiased estimate (0 in expectation for a predictor without skill on a
    driftless market);
  - the **majority baseline**, reported beside it: the larger of the up and down shares of the
    test outcomes. It is picked after seeing them, so it is biased upward by about
    ``0.4 / sqrt(n)`` and ``edge`` (accuracy - majority) is biased downward by as much.

  Both 95 % intervals are **basic** bootstrap intervals (``2 * estimate - quantiles``; the
  percentile interval would repeat the majority's bias) from a circular block bootstrap
  (``arch.bootstrap.CircularBlockBootstrap``; arch advises it over the moving-block
  bootstrap, which under-samples the ends).
* **Errors.** ``diebold_mariano(e_model, e_base, horizon)`` tests mean(e_model^2 - e_base^2) = 0
  with a HAC standard error and the Harvey-Leybourne-Newbold small-sample correction, t(n-1)
  p-values: ``pvalue`` two-sided, ``pvalue_one_sided`` for the alternative "the model's
  squared errors are smaller" (a negative statistic). The HAC uses the uniform kernel of the
  original test with ``maxlags = max(horizon - 1, Newey-West's rule of thumb, arch's automatic
  Bartlett bandwidth)``: overlapping h-bar errors are MA(h-1) and persistent predictions add
  longer memory; a Monte Carlo (``tests/unit/test_stats_size.py``) keeps its size near 5 %.
* ``beats_baselines``: the edge over the fixed baseline has a CI above 0 AND the model's errors
  are smaller than last close's in a one-sided 5 % Diebold-Mariano test. Both, or it is not an
  edge.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Significance level of ``beats_baselines``.
ALPHA = 0.05


def _moved(actual_return: np.ndarray) -> np.ndarray:
    return np.asarray(actual_return, dtype=np.float64) != 0


def direction_accuracy(predicted_return: np.ndarray, actual_return: np.ndarray) -> float:
    """Share of bars with a non-zero move whose sign the prediction got right (NaN if none)."""
    pred, actual = np.asarray(predicted_return), np.asarray(actual_return)
    moved = _moved(actual)
    if not moved.any():
        return float("nan")
    return float(np.mean(np.sign(pred[moved]) == np.sign(actual[moved])))


def majority_baseline(actual_return: np.ndarray) -> float:
    """max(share of up moves, share of down moves) over bars with a non-zero move."""
    actual = np.asarray(actual_return, dtype=np.float64)
    moved = actual[_moved(actual)]
    if not len(moved):
        return float("nan")
    up = float(np.mean(moved > 0))
    return max(up, 1.0 - up)


def fixed_direction(drift: float | np.ndarray, n: int) -> np.ndarray:
    """The fixed baseline's predicted sign per sample: +1 ("always up") where the training
    drift is >= 0, else -1 ("always down")."""
    drift = np.broadcast_to(np.asarray(drift, dtype=np.float64), (n,))
    return np.where(drift >= 0, 1.0, -1.0)


def fixed_baseline(actual_return: np.ndarray, drift: float | np.ndarray) -> float:
    """Direction accuracy of the fixed baseline (the sign of the training ``drift``, chosen
    before the test period) over bars with a non-zero move."""
    actual = np.asarray(actual_return, dtype=np.float64)
    return direction_accuracy(fixed_direction(drift, len(actual)), actual)


def fixed_edge_differences(
    predicted_return: np.ndarray, actual_return: np.ndarray, drift: float | np.ndarray
) -> np.ndarray:
    """Per bar with a non-zero move: the model's hit minus the fixed baseline's (+1, 0 or
    -1); their mean is the edge over the fixed baseline (``edge_ci`` with ``drift``)."""
    pred, actual = np.asarray(predicted_return), np.asarray(actual_return, dtype=np.float64)
    moved = _moved(actual)
    hits = np.sign(pred[moved]) == np.sign(actual[moved])
    fixed = fixed_direction(drift, len(actual))[moved] == np.sign(actual[moved])
    return hits.astype(np.float64) - fixed.astype(np.float64)


def _edge_over_majority(hits: np.ndarray, ups: np.ndarray) -> np.ndarray:
    up = float(np.mean(ups))
    return np.array([float(np.mean(hits)) - max(up, 1.0 - up)])


def _mean(values: np.ndarray) -> np.ndarray:
    return np.array([float(np.mean(values))])


#: Name of the interval method in the ``oos`` block (``edge_ci95_method``).
CI_METHOD = "basic circular block bootstrap"


def edge_ci(
    predicted_return: np.ndarray,
    actual_return: np.ndarray,
    drift: float | np.ndarray | None = None,
    *,
    block: int = 24,
    reps: int = 1000,
    seed: int = 0,
    size: float = 0.95,
    method: str = "basic",
) -> tuple[float, float]:
    """Bootstrap CI of the direction edge, circular block bootstrap.

    Without ``drift``: the edge over the majority baseline, resampling (hit, up) pairs so the
    majority is re-estimated in every resample. With ``drift`` (the training drift, scalar or
    per sample): the edge over the fixed baseline (its sign), i.e. the mean of
    ``hit_model - hit_fixed``. ``method`` is arch's: ``"basic"`` (default; corrects a biased
    estimate), ``"percentile"`` or ``"bca"``. ``block`` is the block length in bars (a day of
    hourly bars by default).
    """
    from arch.bootstrap import CircularBlockBootstrap

    pred, actual = np.asarray(predicted_return), np.asarray(actual_return, dtype=np.float64)
    moved = _moved(actual)
    hits = (np.sign(pred[moved]) == np.sign(actual[moved])).astype(np.float64)
    if len(hits) < 2:
        return float("nan"), float("nan")
    length = min(block, len(hits))
    if drift is None:
        ups = (actual[moved] > 0).astype(np.float64)
        bootstrap = CircularBlockBootstrap(length, hits, ups, seed=seed)
        ci = bootstrap.conf_int(_edge_over_majority, reps=reps, method=method, size=size)
    else:
        diff = fixed_edge_differences(pred, actual, drift)
        bootstrap = CircularBlockBootstrap(length, diff, seed=seed)
        ci = bootstrap.conf_int(_mean, reps=reps, method=method, size=size)
    return float(ci[0, 0]), float(ci[1, 0])


def hac_maxlags(d: np.ndarray, horizon: int) -> int:
    """Lags of the Diebold-Mariano HAC variance: ``max(horizon - 1, floor(4 (n/100)^(2/9)),
    ceil(arch's automatic Newey-West (1994) Bartlett bandwidth))``, below ``n / 2``."""
    from arch.covariance.kernel import Bartlett

    n = len(d)
    rule = math.floor(4 * (n / 100) ** (2 / 9))
    auto = Bartlett(np.asarray(d, dtype=np.float64)).bandwidth
    auto = math.ceil(auto) if math.isfinite(auto) else 0
    return int(min(max(horizon - 1, rule, auto), max(1, n // 2 - 1)))


def _constant(d: np.ndarray, scale: float) -> bool:
    """Whether the loss differences ``d`` are one value up to rounding: their spread within a
    few ulps of ``scale``, the largest loss (an absolute tolerance would call every difference
    of squared hourly returns, ~1e-5, equal)."""
    return float(np.ptp(d)) <= 64 * np.finfo(np.float64).eps * scale


def diebold_mariano(
    error_model: np.ndarray, error_base: np.ndarray, horizon: int = 1
) -> dict[str, Any]:
    """Diebold-Mariano test of equal squared errors; ``{"stat", "pvalue", "pvalue_one_sided",
    "mean_diff", "maxlags", "kernel"}``. Negative ``stat``: the model's errors are smaller;
    ``pvalue_one_sided`` is the p-value of that alternative, ``pvalue`` the two-sided one."""
    import statsmodels.api as sm
    from scipy import stats as scipy_stats

    loss_model = np.asarray(error_model, dtype=np.float64) ** 2
    loss_base = np.asarray(error_base, dtype=np.float64) ** 2
    d = loss_model - loss_base
    n = len(d)
    nan = float("nan")
    if n < 3 or not np.isfinite(d).all():
        return {"stat": nan, "pvalue": nan, "pvalue_one_sided": nan, "mean_diff": nan}
    if _constant(d, scale=max(loss_model.max(), loss_base.max())):
        return {"stat": nan, "pvalue": nan, "pvalue_one_sided": nan, "mean_diff": float(d[0])}
    maxlags = hac_maxlags(d, horizon)
    # overlapping h-bar errors are MA(h-1): the rectangular (uniform) kernel counts those lags
    # fully, as Diebold-Mariano and the HLN correction assume; Bartlett's tapering under-counts
    # them and over-rejects (about 11 % at a nominal 5 % for h=24 in a simulation). The uniform
    # kernel can give a non-positive variance: Bartlett then.
    kernel = "uniform"
    with np.errstate(invalid="ignore"):  # a negative variance is the expected case handled below
        fit = sm.OLS(d, np.ones(n)).fit(
            cov_type="HAC", cov_kwds={"maxlags": maxlags, "kernel": kernel}
        )
        se = float(fit.bse[0])  # statsmodels computes it here, on first access
    if not np.isfinite(se) or se <= 0:
        kernel = "bartlett"
        fit = sm.OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": maxlags})
    stat = float(fit.tvalues[0])
    h = horizon
    stat *= math.sqrt(max(n + 1 - 2 * h + h * (h - 1) / n, 1.0) / n)  # Harvey et al. (1997)
    return {
        "stat": stat,
        "pvalue": float(2 * scipy_stats.t.sf(abs(stat), df=n - 1)),
        "pvalue_one_sided": float(scipy_stats.t.cdf(stat, df=n - 1)),
        "mean_diff": float(d.mean()),
        "maxlags": maxlags,
        "kernel": kernel,
    }


def _errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = np.asarray(predicted) - np.asarray(actual)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def out_of_sample_block(
    predicted_return: np.ndarray,
    actual_return: np.ndarray,
    drift: float | np.ndarray,
    *,
    horizon: int = 1,
    block: int = 24,
    reps: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``oos`` block of ``metrics.json`` and the walk-forward ``summary.json``.

    Parameters
    ----------
    predicted_return, actual_return : ndarray
        Predicted and realised log returns over ``horizon`` bars, per decision bar.
    drift : float or ndarray
        The mean training target, a log return over ``horizon`` (per sample when pooled over
        folds trained on different data): the drift baseline's prediction, and its sign the
        fixed direction baseline.

    Returns
    -------
    dict
        ``samples``, ``direction_accuracy``; ``majority_baseline``, ``edge`` (accuracy -
        majority) and ``edge_ci95`` (``[lo, hi]``); ``fixed_baseline`` (accuracy of the sign of
        the training drift), ``fixed_baseline_up_share`` (share of samples where it says up),
        ``edge_vs_fixed`` and ``edge_vs_fixed_ci95``; ``edge_ci95_method``;
        ``dm_vs_last_close`` and ``dm_vs_drift`` (each ``{"stat", "pvalue",
        "pvalue_one_sided", ...}``), ``errors`` (RMSE/MAE of the model, last close and drift,
        in log return units), ``beats_baselines`` (``edge_vs_fixed_ci95`` above 0 and
        ``dm_vs_last_close`` one-sided p < ``ALPHA``).
    """
    pred = np.asarray(predicted_return, dtype=np.float64)
    actual = np.asarray(actual_return, dtype=np.float64)
    drift = np.broadcast_to(np.asarray(drift, dtype=np.float64), actual.shape)
    accuracy = direction_accuracy(pred, actual)
    majority = majority_baseline(actual)
    fixed = fixed_baseline(actual, drift)
    options = {"block": block, "reps": reps, "seed": seed}
    lo, hi = edge_ci(pred, actual, **options)
    fixed_lo, fixed_hi = edge_ci(pred, actual, drift, **options)
    e_model = pred - actual
    dm_last = diebold_mariano(e_model, -actual, horizon)  # last close predicts a 0 return
    dm_drift = diebold_mariano(e_model, drift - actual, horizon)
    return {
        "samples": len(pred),
        "direction_accuracy": accuracy,
        "majority_baseline": majority,
        "edge": accuracy - majority,
        "edge_ci95": [lo, hi],
        "fixed_baseline": fixed,
        "fixed_baseline_up_share": float(np.mean(drift >= 0)) if len(drift) else float("nan"),
        "edge_vs_fixed": accuracy - fixed,
        "edge_vs_fixed_ci95": [fixed_lo, fixed_hi],
        "edge_ci95_method": CI_METHOD,
        "dm_vs_last_close": dm_last,
        "dm_vs_drift": dm_drift,
        "errors": {
            "model": _errors(pred, actual),
            "last_close": _errors(np.zeros_like(actual), actual),
            "drift": _errors(drift, actual),
        },
        "beats_baselines": beats(fixed_lo, dm_last),
    }


def beats(edge_ci_low: float, dm_last_close: dict[str, Any], alpha: float = ALPHA) -> bool:
    """The gate: the edge CI's lower end is above 0 and the one-sided Diebold-Mariano test
    against last close says the model's errors are smaller at level ``alpha``."""
    p = dm_last_close.get("pvalue_one_sided", float("nan"))
    return bool(math.isfinite(edge_ci_low) and edge_ci_low > 0 and math.isfinite(p) and p < alpha)


def seed_spread(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation (ddof=1) and range of a metric over seeds."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "seeds": len(arr),
        "mean": float(arr.mean()) if len(arr) else float("nan"),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "min": float(arr.min()) if len(arr) else float("nan"),
        "max": float(arr.max()) if len(arr) else float("nan"),
    }
