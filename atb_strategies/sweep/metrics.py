"""The metrics a sweep reports and ranks by (no heavy imports: the CLI reads them for --help)."""

from __future__ import annotations

#: The summary numbers each cell reports (``results.csv`` columns, in order).
METRICS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "trades",
    "win_rate",
    "exposure",
    "fees_paid",
)

#: Metrics a sweep can rank by, and whether higher is better.
RANK_METRICS: dict[str, bool] = {
    "sharpe": True,
    "sortino": True,
    "total_return": True,
    "cagr": True,
    "max_drawdown": False,
    "win_rate": True,
    "trades": True,
    "exposure": True,
    "fees_paid": False,
}
