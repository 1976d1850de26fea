"""Backtest reports: a printed summary, and the trades, orders and summary as CSV and JSON.

The chart PNG is ``backtest.chart`` (``backtest_figure`` and ``plot_backtest``, re-exported
here) and the interactive HTML report ``backtest.html_report``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from atb_strategies.backtest.chart import backtest_figure, plot_backtest
from atb_strategies.backtest.runner import BacktestResult

__all__ = ["backtest_figure", "format_summary", "plot_backtest", "write_trades"]

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
_GAPS_SHOWN = 3  # gaps named in the printed summary (all are in summary.json)


def format_summary(summary: dict[str, Any], title: str = "Backtest") -> str:
    """The summary as aligned text lines.

    Parameters
    ----------
    summary : dict
        ``BacktestResult.summary``.
    title : str
        Start of the first line (the period and bar count follow).

    Returns
    -------
    str
        One line per figure, then how many bars had no prediction and why (one line per
        reason), and the gaps in the candles the traded bars' predictions read, if any.
    """
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
    lines += _no_prediction_lines(summary)
    lines += _in_sample_lines(summary)
    lines += _baseline_lines(summary)
    return "\n".join(lines)


def _in_sample_lines(summary: dict[str, Any]) -> list[str]:
    guard = summary.get("in_sample")
    if not guard:
        return []
    if guard.get("training_period") is None:
        return [f"  {'In-sample bars':<22} unknown: {guard['warning']}"]
    if guard["training_period"] == "asof":
        return [f"  {'In-sample bars':<22} none (each bar served by an earlier version)"]
    lines = [
        f"  {'In-sample bars':<22} {guard['in_sample_bars']:,} of "
        f"{guard['in_sample_bars'] + guard['out_of_sample_bars'] + guard['pre_training_bars']:,}"
        " (model trained on "
        f"{guard['training_period']['first'][:10]} .. {guard['training_period']['seen_until']})"
    ]
    for name in ("pre_training", "in_sample", "out_of_sample"):
        part = guard.get(name)
        if part:
            sharpe = f"{part['sharpe']:.2f}" if part["sharpe"] is not None else "n/a"
            lines.append(
                f"  {'':<22}   {name.replace('_', '-')}: {part['bars']:,} bars, return "
                f"{100 * part['total_return']:+.2f} %, Sharpe {sharpe}, {part['trades']} trades"
            )
    if guard.get("warning"):
        lines.append(f"WARNING: {guard['warning']}")
    return lines


def _baseline_lines(summary: dict[str, Any]) -> list[str]:
    rows = summary.get("baselines")
    if not rows:
        return []
    lines = [
        f"  Baselines (same bars, fees and slippage {summary.get('slippage_bps', 0):g} bps):",
        f"  {'':<4}{'':<22}{'net %':>9}{'gross %':>9}{'Sharpe':>8}{'fills':>7}{'size':>8}",
    ]
    own = {
        "total_return": summary["total_return"],
        "gross_return": summary.get("gross_return"),
        "sharpe": summary.get("sharpe"),
        "trades": summary.get("fills"),
        "fraction": summary.get("invested_fraction"),
    }
    for name, row in [("strategy", own), *rows.items()]:
        sharpe = f"{row['sharpe']:.2f}" if row.get("sharpe") is not None else "n/a"
        gross = row.get("gross_return")
        lines.append(
            f"  {'':<4}{name:<22}{100 * row['total_return']:>+9.2f}"
            f"{(100 * gross if gross is not None else float('nan')):>+9.2f}{sharpe:>8}"
            f"{row.get('trades', 0):>7}{100 * (row.get('fraction') or 0):>7.1f}%"
        )
    return lines


def _no_prediction_lines(summary: dict[str, Any]) -> list[str]:
    """Lines saying how many bars had no prediction and why, and the gaps in the candles."""
    lines = []
    missing = summary.get("bars_without_prediction")
    if missing is not None:
        bars = summary.get("bars") or 0
        share = f" ({missing / bars * 100:.2f} %)" if bars else ""
        lines.append(f"  {'No prediction':<22} {missing:,} of {bars:,} bars{share}")
        for item in (summary.get("no_prediction") or {}).values():
            lines.append(f"  {'':<22}   {item['bars']:,}: {item['why']}")
    gaps = summary.get("gaps") or []
    if gaps:
        total = sum(int(g["missing_bars"]) for g in gaps)
        shown = ", ".join(
            f"{g['missing_bars']} missing after {g['after']}" for g in gaps[:_GAPS_SHOWN]
        )
        more = f", and {len(gaps) - _GAPS_SHOWN} more" if len(gaps) > _GAPS_SHOWN else ""
        lines.append(
            f"  {'Gaps in the candles':<22} {len(gaps)} ({total:,} missing bar"
            f"{'s' if total != 1 else ''}): {shown}{more}"
        )
        policy = summary.get("gap_policy")
        if policy in ("warn", "allow"):
            lines.append(
                f"  {'':<22}   gap_policy {policy!r}: predicted across them, bars either side "
                "treated as consecutive"
            )
    return lines


def format_symbols(summary: dict[str, Any]) -> str:
    """The per-symbol block of a several-symbol backtest (``summary["symbols"]``): one row per
    symbol (model, trades, win rate, P&L and its share of the start value, exposure, bars
    without prediction, in-sample bars of its model), then each model's in-sample warning."""
    blocks = summary.get("symbols") or {}
    if not blocks:
        return ""
    currency = summary.get("account_currency") or ""
    lines = [
        "  Per symbol (P&L net of fees, realised and open; the symbols' P&L add up to the book's):",
        f"  {'':<4}{'symbol':<12}{'trades':>7}{'win %':>7}{'P&L ' + currency:>14}{'of start':>10}"
        f"{'exposure':>10}{'no pred.':>10}{'in-sample':>11}  model",
    ]
    warnings = []
    for sym, b in blocks.items():
        win = f"{100 * b['win_rate']:.1f}" if b.get("win_rate") is not None else "n/a"
        guard = b.get("in_sample") or {}
        seen = guard.get("in_sample_bars")
        lines.append(
            f"  {'':<4}{sym:<12}{b['trades']:>7}{win:>7}{b['pnl']:>+14,.2f}"
            f"{100 * b['return_contribution']:>+9.2f}%{100 * b['exposure']:>9.1f}%"
            f"{b.get('bars_without_prediction') or 0:>10,}"
            f"{'n/a' if seen is None else f'{seen:,}':>11}  {b.get('model_key') or ''}"
        )
        if guard.get("warning"):
            known = guard.get("training_period") is not None
            warnings.append(f"{'WARNING' if known else '  note'}: {sym}: {guard['warning']}")
    return "\n".join(lines + warnings)


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) as ``None``, for strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_trades(result: BacktestResult, out_dir: Path) -> dict[str, Path]:
    """``trades.csv``/``trades.json`` (closed trades, with their exit price and reason, then any
    trade still open at the end, marked to the last close with ``exit_reason`` "end_of_data"),
    ``orders.csv`` (executions) and ``summary.json``."""
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
        "exit_price",
        "exit_reason",
        "pnl",
        "pnl_net",
        "commission",
        "entry_predicted_return",
        "entry_confidence",
    ]
    rows = [*result.trades, *result.open_trades]  # the open ones: exit_reason "end_of_data"
    pd.DataFrame(rows, columns=columns).to_csv(paths["trades_csv"], index=False)
    # strict JSON: a value with no number (a direction model's predicted return) is null
    paths["trades_json"].write_text(json.dumps(_json_safe(rows), indent=2) + "\n")
    pd.DataFrame(result.orders).to_csv(paths["orders_csv"], index=False)
    paths["summary_json"].write_text(json.dumps(result.summary, indent=2) + "\n")
    return paths
