"""A finished sweep audited for luck: the overfitting statistics (``overfitting``) of all its
finished cells (the number of trials) and, when asked, walk-forward selection
(``walkforward``), both from the cells' per-bar returns (``returns``).

``audit_sweep`` adds two columns to the results (``dsr``: each cell's probabilistic Sharpe
against the expected best of the sweep's trials; ``beats_benchmark``: StepM finds it better
than buy-and-hold scaled to its net exposure) and returns the summaries ``run_sweep`` puts in
``attrs`` and ``sweep.json``. A statistic that cannot be computed is reported with its reason
and never loses the results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from atb_strategies.exceptions import AtbError
from atb_strategies.sweep.overfitting import overfitting_report
from atb_strategies.sweep.report import rank_cells
from atb_strategies.sweep.returns import benchmark_matrix, returns_matrix
from atb_strategies.sweep.walkforward import check_walk_forward_metric, walk_forward_selection

log = logging.getLogger(__name__)

#: Bars the statistics need at least.
MIN_BARS = 3


def audit_sweep(
    results: pd.DataFrame,
    records: Mapping[str, Mapping[str, Any]],
    closes: Mapping[str, pd.Series],
    rank_by: str,
    timeframe: str,
    walk_forward: Callable[[int], Sequence[Any]] | None = None,
    bars_per_year: float | None = None,
) -> dict[str, Any]:
    """The overfitting report (and walk-forward selection) of ``results``.

    Parameters
    ----------
    results : DataFrame
        ``run_sweep``'s rows; ``dsr`` and ``beats_benchmark`` columns are added in place.
    records : mapping
        Cell name -> its record (with ``returns``).
    closes : mapping
        Symbol -> close prices indexed by open time (the buy-and-hold benchmark).
    rank_by, timeframe
        The sweep's ranking metric and bar size.
    walk_forward : callable, optional
        Number of bars -> folds (see ``walkforward.walk_forward_selection``).
    bars_per_year : float, optional
        The cells' annualisation (their models' calendar); None: 24/7.

    Returns
    -------
    dict
        ``overfitting`` (``overfitting.overfitting_report`` without ``per_cell``, or
        ``{"error": reason}``) and ``walk_forward`` (``walk_forward_selection``'s result,
        ``{"error": reason}`` when the folds do not fit, None when not asked).
    """
    results["dsr"] = float("nan")
    results["beats_benchmark"] = None
    out: dict[str, Any] = {"overfitting": None, "walk_forward": None}
    ranked = rank_cells(results, rank_by)
    names = [n for n in ranked["cell"] if n in records and records[n].get("returns")]
    # every finished cell is a trial, ranked or not (a cell that never trades has no Sharpe
    # to rank by, but it was tried): leaving it out would make the best cell look less lucky
    names += [
        n for n in results["cell"] if n not in names and n in records and records[n].get("returns")
    ]
    if not names:
        out["overfitting"] = {"error": "no cell finished with per-bar returns"}
        return out
    matrix = returns_matrix({n: records[n] for n in dict.fromkeys(names)})
    if len(matrix) < MIN_BARS:
        reason = f"the cells share {len(matrix)} bar(s); the statistics need {MIN_BARS}"
        out["overfitting"] = {"error": reason}
        return out
    best = names[0]
    try:
        bench = benchmark_matrix(matrix, records, closes)
        report = overfitting_report(matrix, bench, best)
    except (AtbError, ValueError, ArithmeticError) as e:
        log.warning("sweep: the overfitting statistics could not be computed: %s", e)
        out["overfitting"] = {"error": str(e)}
    else:
        per_cell = report.pop("per_cell")
        dsr = [per_cell.get(c, {}).get("dsr") for c in results["cell"]]
        results["dsr"] = pd.to_numeric(pd.Series(dsr, index=results.index, dtype=object))
        results["beats_benchmark"] = [
            per_cell.get(c, {}).get("beats_benchmark") for c in results["cell"]
        ]
        out["overfitting"] = report
    if walk_forward is not None:
        check_walk_forward_metric(rank_by)
        try:
            out["walk_forward"] = walk_forward_selection(
                matrix,
                walk_forward(len(matrix)),
                rank_by,
                in_sample_best=best,
                timeframe=timeframe,
                model_oos_from=_latest_oos_from(records, names),
                bars_per_year=bars_per_year,
            )
        except AtbError as e:  # e.g. no fold fits the bars: reported, the results are kept
            out["walk_forward"] = {"error": str(e)}
    return out


def _latest_oos_from(records: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> Any:
    """The latest first unseen bar of the cells' models (None when none is known)."""
    stamps = [pd.Timestamp(records[n]["oos_from"]) for n in names if records[n].get("oos_from")]
    return max(stamps) if stamps else None
