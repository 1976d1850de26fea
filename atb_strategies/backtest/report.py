"""Backtest reports: a printed summary, a chart PNG, and the trades and orders as CSV and JSON.

The chart (``backtest_figure``, ``plot_backtest``) has three panels sharing the time axis:

* price: the close drawn over the model's predicted close; where a position is open the panel
  is shaded (green long, red short), and entry/exit markers are added only when there are few
  trades (``max_markers``); bars without a prediction are shaded grey in every panel (darker:
  their rows span a gap in the candles; lighter: the model's warm-up), and each gap is a dotted
  line;
* cumulative return in % of the strategy and of buy-and-hold over the same bars; when their
  ranges differ too much to share an axis, buy-and-hold gets its own axis on the right, with
  the zeros aligned;
* the strategy's drawdown in %.

The title names the strategy, symbol, model key and period. Times on the chart are candle open
times, like the candles' index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atb_strategies.backtest.runner import BacktestResult
from atb_strategies.strategies.guards import fired_guards

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

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
#: Chart wording of the reasons for no prediction (strategies.base.NO_PREDICTION_REASONS).
_SHORT_REASONS = {"warm_up": "warm-up", "gap": "rows span a gap", "model": "no predicted return"}
#: Order of the price panel's legend entries.
_LEGEND_ORDER = (
    "close",
    "predicted close",
    "entry",
    "exit",
    "long position",
    "short position",
    "no prediction (gap)",
    "no prediction (warm-up)",
    "in-sample",
    "model version switch",
    "a guard fired",
)


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
    max_markers: int = 60,
) -> Path:
    """Write the three-panel chart (see the module docstring) to ``path`` as a PNG.

    Parameters
    ----------
    result : BacktestResult
        From ``run_backtest``.
    candles : DataFrame
        The candles backtested (their ``close`` is drawn over the traded period).
    path : Path
        Where to write the PNG; parent directories are created.
    predictions : Series, optional
        Predicted close per decision bar (``result.predictions["predicted_price"]``).
    title : str
        First title line; default ``"<strategy> on <symbol> <timeframe>"``. The model key and
        the period are always added.
    max_markers : int
        Draw entry/exit markers when there are at most this many closed trades; the shaded
        position shows where trades are more.

    Returns
    -------
    Path
        ``path``.
    """
    fig = backtest_figure(result, candles, predictions, title=title, max_markers=max_markers)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def backtest_figure(
    result: BacktestResult,
    candles: pd.DataFrame,
    predictions: pd.Series | None = None,
    *,
    title: str = "",
    max_markers: int = 60,
) -> Figure:
    """The chart of ``plot_backtest`` as a matplotlib ``Figure`` (no pyplot, no backend).

    Parameters are those of ``plot_backtest``. The figure's axes are, in order: price, return,
    drawdown, then the buy-and-hold return axis when it needs its own scale.
    """
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    summary = result.summary
    equity = result.equity
    index = equity.index
    prices = candles.loc[index[0] : index[-1], "close"]
    fig = Figure(figsize=(14, 9), layout="constrained")
    ax_price, ax_ret, ax_dd = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]}
    )
    gap_mask = _reason_mask(result, index, "gap")
    warm_mask = _reason_mask(result, index, "warm_up")
    seen_mask = _in_sample_mask(summary, index)
    for ax in (ax_price, ax_ret, ax_dd):
        _shade(ax, index, seen_mask, color="tab:orange", alpha=0.12, label="in-sample")
        _shade(ax, index, gap_mask, color="0.55", alpha=0.35, label="no prediction (gap)")
        _shade(ax, index, warm_mask, color="0.8", alpha=0.3, label="no prediction (warm-up)")

    # guards (model age, drift, sentiment age) that fired on the bar's decision
    _shade(ax_price, index, _guard_mask(result, index), "tab:purple", 0.12, "a guard fired")
    # price: position shading, prediction, close on top, markers when few trades
    _shade(ax_price, index, equity["long"].to_numpy(bool), "tab:green", 0.22, "long position")
    _shade(ax_price, index, equity["short"].to_numpy(bool), "tab:red", 0.22, "short position")
    if predictions is not None and len(predictions):
        pred = _at_predicted_bar(predictions, result).loc[index[0] : index[-1]]
        ax_price.plot(
            pred.index,
            pred.to_numpy(),
            color="tab:purple",
            lw=0.7,
            alpha=0.6,
            zorder=2,
            label="predicted close (made a bar before)",
        )
    ax_price.plot(prices.index, prices.to_numpy(), color="black", lw=0.8, zorder=3, label="close")
    if len(result.trades) <= max_markers:
        bar = (index[1:] - index[:-1]).median() if len(index) > 1 else pd.Timedelta(0)
        _markers(ax_price, result.orders, bar)
    for gap in summary.get("gaps") or []:
        ax_price.axvline(pd.Timestamp(gap["resumes"]), color="0.35", lw=0.6, ls=":", zorder=1)
    for i, switch in enumerate(summary.get("version_switches") or []):
        for ax in (ax_price, ax_ret):
            ax.axvline(
                pd.Timestamp(switch["time"]),
                color="tab:purple",
                lw=0.7,
                ls="--",
                zorder=1,
                label="model version switch" if i == 0 and ax is ax_price else None,
            )
    ax_price.set_ylabel("price")
    handles, labels = ax_price.get_legend_handles_labels()
    rank = {label: i for i, label in enumerate(_LEGEND_ORDER)}
    order = sorted(range(len(labels)), key=lambda i: rank.get(labels[i].split(" (made")[0], 99))
    ax_price.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc=_quiet_corner([(ax_price, prices.to_numpy())]),
        fontsize=8,
        ncols=2,
        framealpha=0.85,
    )
    ax_price.set_title(_price_note(result, max_markers), fontsize=9, loc="left")

    # cumulative return in %: strategy and buy-and-hold, comparable
    strat = (equity["value"] / float(equity["value"].iloc[0]) - 1) * 100
    hold = (prices / float(prices.iloc[0]) - 1) * 100
    ax_ret.axhline(0, color="0.5", lw=0.6)
    ax_ret.plot(strat.index, strat.to_numpy(), color="tab:blue", lw=1.2, label="strategy")
    ax_hold = ax_ret
    if _needs_own_axis(strat.to_numpy(), hold.to_numpy()):
        ax_hold = ax_ret.twinx()
        ax_hold.set_ylabel("buy & hold return % (right axis)", color="0.35")
        ax_hold.tick_params(axis="y", colors="0.35")
    ax_hold.plot(hold.index, hold.to_numpy(), color="0.45", lw=0.8, ls="--", label="buy & hold")
    if ax_hold is not ax_ret:
        _align_zero(ax_ret, ax_hold)
    ax_ret.set_ylabel("strategy return %", color="tab:blue")
    handles, labels = ax_ret.get_legend_handles_labels()
    if ax_hold is not ax_ret:
        more = ax_hold.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    shown = [(h, lab) for h, lab in zip(handles, labels, strict=True) if "prediction" not in lab]
    corner = _quiet_corner([(ax_ret, strat.to_numpy()), (ax_hold, hold.to_numpy())])
    ax_ret.legend(*zip(*shown, strict=True), loc=corner, fontsize=8, framealpha=0.85)
    ax_ret.set_title(_return_note(summary), fontsize=9, loc="left")

    drawdown = (equity["value"] / equity["value"].cummax() - 1) * 100
    ax_dd.fill_between(drawdown.index, drawdown.to_numpy(), 0, color="tab:red", alpha=0.4, lw=0)
    ax_dd.set_ylabel("drawdown %")

    locator = AutoDateLocator()
    ax_dd.xaxis.set_major_locator(locator)
    ax_dd.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax_dd.set_xlim(index[0], index[-1])
    fig.suptitle(_title(summary, title, index), fontsize=12)
    return fig


def _in_sample_mask(summary: dict[str, Any], index: pd.DatetimeIndex) -> np.ndarray:
    """Bars inside the model's training period (the in-sample guard)."""
    period = (summary.get("in_sample") or {}).get("training_period")
    if not isinstance(period, dict):
        return np.zeros(len(index), dtype=bool)
    first, available = pd.Timestamp(period["first"]), pd.Timestamp(period["available_from"])
    return np.asarray((index >= first) & (index < available))


def _title(summary: dict[str, Any], title: str, index: pd.DatetimeIndex) -> str:
    first = title or (
        f"{summary.get('strategy', 'Strategy')} on {summary.get('symbol', '')} "
        f"{summary.get('timeframe', '')}".strip()
    )
    key = summary.get("model_key")
    model = f"model {key}   " if key and key not in first else ""
    period = f"{index[0]:%Y-%m-%d %H:%M} to {index[-1]:%Y-%m-%d %H:%M} ({len(index):,} bars)"
    return f"{first}\n{model}{period}"


def _price_note(result: BacktestResult, max_markers: int) -> str:
    s = result.summary
    trades = len(result.trades)
    parts = [
        f"{trades:,} closed trades"
        + (" (markers)" if trades <= max_markers else ", open position shaded"),
        f"exposure {s['exposure'] * 100:.1f} %",
    ]
    missing = s.get("bars_without_prediction")
    if missing:
        why = ", ".join(
            f"{v['bars']:,} {_SHORT_REASONS.get(code, code)}"
            for code, v in s["no_prediction"].items()
        )
        parts.append(f"no prediction on {missing:,} bars ({why})")
    return "   ".join(parts)


def _return_note(s: dict[str, Any]) -> str:
    def pct(key: str) -> str:
        value = s.get(key)
        return "n/a" if value is None else f"{value * 100:+.2f} %"

    win = s.get("win_rate")
    return (
        f"strategy {pct('total_return')}   buy & hold {pct('buy_and_hold_return')}   "
        f"max drawdown {s['max_drawdown'] * 100:.2f} %   "
        f"win rate {'n/a' if win is None else f'{win * 100:.1f} %'}"
    )


def _reason_mask(result: BacktestResult, index: pd.DatetimeIndex, code: str) -> np.ndarray:
    """Per bar of ``index``: no prediction for the reason ``code`` (``"gap"``, ``"warm_up"``)."""
    reasons = result.no_prediction
    if reasons is None or not len(reasons):
        return np.zeros(len(index), dtype=bool)
    return index.isin(reasons.index[reasons.to_numpy() == code])


def _guard_mask(result: BacktestResult, index: pd.DatetimeIndex) -> np.ndarray:
    """Per bar of ``index`` (open times): a guard fired on the decision made at its close."""
    decisions = getattr(result.strategy, "decisions", None) or []
    closes = [d["bar"] for d in decisions if fired_guards(d.get("reason"))]
    if not closes or len(index) < 2:
        return np.zeros(len(index), dtype=bool)
    bar = (index[1:] - index[:-1]).min()  # decisions carry close times, the index open times
    return index.isin(pd.DatetimeIndex(pd.to_datetime(closes)) - bar)


def _shade(
    ax: Axes, index: pd.DatetimeIndex, mask: np.ndarray, color: str, alpha: float, label: str
) -> None:
    """Shade the full height of ``ax`` over the bars where ``mask`` is true, each from its own
    time to the next bar's (the last for one median bar): one rectangle per run of bars."""
    if not mask.any():
        return
    from matplotlib.dates import date2num

    step = index[1:] - index[:-1]
    last = index[-1] + (step.median() if len(step) else pd.Timedelta(0))
    x = date2num(index.append(pd.DatetimeIndex([last])))
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    ax.broken_barh(
        list(zip(x[starts], x[ends] - x[starts], strict=True)),
        (0, 1),
        transform=ax.get_xaxis_transform(),
        facecolors=color,
        alpha=alpha,
        lw=0,
        label=label,
        zorder=0,
    )


def _at_predicted_bar(predictions: pd.Series, result: BacktestResult) -> pd.Series:
    """The predicted closes moved to the bar they predict (``horizon`` bars after the bar each
    was made at), so they line up with the close they are compared with."""
    horizon = 1
    strategy = result.strategy
    if strategy is not None and getattr(strategy, "predictions", None):
        indicator = next(iter(strategy.predictions.values()))
        horizon = int(getattr(indicator.bundle.metadata.output, "horizon", 1) or 1)
    return predictions.shift(horizon).iloc[horizon:]


def _markers(ax: Axes, orders: list[dict[str, Any]], bar: pd.Timedelta) -> None:
    """Entry and exit markers at the open time of the bar each order was filled in (orders
    carry backtrader's bar close times; the chart, like the candles, uses open times)."""
    frame = pd.DataFrame(orders)
    if not len(frame):
        return
    frame["time"] = pd.to_datetime(frame["time"]) - bar
    entries = frame[frame["role"] == "entry"]
    exits = frame[frame["role"] != "entry"]
    style = {"s": 36, "zorder": 4, "edgecolors": "black", "linewidths": 0.4}
    ax.scatter(
        entries["time"], entries["price"], marker="^", color="tab:green", label="entry", **style
    )
    ax.scatter(exits["time"], exits["price"], marker="v", color="tab:red", label="exit", **style)


def _quiet_corner(lines: list[tuple[Axes, np.ndarray]]) -> str:
    """The corner of the axes where the lines (values over evenly spread times, each on its
    axis's current y limits) pass least: a cheap ``loc="best"`` for long series."""
    corners = {
        "upper left": (0.0, 0.35, 0.7, 1.0),
        "upper right": (0.65, 1.0, 0.7, 1.0),
        "lower left": (0.0, 0.35, 0.0, 0.3),
        "lower right": (0.65, 1.0, 0.0, 0.3),
    }
    counts = dict.fromkeys(corners, 0)
    for ax, values in lines:
        lo, hi = ax.get_ylim()
        if not len(values) or hi <= lo:
            continue
        x = np.linspace(0.0, 1.0, len(values))
        y = (values - lo) / (hi - lo)
        for name, (x0, x1, y0, y1) in corners.items():
            counts[name] += int(np.count_nonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)))
    return min(corners, key=lambda name: counts[name])  # ties: the first, upper left


def _needs_own_axis(strategy: np.ndarray, benchmark: np.ndarray) -> bool:
    """Whether the benchmark's range would flatten the strategy's on a shared axis."""
    span_s = float(np.nanmax(strategy) - np.nanmin(strategy)) if len(strategy) else 0.0
    span_b = float(np.nanmax(benchmark) - np.nanmin(benchmark)) if len(benchmark) else 0.0
    return span_b > 4 * max(span_s, 1e-9)


def _align_zero(a: Axes, b: Axes) -> None:
    """Widen one axis's y limits so that 0 sits at the same height on both (limits only grow,
    so no data leaves the view); the smaller widening of the two choices is taken."""
    limits = []
    for ax in (a, b):
        lo, hi = ax.get_ylim()
        limits.append((min(lo, 0.0), max(hi, 0.0)))
    if any(hi <= lo for lo, hi in limits):
        return
    heights = [-lo / (hi - lo) for lo, hi in limits]  # where 0 sits, 0 bottom .. 1 top
    best = None
    for target in heights:
        new = [_zero_at(lo, hi, target) for lo, hi in limits]
        if any(n is None for n in new):
            continue
        stretch = max((n[1] - n[0]) / (hi - lo) for n, (lo, hi) in zip(new, limits, strict=True))
        if best is None or stretch < best[0]:
            best = (stretch, new)
    if best is not None:
        for ax, (lo, hi) in zip((a, b), best[1], strict=True):
            ax.set_ylim(lo, hi)


def _zero_at(lo: float, hi: float, target: float) -> tuple[float, float] | None:
    """Limits containing ``lo..hi`` with 0 at height ``target`` (0 bottom, 1 top), or None."""
    now = -lo / (hi - lo)
    if abs(now - target) < 1e-12:
        return lo, hi
    if target > now:  # more room below zero
        return None if target >= 1 else (-target * hi / (1 - target), hi)
    return None if target <= 0 else (lo, -lo * (1 - target) / target)
