"""Backtest reports: a printed summary, a chart PNG, and the trades and orders as CSV and JSON.

The chart has three panels sharing the time axis: price with the model's predicted price and
entry/exit markers; portfolio value against buy-and-hold; drawdown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from atb_strategies.backtest.runner import BacktestResult

_LABELS = [
    ("total_return", "Total return", "pct"),
    ("buy_and_hold_return", "Buy & hold return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe (annualised)", "num"),
    ("sortino", "Sortino (annualised)", "num"),
    ("max_drawdown", "Max drawdown", "share"),
    ("trades", "Closed trades", "int"),
    ("win_rate", "Win rate", "share"),
    ("exposure", "Exposure", "share"),
    ("fees_paid", "Fees paid", "num"),
    ("end_value", "Final value", "num"),
]


def format_summary(summary: dict[str, Any], title: str = "Backtest") -> str:
    """The summary as aligned text lines."""
    lines = [f"{title}: {summary['start']} .. {summary['end']} ({summary['bars']} bars)"]
    for key, label, kind in _LABELS:
        value = summary.get(key)
        if value is None:
            text = "n/a"
        elif kind == "pct":
            text = f"{value * 100:+.2f} %"
        elif kind == "share":
            text = f"{value * 100:.2f} %"
        elif kind == "int":
            text = str(value)
        else:
            text = f"{value:,.2f}"
        lines.append(f"  {label:<22} {text}")
    return "\n".join(lines)


def write_trades(result: BacktestResult, out_dir: Path) -> dict[str, Path]:
    """``trades.csv``/``trades.json`` (closed trades) and ``orders.csv`` (executions)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "trades_csv": out_dir / "trades.csv",
        "trades_json": out_dir / "trades.json",
        "orders_csv": out_dir / "orders.csv",
        "summary_json": out_dir / "summary.json",
    }
    columns = [
        "symbol",
        "model_key",
        "opened",
        "closed",
        "bars",
        "size",
        "entry_price",
        "pnl",
        "pnl_net",
        "commission",
        "entry_predicted_return",
        "entry_confidence",
    ]
    pd.DataFrame(result.trades, columns=columns).to_csv(paths["trades_csv"], index=False)
    paths["trades_json"].write_text(json.dumps(result.trades, indent=2) + "\n")
    pd.DataFrame(result.orders).to_csv(paths["orders_csv"], index=False)
    paths["summary_json"].write_text(json.dumps(result.summary, indent=2) + "\n")
    return paths


def plot_backtest(
    result: BacktestResult,
    candles: pd.DataFrame,
    path: Path,
    predictions: pd.Series | None = None,
    title: str = "",
) -> Path:
    """Write the three-panel chart to ``path`` (PNG) with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    equity = result.equity
    prices = candles.loc[equity.index[0] : equity.index[-1], "close"]
    fig, (ax_price, ax_equity, ax_dd) = plt.subplots(
        3, 1, figsize=(12, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]}
    )
    ax_price.plot(prices.index, prices.to_numpy(), color="black", lw=0.8, label="close")
    if predictions is not None and len(predictions):
        pred = predictions.loc[equity.index[0] : equity.index[-1]]
        ax_price.plot(
            pred.index,
            pred.to_numpy(),
            color="tab:purple",
            lw=0.6,
            alpha=0.7,
            label="predicted next close",
        )
    orders = pd.DataFrame(result.orders)
    if len(orders):
        orders["time"] = pd.to_datetime(orders["time"])
        entries = orders[orders["role"] == "entry"]
        exits = orders[orders["role"] != "entry"]
        ax_price.scatter(
            entries["time"],
            entries["price"],
            marker="^",
            color="tab:green",
            s=25,
            label="entry",
            zorder=3,
        )
        ax_price.scatter(
            exits["time"], exits["price"], marker="v", color="tab:red", s=25, label="exit", zorder=3
        )
    ax_price.set_ylabel("price")
    ax_price.legend(loc="upper left", fontsize=8)
    ax_price.set_title(title or "ML strategy backtest")
    start_value = float(equity["value"].iloc[0])
    ax_equity.plot(equity.index, equity["value"], color="tab:blue", lw=1, label="strategy")
    ax_equity.plot(
        prices.index,
        start_value * prices / prices.iloc[0],
        color="grey",
        lw=0.8,
        ls="--",
        label="buy & hold",
    )
    ax_equity.set_ylabel("value")
    ax_equity.legend(loc="upper left", fontsize=8)
    drawdown = equity["value"] / equity["value"].cummax() - 1
    ax_dd.fill_between(drawdown.index, drawdown.to_numpy() * 100, 0, color="tab:red", alpha=0.4)
    ax_dd.set_ylabel("drawdown %")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
