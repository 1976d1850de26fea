"""Walk-forward selection over a sweep: on each fold, the cell that was best on the fold's
train bars is traded on its test bars; the test periods stitched together are the honest
out-of-sample record of "optimise, then run".

Folds come from the caller (``atb sweep --walk-forward`` uses ``evaluation.folds.make_folds``,
a higher layer than this one): any objects with ``train_start``, ``train_end``,
``test_start`` and ``test_end`` bar positions (ends exclusive). Cells are scored from their
per-bar returns (``sweep.returns``), so nothing runs again. A cell's returns on a fold's bars
come from its backtest over the whole period: a position opened before a fold's first test
bar is still held on it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features import periods

#: Metrics walk-forward selection can rank by (computed from per-bar returns), and whether
#: higher is better.
WALK_FORWARD_METRICS: dict[str, bool] = {
    "sharpe": True,
    "sortino": True,
    "total_return": True,
    "cagr": True,  # the same order as total_return over the same bars
    "max_drawdown": False,
}


def check_walk_forward_metric(rank_by: str) -> str:
    """``rank_by`` when walk-forward selection can compute it from returns; else raise."""
    if rank_by not in WALK_FORWARD_METRICS:
        raise ConfigurationError(
            f"Walk-forward selection ranks by {', '.join(WALK_FORWARD_METRICS)} (computed from "
            f"each cell's per-bar returns). Got rank_by={rank_by!r} instead."
        )
    return rank_by


def scores(returns: np.ndarray, rank_by: str) -> np.ndarray:
    """``rank_by`` of each column of ``returns`` (bars x cells), signed so higher is better."""
    check_walk_forward_metric(rank_by)
    r = np.asarray(returns, dtype=np.float64)
    if rank_by in ("total_return", "cagr"):
        return np.prod(1 + r, axis=0) - 1
    if rank_by == "max_drawdown":
        equity = np.cumprod(1 + r, axis=0)
        return -np.max(1 - equity / np.maximum.accumulate(equity, axis=0), axis=0)
    mean = r.mean(axis=0)
    if rank_by == "sharpe":
        sd = r.std(axis=0, ddof=1) if len(r) > 1 else np.zeros(r.shape[1])
    else:
        sd = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=0))
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 1e-15)


def _record(r: np.ndarray, per_year: float) -> dict[str, Any]:
    sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    return {
        "bars": len(r),
        "total_return": float(np.prod(1 + r) - 1),
        "sharpe": float(r.mean() / sd * math.sqrt(per_year)) if sd > 1e-15 else None,
    }


def walk_forward_selection(
    returns: pd.DataFrame,
    folds: Sequence[Any],
    rank_by: str,
    *,
    in_sample_best: str,
    timeframe: str,
    model_oos_from: Any = None,
    bars_per_year: float | None = None,
) -> dict[str, Any]:
    """Choose the best cell by ``rank_by`` on each fold's train bars, trade it on the fold's
    test bars, and stitch the test periods.

    Parameters
    ----------
    returns : DataFrame
        Per-bar returns, bars x cells (``returns.returns_matrix``).
    folds : sequence
        Objects with ``train_start``, ``train_end``, ``test_start``, ``test_end`` (bar
        positions in ``returns``, ends exclusive), e.g. ``evaluation.folds.make_folds``'s.
    rank_by : str
        One of ``WALK_FORWARD_METRICS``.
    in_sample_best : str
        The cell the whole-period ranking put first; its returns over the same test bars are
        reported next to the stitched ones.
    timeframe : str
        Bar size, to annualise Sharpe ratios like the sweep's.
    bars_per_year : float, optional
        Trading bars in a year of the cells' calendar (``predictions.model_bars_per_year``), as
        the cells' own backtests annualise; None: 24/7, the bars of ``timeframe`` in 365 days.

    Returns
    -------
    dict
        ``rank_by``, ``folds`` (per fold: train and test first/last bar times, ``chosen``
        cell, its ``train_score`` and ``test_return``), ``changes`` (how often the chosen
        cell changed), ``out_of_sample`` (the stitched test bars: ``bars``,
        ``total_return``, ``sharpe``), ``in_sample_best`` (``cell`` and the same numbers over
        the same bars), ``model_in_sample_bars`` (stitched test bars before
        ``model_oos_from``, the latest first unseen bar of the cells' models: out of sample for
        the parameter choice, not for the model) and ``note``.
    """

    check_walk_forward_metric(rank_by)
    if in_sample_best not in returns.columns:
        raise ConfigurationError(
            f"The 'in_sample_best' parameter must be a column of 'returns'. Got "
            f"{in_sample_best!r} instead."
        )
    if not folds:
        raise ConfigurationError("Walk-forward selection needs at least one fold.")
    values = returns.to_numpy(dtype=np.float64)
    names = list(returns.columns)
    times = returns.index
    sign = 1.0 if WALK_FORWARD_METRICS[rank_by] else -1.0
    stitched: list[np.ndarray] = []
    best_oos: list[np.ndarray] = []
    rows = []
    for fold in folds:
        if (
            not 0
            <= fold.train_start
            < fold.train_end
            <= fold.test_start
            < fold.test_end
            <= len(values)
        ):
            raise ConfigurationError(
                f"Fold {getattr(fold, 'number', '?')} ({fold.train_start}..{fold.train_end} "
                f"train, {fold.test_start}..{fold.test_end} test) does not fit the sweep's "
                f"{len(values)} bars in order."
            )
        score = scores(values[fold.train_start : fold.train_end], rank_by)
        j = int(np.argmax(score))  # ties: the first cell
        test = values[fold.test_start : fold.test_end, j]
        stitched.append(test)
        best_oos.append(values[fold.test_start : fold.test_end, names.index(in_sample_best)])
        rows.append(
            {
                "train_from": str(times[fold.train_start]),
                "train_to": str(times[fold.train_end - 1]),
                "test_from": str(times[fold.test_start]),
                "test_to": str(times[fold.test_end - 1]),
                "chosen": names[j],
                "train_score": float(sign * score[j]),
                "test_return": float(np.prod(1 + test) - 1),
            }
        )
    per_year = periods.bars_per_year(None, timeframe) if bars_per_year is None else bars_per_year
    chosen = [row["chosen"] for row in rows]
    model_in_sample = 0
    if model_oos_from is not None and not pd.isna(model_oos_from):
        first_unseen = pd.Timestamp(model_oos_from)
        tested = np.concatenate([np.arange(f.test_start, f.test_end) for f in folds])
        stamps = pd.DatetimeIndex(times[tested])
        if stamps.tz is None and first_unseen.tz is not None:
            first_unseen = first_unseen.tz_localize(None)
        elif stamps.tz is not None and first_unseen.tz is None:
            first_unseen = first_unseen.tz_localize(stamps.tz)
        model_in_sample = int((stamps < first_unseen).sum())
    return {
        "rank_by": rank_by,
        "folds": rows,
        "changes": sum(a != b for a, b in itertools.pairwise(chosen)),
        "out_of_sample": _record(np.concatenate(stitched), per_year),
        "in_sample_best": {"cell": in_sample_best, **_record(np.concatenate(best_oos), per_year)},
        "model_in_sample_bars": model_in_sample,
        "note": (
            "each cell's returns come from one backtest over the whole period: a position "
            "opened before a test period is still held in it"
        ),
    }


def format_walk_forward(result: dict[str, Any]) -> str:
    """Two lines: the stitched out-of-sample result and the in-sample best's on the same
    bars."""
    oos, best = result["out_of_sample"], result["in_sample_best"]

    def numbers(r: dict[str, Any]) -> str:
        sharpe = "-" if r["sharpe"] is None else f"{r['sharpe']:.2f}"
        return f"return {100 * r['total_return']:.1f}%, Sharpe {sharpe}"

    return (
        f"Walk-forward ({len(result['folds'])} folds, best by {result['rank_by']} on each "
        f"train period, {result['changes']} change(s) of cell): out of sample "
        f"{numbers(oos)} over {oos['bars']} bars\n"
        f"In-sample best cell {best['cell']} over the same bars: {numbers(best)}"
        + (
            f"\nWARNING: {result['model_in_sample_bars']} of those bars are inside the "
            "training or validation period of a cell's model: out of sample for the choice of "
            "parameters, not for the model"
            if result.get("model_in_sample_bars")
            else ""
        )
    )
