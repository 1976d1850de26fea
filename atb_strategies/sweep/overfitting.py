"""How much of a sweep's best cell is luck: deflated Sharpe, PBO, and SPA / StepM.

Every function takes per-bar simple returns of the cells, one column per cell, on the same
bars (pure numpy/scipy/arch; no backtrader). Sharpe ratios here are per bar (not annualised):
the statistics compare them with their own standard errors, which are per bar too.

* **Deflated Sharpe ratio** (Bailey & Lopez de Prado 2014). With ``N`` trials whose Sharpe
  ratios have variance ``V``, the expected maximum Sharpe under the null (no skill) is
  ``SR0 = sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))`` (``g``: Euler-Mascheroni,
  ``Z``: the normal quantile). The DSR of a cell is its probabilistic Sharpe ratio against
  ``SR0``: ``Phi((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2))``
  with the cell's skew, (Pearson) kurtosis and ``T`` bars. Below 0.95: its Sharpe is what the
  best of ``N`` lucky trials would show.
* **Probability of backtest overfitting** (Bailey, Borwein, Lopez de Prado & Zhu, CSCV). The
  bars are cut into ``S`` blocks; for every half/half split of the blocks (a seeded random
  subset when there are more than ``max_splits``), the cell with the best in-sample Sharpe is
  ranked out of sample; ``w = rank / (N + 1)``, logit ``log(w / (1 - w))``; PBO is the share
  of splits whose logit is ``<= 0`` (the in-sample best at or below the median out of sample).
* **Hansen's SPA and Romano-Wolf StepM** (``arch.bootstrap.SPA``, StepM's steps over it in
  ``step_m``; stationary bootstrap, studentized, fixed seed) on each cell's return minus its
  benchmark's (buy-and-hold scaled to the cell's exposure): the SPA p-value of "no cell
  beats its benchmark", and the cells StepM finds superior. arch's variance estimate costs
  ``T^2`` per cell, so bars are summed into at most ``max_periods`` (500) consecutive periods
  first (the mean excess return keeps its sign; the test is on the same null).

``overfitting_report`` computes all three for a sweep; ``verdict`` is its one-line summary.
The best cell *survives* when its DSR is at least 0.95 and the SPA p-value is below 0.05.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from atb_strategies.exceptions import ConfigurationError

#: DSR a best cell needs to survive.
DSR_LEVEL = 0.95
#: SPA p-value a best cell needs to stay below to survive (also StepM's size).
SPA_ALPHA = 0.05
#: Fewest bars (periods) the SPA bootstrap runs on.
MIN_SPA_PERIODS = 10
_EULER_GAMMA = 0.5772156649015329


def _matrix(returns: pd.DataFrame | np.ndarray, name: str = "returns") -> np.ndarray:
    values = np.asarray(returns, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or not np.isfinite(values).all():
        raise ConfigurationError(
            f"The {name!r} parameter must be a finite 2-D array of per-bar returns (bars x "
            f"cells). Got shape {values.shape} with "
            f"{int((~np.isfinite(values)).sum())} non-finite values instead."
        )
    return values


def sharpe_ratios(returns: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Per-bar Sharpe ratio of each column (mean / sample std; 0 for a constant column)."""
    r = _matrix(returns)
    if len(r) < 2:
        return np.zeros(r.shape[1])
    sd = r.std(axis=0, ddof=1)
    mean = r.mean(axis=0)
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 1e-15)


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """The expected maximum Sharpe of ``n_trials`` skill-less trials whose Sharpe ratios have
    ``variance`` (0 for a single trial)."""
    if n_trials < 2 or variance <= 0:
        return 0.0
    z = stats.norm.ppf
    n = float(n_trials)
    spread = (1 - _EULER_GAMMA) * z(1 - 1 / n) + _EULER_GAMMA * z(1 - 1 / (n * math.e))
    return float(math.sqrt(variance) * spread)


def probabilistic_sharpe(returns: pd.DataFrame | np.ndarray, benchmark_sharpe: float) -> np.ndarray:
    """Per column of ``returns``: the probability that its true per-bar Sharpe exceeds
    ``benchmark_sharpe``, from its skew, kurtosis and number of bars (NaN under 3 bars; a
    constant column counts as normal, skew 0 and kurtosis 3)."""
    r = _matrix(returns)
    if len(r) < 3:
        return np.full(r.shape[1], np.nan)
    sr = sharpe_ratios(r)
    flat = r.std(axis=0) <= 1e-15
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = np.where(flat, 0.0, stats.skew(r, axis=0))
        kurt = np.where(flat, 3.0, stats.kurtosis(r, axis=0, fisher=False))
    var = np.maximum(1 - skew * sr + (kurt - 1) / 4 * sr**2, 1e-12)
    z = (sr - benchmark_sharpe) * math.sqrt(len(r) - 1) / np.sqrt(var)
    return stats.norm.cdf(z)


def deflated_sharpe(returns: pd.DataFrame | np.ndarray, best: int | None = None) -> dict[str, Any]:
    """The deflated Sharpe ratio of column ``best`` (default: the highest Sharpe), with the
    number of trials = columns and the variance of their Sharpe ratios.

    Returns
    -------
    dict
        ``dsr``, ``best`` (column index), ``sharpe`` (its per-bar Sharpe), ``trials``,
        ``sharpe_variance``, ``expected_max_sharpe`` (per bar), ``bars``, and ``per_cell``:
        every column's PSR against the same expected maximum.
    """
    r = _matrix(returns)
    sharpes = sharpe_ratios(r)
    n = r.shape[1]
    variance = float(sharpes.var(ddof=1)) if n > 1 else 0.0
    sr0 = expected_max_sharpe(n, variance)
    best = int(np.argmax(sharpes)) if best is None else int(best)
    per_cell = probabilistic_sharpe(r, sr0)
    return {
        "dsr": float(per_cell[best]),
        "best": best,
        "sharpe": float(sharpes[best]),
        "trials": n,
        "sharpe_variance": variance,
        "expected_max_sharpe": sr0,
        "bars": len(r),
        "per_cell": per_cell,
    }


def _split_masks(n_blocks: int, max_splits: int, seed: int) -> np.ndarray:
    """In-sample block masks (splits x blocks) of CSCV: every half/half split, or a seeded
    random ``max_splits`` of them."""
    total = math.comb(n_blocks, n_blocks // 2)
    if total <= max_splits:
        chosen = list(combinations(range(n_blocks), n_blocks // 2))
    else:
        rng = np.random.default_rng(seed)
        picked: set[tuple[int, ...]] = set()
        while len(picked) < max_splits:
            picked.add(tuple(sorted(rng.choice(n_blocks, n_blocks // 2, replace=False))))
        chosen = sorted(picked)
    masks = np.zeros((len(chosen), n_blocks), dtype=bool)
    for i, blocks in enumerate(chosen):
        masks[i, list(blocks)] = True
    return masks


def _sharpe_from_sums(s1: np.ndarray, s2: np.ndarray, count: np.ndarray) -> np.ndarray:
    mean = s1 / count
    var = (s2 - count * mean**2) / np.maximum(count - 1, 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 1e-15)


def probability_of_overfitting(
    returns: pd.DataFrame | np.ndarray,
    blocks: int = 16,
    max_splits: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """PBO by combinatorially symmetric cross-validation (see the module docstring).

    Returns
    -------
    dict
        ``pbo`` (None with fewer than 2 cells or ``2 * blocks`` bars), ``blocks``, ``splits``,
        ``median_logit``, and ``reason`` when not computed.
    """
    r = _matrix(returns)
    if blocks < 2 or blocks % 2:
        raise ConfigurationError(
            f"The 'blocks' parameter of probability_of_overfitting must be an even number >= 2. "
            f"Got {blocks!r} instead."
        )
    t, n = r.shape
    if n < 2 or t < 2 * blocks:
        return {
            "pbo": None,
            "blocks": blocks,
            "splits": 0,
            "median_logit": None,
            "reason": f"needs at least 2 cells and {2 * blocks} bars (has {n} and {t})",
        }
    edges = np.linspace(0, t, blocks + 1).astype(int)
    s1 = np.add.reduceat(r, edges[:-1], axis=0)  # blocks x cells
    s2 = np.add.reduceat(r**2, edges[:-1], axis=0)
    count = np.diff(edges).astype(np.float64)[:, None]
    masks = _split_masks(blocks, max_splits, seed).astype(np.float64)
    ins = _sharpe_from_sums(masks @ s1, masks @ s2, masks @ count)
    outs = _sharpe_from_sums((1 - masks) @ s1, (1 - masks) @ s2, (1 - masks) @ count)
    chosen = ins.argmax(axis=1)
    ranks = stats.rankdata(outs, axis=1)  # 1 = worst, ties averaged
    w = ranks[np.arange(len(chosen)), chosen] / (n + 1)
    logits = np.log(w / (1 - w))
    return {
        "pbo": float(np.mean(logits <= 0)),
        "blocks": blocks,
        "splits": len(chosen),
        "median_logit": float(np.median(logits)),
        "reason": None,
    }


def _periods(excess: np.ndarray, max_periods: int) -> tuple[np.ndarray, int]:
    """``excess`` summed over runs of ``k`` consecutive bars so at most ``max_periods`` rows
    remain (the last, shorter run dropped when there is more than one)."""
    k = max(1, math.ceil(len(excess) / max_periods))
    if k == 1:
        return excess, 1
    whole = (len(excess) // k) * k
    return excess[:whole].reshape(-1, k, excess.shape[1]).sum(axis=1), k


def superior_predictive_ability(
    excess: pd.DataFrame | np.ndarray,
    reps: int = 1000,
    max_periods: int = 500,
    seed: int = 0,
    alpha: float = SPA_ALPHA,
) -> dict[str, Any]:
    """Hansen's SPA p-value and Romano-Wolf StepM on per-bar excess returns (cell minus its
    benchmark; higher is better), with ``arch.bootstrap``.

    Returns
    -------
    dict
        ``spa_pvalue`` (arch's "consistent" p-value; 1.0 when no cell ever differs from its
        benchmark; None under ``MIN_SPA_PERIODS`` bars, with a ``reason``), ``superior``
        (column indices StepM finds better than the benchmark at ``alpha``), ``periods``,
        ``bars_per_period``, ``reps``, ``alpha``, ``constant`` (columns left out: identical
        to their benchmark on every bar), ``reason``.
    """
    from arch.bootstrap import SPA

    d = _matrix(excess, "excess")
    varies = d.std(axis=0) > 1e-15
    cols = np.flatnonzero(varies)
    summed, k = _periods(d[:, cols], max_periods)
    out: dict[str, Any] = {
        "spa_pvalue": 1.0,
        "superior": [],
        "periods": len(summed),
        "bars_per_period": k,
        "reps": reps,
        "alpha": alpha,
        "constant": [int(j) for j in np.flatnonzero(~varies)],
        "reason": None,
    }
    if len(d) < MIN_SPA_PERIODS:
        out["spa_pvalue"] = None
        out["reason"] = f"needs at least {MIN_SPA_PERIODS} bars (has {len(d)})"
        return out
    if len(cols) == 0:
        return out
    losses = -summed  # arch wants losses: lower is better
    benchmark = np.zeros(len(summed))
    spa = SPA(benchmark, losses, reps=reps, seed=seed)
    spa.compute()
    out["spa_pvalue"] = float(spa.pvalues["consistent"])
    out["superior"] = sorted(int(cols[j]) for j in step_m(spa, alpha))
    return out


def step_m(spa: Any, size: float) -> list[int]:
    """Romano-Wolf StepM over a computed ``arch.bootstrap.SPA``: the models it finds better
    than the benchmark at ``size``, removing them and testing the rest again until no step
    finds one more.

    It is ``arch.bootstrap.StepM.compute`` (same bootstrap, seed and "consistent" critical
    values, so the same models) but it stops once every model is found: arch 8.0 goes on
    with none left when the last ones are found in a later step than the first, and fails
    with "zero-size array to reduction operation maximum" (a sweep whose verified cells all
    beat buy-and-hold lost its whole overfitting report to it).
    """
    k = spa.models.shape[1]
    found = sorted(int(i) for i in spa.better_models(size))
    step = found
    while step and len(found) < k:
        selector = np.ones(k, dtype=np.bool_)
        selector[found] = False
        spa.subset(selector)
        spa.compute()
        step = [int(i) for i in spa.better_models(size) if int(i) not in found]
        found = sorted(found + step)
    spa.subset(np.ones(k, dtype=np.bool_))
    return found


def overfitting_report(
    returns: pd.DataFrame,
    benchmark: pd.DataFrame,
    best: str,
    *,
    blocks: int = 16,
    reps: int = 1000,
    max_periods: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """DSR of ``best``, PBO, SPA and StepM for a sweep.

    Parameters
    ----------
    returns : DataFrame
        Per-bar simple returns, bars x cells (columns: cell names), on the same bars.
    benchmark : DataFrame
        Each cell's benchmark returns on the same bars and columns (buy-and-hold scaled to
        the cell's exposure).
    best : str
        The column of the ranking's best cell.
    blocks, reps, max_periods, seed
        CSCV blocks; bootstrap repetitions, period cap and seed of SPA / StepM.

    Returns
    -------
    dict
        ``trials``, ``bars``, ``best``, ``deflated_sharpe`` (of ``best``), ``sharpe``
        (per bar), ``sharpe_variance``, ``expected_max_sharpe``, ``pbo``, ``pbo_blocks``,
        ``pbo_splits``, ``spa_pvalue``, ``spa_reason``, ``spa_periods``,
        ``spa_bars_per_period``, ``beat_benchmark`` (cells StepM finds superior),
        ``best_beats_benchmark``, ``survives``, ``verdict`` (one line), and ``per_cell``:
        cell -> ``{"dsr", "beats_benchmark"}``.
    """
    if list(returns.columns) != list(benchmark.columns) or len(returns) != len(benchmark):
        raise ConfigurationError(
            "The 'benchmark' parameter of overfitting_report must have the shape and columns "
            f"of 'returns' ({returns.shape}); got {benchmark.shape}."
        )
    if best not in returns.columns:
        raise ConfigurationError(
            f"The 'best' parameter of overfitting_report must be a column of 'returns'. "
            f"Got {best!r} instead."
        )
    names = list(returns.columns)
    j = names.index(best)
    dsr = deflated_sharpe(returns, best=j)
    pbo = probability_of_overfitting(returns, blocks=blocks, seed=seed)
    excess = returns.to_numpy(np.float64) - benchmark.to_numpy(np.float64)
    spa = superior_predictive_ability(excess, reps=reps, max_periods=max_periods, seed=seed)
    superior = [names[i] for i in spa["superior"]]
    report = {
        "trials": dsr["trials"],
        "bars": dsr["bars"],
        "best": best,
        "deflated_sharpe": dsr["dsr"],
        "sharpe": dsr["sharpe"],
        "sharpe_variance": dsr["sharpe_variance"],
        "expected_max_sharpe": dsr["expected_max_sharpe"],
        "pbo": pbo["pbo"],
        "pbo_blocks": pbo["blocks"],
        "pbo_splits": pbo["splits"],
        "spa_pvalue": spa["spa_pvalue"],
        "spa_reason": spa["reason"],
        "spa_periods": spa["periods"],
        "spa_bars_per_period": spa["bars_per_period"],
        "beat_benchmark": superior,
        "best_beats_benchmark": best in superior,
        "survives": bool(
            dsr["dsr"] >= DSR_LEVEL
            and spa["spa_pvalue"] is not None
            and spa["spa_pvalue"] < SPA_ALPHA
        ),
        "per_cell": {
            name: {"dsr": float(dsr["per_cell"][i]), "beats_benchmark": name in superior}
            for i, name in enumerate(names)
        },
    }
    report["verdict"] = verdict(report)
    return report


def verdict(report: dict[str, Any]) -> str:
    """One line: whether the best cell survives, with the DSR, SPA p-value and PBO."""
    dsr, p, pbo = report["deflated_sharpe"], report["spa_pvalue"], report["pbo"]
    trials = report["trials"]
    dsr_part = (
        f"deflated Sharpe {dsr:.3f} {'>=' if dsr >= DSR_LEVEL else '<'} {DSR_LEVEL} over "
        f"{trials} trials"
    )
    if p is None:
        spa_part = f"SPA not computed ({report.get('spa_reason')})"
    else:
        spa_part = (
            f"SPA p = {p:.3f} {'<' if p < SPA_ALPHA else '>='} {SPA_ALPHA} against buy-and-hold "
            f"scaled to exposure ({len(report['beat_benchmark'])} cell(s) beat it by StepM)"
        )
    pbo_part = "PBO -" if pbo is None else f"PBO {pbo:.2f}"
    if report["survives"]:
        return f"The best cell survives the overfitting checks: {dsr_part}; {spa_part}; {pbo_part}."
    return (
        f"The best cell does NOT survive the overfitting checks (its result may be luck): "
        f"{dsr_part}; {spa_part}; {pbo_part}."
    )
