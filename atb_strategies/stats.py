"""Statistics that say whether a model's out-of-sample record is more than luck.

Every function takes per-sample arrays aligned on the same decision bars (predictions made at
bar ``t`` from bars ``<= t``, outcomes at ``t + horizon``). The maintained libraries do the
statistics: ``arch`` resamples blocks (returns and hits are autocorrelated, so points must not
be resampled one by one), ``statsmodels`` computes the HAC (Newey-West) standard error of the
Diebold-Mariano test, ``scipy`` its t distribution.

* **Direction.** ``direction_accuracy`` counts bars where the realised move is non-zero; the
  *majority baseline* is the larger of the up and down shares over the same bars ("always up"
  in a bull market), and the **edge** is accuracy minus that baseline. Its 95 % confidence
  interval comes from a circular block bootstrap (``arch.bootstrap.CircularBlockBootstrap``;
  arch advises it over the moving-block bootstrap, which under-samples the ends) that resamples
  (hit, up) pairs together, so the baseline is re-estimated in every resample.
* **Errors.** ``diebold_mariano(e_model, e_base, horizon)`` tests mean(e_model^2 - e_base^2) = 0
  with a HAC standard error (``maxlags`` at least ``horizon - 1``; Newey-West's rule of thumb
  when larger; Bartlett kernel at horizon 1, the uniform kernel of the original test for
  overlapping horizons) and the Harvey-Leybourne-Newbold small-sample correction, t(n-1)
  p-value. A negative statistic means the model's squared errors are smaller.
* ``beats_baselines``: the edge's CI lies above 0 AND the model's errors are significantly
  smaller than last close's (DM statistic < 0, p < 0.05). Both, or it is not an edge.
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


def _edge_of(hits: np.ndarray, ups: np.ndarray) -> float:
    up = float(np.mean(ups))
    return float(np.mean(hits)) - max(up, 1.0 - up)


def edge_ci(
    predicted_return: np.ndarray,
    actual_return: np.ndarray,
    *,
    block: int = 24,
    reps: int = 1000,
    seed: int = 0,
    size: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of (direction accuracy - majority baseline), circular block bootstrap.

    ``block`` is the block length in bars (a day of hourly bars by default).
    """
    from arch.bootstrap import CircularBlockBootstrap

    pred, actual = np.asarray(predicted_return), np.asarray(actual_return, dtype=np.float64)
    moved = _moved(actual)
    hits = (np.sign(pred[moved]) == np.sign(actual[moved])).astype(np.float64)
    ups = (actual[moved] > 0).astype(np.float64)
    if len(hits) < 2:
        return float("nan"), float("nan")
    bootstrap = CircularBlockBootstrap(min(block, len(hits)), hits, ups, seed=seed)
    ci = bootstrap.conf_int(
        lambda h, u: np.array([_edge_of(h, u)]), reps=reps, method="percentile", size=size
    )
    return float(ci[0, 0]), float(ci[1, 0])


def diebold_mariano(
    error_model: np.ndarray, error_base: np.ndarray, horizon: int = 1
) -> dict[str, float]:
    """Diebold-Mariano test of equal squared errors; ``{"stat", "pvalue", "mean_diff",
    "maxlags"}``. Negative ``stat``: the model's errors are smaller."""
    import statsmodels.api as sm
    from scipy import stats as scipy_stats

    d = np.asarray(error_model, dtype=np.float64) ** 2 - np.asarray(error_base) ** 2
    n = len(d)
    if n < 3 or not np.isfinite(d).all():
        return {"stat": float("nan"), "pvalue": float("nan"), "mean_diff": float("nan")}
    if np.allclose(d, d[0]):
        return {"stat": float("nan"), "pvalue": float("nan"), "mean_diff": float(d[0])}
    maxlags = max(horizon - 1, math.floor(4 * (n / 100) ** (2 / 9)))
    # overlapping h-bar errors are MA(h-1): the rectangular (uniform) kernel counts those lags
    # fully, as Diebold-Mariano and the HLN correction assume; Bartlett's tapering under-counts
    # them and over-rejects for h > 1 (about 11 % at a nominal 5 % for h=24 in a simulation).
    # The uniform kernel can give a non-positive variance: Bartlett then.
    kernel = "uniform" if horizon > 1 else "bartlett"
    fit = sm.OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": maxlags, "kernel": kernel})
    if not np.isfinite(fit.bse[0]) or fit.bse[0] <= 0:
        kernel = "bartlett"
        fit = sm.OLS(d, np.ones(n)).fit(cov_type="HAC", cov_kwds={"maxlags": maxlags})
    stat = float(fit.tvalues[0])
    h = horizon
    stat *= math.sqrt(max(n + 1 - 2 * h + h * (h - 1) / n, 1.0) / n)  # Harvey et al. (1997)
    pvalue = float(2 * scipy_stats.t.sf(abs(stat), df=n - 1))
    return {
        "stat": stat,
        "pvalue": pvalue,
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
        The drift baseline's prediction (mean training target), a log return over ``horizon``
        (per sample when pooled over folds trained on different data).

    Returns
    -------
    dict
        ``samples``, ``direction_accuracy``, ``majority_baseline``, ``edge``, ``edge_ci95``
        (``[lo, hi]``), ``dm_vs_last_close`` and ``dm_vs_drift`` (each ``{"stat",
        "pvalue", ...}``), ``errors`` (RMSE/MAE of the model, last close and drift, in log
        return units), ``beats_baselines``.
    """
    pred = np.asarray(predicted_return, dtype=np.float64)
    actual = np.asarray(actual_return, dtype=np.float64)
    accuracy = direction_accuracy(pred, actual)
    majority = majority_baseline(actual)
    lo, hi = edge_ci(pred, actual, block=block, reps=reps, seed=seed)
    drift = np.broadcast_to(np.asarray(drift, dtype=np.float64), actual.shape)
    e_model = pred - actual
    dm_last = diebold_mariano(e_model, -actual, horizon)  # last close predicts a 0 return
    dm_drift = diebold_mariano(e_model, drift - actual, horizon)
    significant = (
        math.isfinite(dm_last["stat"]) and dm_last["stat"] < 0 and dm_last["pvalue"] < ALPHA
    )
    return {
        "samples": len(pred),
        "direction_accuracy": accuracy,
        "majority_baseline": majority,
        "edge": accuracy - majority,
        "edge_ci95": [lo, hi],
        "dm_vs_last_close": dm_last,
        "dm_vs_drift": dm_drift,
        "errors": {
            "model": _errors(pred, actual),
            "last_close": _errors(np.zeros_like(actual), actual),
            "drift": _errors(drift, actual),
        },
        "beats_baselines": bool(math.isfinite(lo) and lo > 0 and significant),
    }


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
