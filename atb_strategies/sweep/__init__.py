"""Parameter sweeps: a strategy backtested over a grid of params, symbols and model versions,
serially, on every local core or on a Ray cluster, with each model's predictions computed once.

``run_sweep`` (``atb sweep``) plans the cells, resumes finished ones, hands the candles and the
predictions to the workers once, writes each cell atomically as it finishes and returns one
row per cell; ``report`` ranks them, warns when the ranking needs it and draws the heatmap;
``audit`` asks whether the best cell is luck (``overfitting``: deflated Sharpe, PBO, SPA /
StepM) and, when asked, selects walk-forward (``walkforward``), from each cell's per-bar
returns (``returns``).

Names are imported on first use, so ``atb --help`` reads ``sweep.metrics`` without loading
pandas or backtrader.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "RANK_METRICS": "atb_strategies.sweep.metrics",
    "check_grid_values": "atb_strategies.sweep.grid",
    "expand_grid": "atb_strategies.sweep.grid",
    "format_ranking": "atb_strategies.sweep.report",
    "heatmap_figure": "atb_strategies.sweep.report",
    "overfitting_report": "atb_strategies.sweep.overfitting",
    "parse_grid": "atb_strategies.sweep.grid",
    "parse_value": "atb_strategies.sweep.grid",
    "plot_heatmap": "atb_strategies.sweep.report",
    "rank_cells": "atb_strategies.sweep.report",
    "run_sweep": "atb_strategies.sweep.runner",
    "sweep_warnings": "atb_strategies.sweep.report",
    "threshold_warnings": "atb_strategies.sweep.thresholds",
    "walk_forward_selection": "atb_strategies.sweep.walkforward",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atb_strategies.sweep' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
