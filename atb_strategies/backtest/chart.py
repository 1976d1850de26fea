"""The backtest chart PNG (matplotlib): ``backtest_figure`` and ``plot_backtest``.

Panels sharing the time axis, top to bottom (series from ``backtest.chart_data``):

* price: the close (black) and the model's predicted close (orange, at the bar it predicts)
  with its error band; entry and exit markers when asked, or when the trades are few;
* prediction: the predicted return in % at the bar it was made at, its error band and the
  strategy's entry and exit thresholds;
* strategy return in %, with buy-and-hold of the same average invested fraction of the capital
  on the same axis (the like-for-like comparison);
* buy-and-hold of all the capital in %, on its own axis;
* the strategy's drawdown in %;
* sentiment, when the candles carry it;
* a timeline of states, one labelled row each: position (long green, short red), in-sample,
  no prediction (gap, warm-up), and one row and colour per guard that fired.

Times are candle open times, like the candles' index.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atb_strategies.backtest.chart_data import (
    ERROR_WINDOW,
    ChartData,
    chart_data,
    prediction_limits,
    threshold_label,
)
from atb_strategies.backtest.runner import BacktestResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colour of each state of the timeline (guards not listed get the next of ``_SPARE``).
STATE_COLORS = {
    "long position": "tab:green",
    "short position": "tab:red",
    "in-sample": "tab:orange",
    "no prediction (gap)": "0.35",
    "no prediction (warm-up)": "0.7",
    "no prediction (model output rejected)": "crimson",
    "model-age guard fired": "tab:purple",
    "drift guard fired": "tab:brown",
    "sentiment staleness fired": "tab:pink",
}
_SPARE = ("tab:olive", "tab:cyan", "navy", "gold")
#: Timeline rows: label on the axis -> the states drawn in it.
_ROWS = {
    "position": ("long position", "short position"),
    "in-sample": ("in-sample",),
    "no prediction": (
        "no prediction (gap)",
        "no prediction (warm-up)",
        "no prediction (model output rejected)",
    ),
}
PREDICTED = "tab:orange"
#: Bars in the price panel's zoomed inset (long runs only).
ZOOM_BARS = 168
_SHORT_REASONS = {
    "warm_up": "warm-up",
    "gap": "rows span a gap",
    "non_finite_output": "NaN/inf model output",
    "implausible_output": "implausible model output",
    "model": "no predicted return",
}


def plot_backtest(
    result: BacktestResult,
    candles: pd.DataFrame,
    path: Path,
    predictions: pd.Series | None = None,
    title: str = "",
    max_markers: int = 60,
    markers: bool | None = None,
) -> Path:
    """Write the chart (see the module docstring) to ``path`` as a PNG.

    Parameters
    ----------
    result : BacktestResult
        From ``run_backtest``.
    candles : DataFrame
        The candles backtested (their ``close`` is drawn over the traded period).
    path : Path
        Where to write the PNG; parent directories are created.
    predictions : Series, optional
        Predicted close per decision bar (default ``result.predictions["predicted_price"]``).
    title : str
        First title line; default ``"<strategy> on <symbol> <timeframe>"``. The model key and
        the period are always added.
    max_markers : int
        With ``markers=None``: draw entry/exit markers when there are at most this many closed
        trades.
    markers : bool, optional
        Draw entry/exit markers (True) or not (False) whatever the number of trades.

    Returns
    -------
    Path
        ``path``.
    """
    fig = backtest_figure(
        result, candles, predictions, title=title, max_markers=max_markers, markers=markers
    )
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
    markers: bool | None = None,
) -> Figure:
    """The chart of ``plot_backtest`` as a matplotlib ``Figure`` (no pyplot, no backend).

    Parameters are those of ``plot_backtest``. The axes are, in order: price, prediction,
    strategy return, buy-and-hold return, drawdown, sentiment (when the candles carry it) and
    the timeline of states; each has a ``get_label()`` naming it (``"price"``, ...).
    """
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    data = chart_data(result, candles, predictions)
    rows = timeline_rows(data.states)
    names = ["price", "prediction", "strategy return", "buy & hold return", "drawdown"]
    heights = [3.0, 1.6, 1.6, 1.1, 0.9]
    if data.sentiment is not None:
        names.append("sentiment")
        heights.append(0.9)
    names.append("timeline")
    heights.append(0.25 * max(len(rows), 1) + 0.15)
    fig = Figure(figsize=(14, 2.2 + 1.15 * sum(heights)), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    ax = dict(zip(names, axes, strict=True))
    for name, one in ax.items():
        one.set_label(name)
        one.grid(axis="y", color="0.9", lw=0.6)

    show_markers = markers if markers is not None else len(result.trades) <= max_markers
    _price_panel(ax["price"], data, result, show_markers)
    _prediction_panel(ax["prediction"], data)
    _return_panels(ax["strategy return"], ax["buy & hold return"], data, result.summary)
    ax["drawdown"].fill_between(
        data.index, data.drawdown.to_numpy(), 0, color="tab:red", alpha=0.45, lw=0
    )
    ax["drawdown"].set_ylabel("drawdown %")
    if data.sentiment is not None:
        ax["sentiment"].plot(data.index, data.sentiment.to_numpy(), color="tab:cyan", lw=0.7)
        ax["sentiment"].set_ylabel("sentiment")
    _timeline(ax["timeline"], data, rows)
    for switch in result.summary.get("version_switches") or []:
        for one in axes[:3]:
            one.axvline(pd.Timestamp(switch["time"]), color="tab:purple", lw=0.7, ls="--")

    bottom = axes[-1]
    locator = AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    bottom.set_xlim(data.index[0], data.index[-1] + data.bar)
    fig.suptitle(chart_title(result.summary, title, data.index), fontsize=12)
    return fig


# ---------------------------------------------------------------- panels


def _price_panel(ax: Axes, data: ChartData, result: BacktestResult, show_markers: bool) -> None:
    pred, band = data.predicted_close, data.predicted_close_band
    ax.fill_between(
        data.index,
        (pred - band).to_numpy(),
        (pred + band).to_numpy(),
        color=PREDICTED,
        alpha=0.3,
        lw=0,
        label=f"prediction error band (RMS of {ERROR_WINDOW} bars)",
    )
    ax.plot(
        data.index,
        pred.to_numpy(),
        color=PREDICTED,
        lw=1.4,
        label=f"predicted close (made {_bars(data.horizon)} before)",
    )
    ax.plot(data.index, data.close.to_numpy(), color="black", lw=0.6, label="close")
    if show_markers:
        _markers(ax, data.orders)
    for i, gap in enumerate(result.summary.get("gaps") or []):
        ax.axvline(
            pd.Timestamp(gap["resumes"]),
            color="0.35",
            lw=0.6,
            ls=":",
            label="gap in the candles" if i == 0 else None,
        )
    ax.set_ylabel("price")
    corners = _quiet_corners(ax, data.close.to_numpy())
    ax.legend(loc=corners[1], fontsize=8, ncols=2, framealpha=0.85)
    ax.set_title(_price_note(result, show_markers), fontsize=9, loc="left")
    if len(data.index) > 4 * ZOOM_BARS:
        _zoom_inset(ax, data, corners[0], show_markers)


def _zoom_inset(ax: Axes, data: ChartData, corner: str, show_markers: bool) -> None:
    """The last ``ZOOM_BARS`` bars at full size, where close and prediction can be told apart."""
    x0, y0 = _CORNERS[corner][0] + 0.01, _CORNERS[corner][2] + 0.06
    inset = ax.inset_axes((x0, y0, 0.33, 0.38), zorder=10)
    part = slice(len(data.index) - ZOOM_BARS, None)
    index = data.index[part]
    pred, band = data.predicted_close.iloc[part], data.predicted_close_band.iloc[part]
    inset.fill_between(index, pred - band, pred + band, color=PREDICTED, alpha=0.3, lw=0)
    inset.plot(index, pred.to_numpy(), color=PREDICTED, lw=1.2)
    inset.plot(index, data.close.iloc[part].to_numpy(), color="black", lw=0.8)
    if show_markers:
        orders = data.orders
        _markers(inset, orders[orders["time"] >= index[0]] if len(orders) else orders)
    inset.text(0.02, 0.92, f"last {ZOOM_BARS} bars", fontsize=7, transform=inset.transAxes)
    inset.tick_params(labelsize=6)
    inset.yaxis.tick_right()
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(maxticks=5)
    inset.xaxis.set_major_locator(locator)
    inset.xaxis.set_major_formatter(ConciseDateFormatter(locator, show_offset=False))
    ax.indicate_inset_zoom(inset, edgecolor="0.4")


_CORNERS = {
    "upper left": (0.0, 0.36, 0.52, 1.0),
    "lower right": (0.62, 1.0, 0.0, 0.48),
    "lower left": (0.0, 0.36, 0.0, 0.48),
    "upper right": (0.62, 1.0, 0.52, 1.0),
}


def _quiet_corners(ax: Axes, values: np.ndarray) -> list[str]:
    """The corners of ``ax`` ordered from the one the line (values over evenly spread times, on
    the current y limits) passes least through to the one it passes most."""
    lo, hi = ax.get_ylim()
    counts = dict.fromkeys(_CORNERS, 0)
    if len(values) and hi > lo:
        x = np.linspace(0.0, 1.0, len(values))
        y = (values - lo) / (hi - lo)
        for name, (x0, x1, y0, y1) in _CORNERS.items():
            counts[name] = int(np.count_nonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)))
    return sorted(_CORNERS, key=lambda name: counts[name])  # stable: ties keep the order


def _prediction_panel(ax: Axes, data: ChartData) -> None:
    ret, band = data.predicted_return, data.error_band
    ax.fill_between(
        data.index,
        (ret - band).to_numpy(),
        (ret + band).to_numpy(),
        color=PREDICTED,
        alpha=0.25,
        lw=0,
        label="error band (RMS of realised - predicted)",
    )
    ax.plot(data.index, ret.to_numpy(), color=PREDICTED, lw=0.6, label="predicted return")
    styles = {"long": ("tab:green", "--"), "short": ("tab:red", "--"), "exit": ("0.3", ":")}
    limits = prediction_limits(data)
    for label, level in data.thresholds.items():
        color, ls = styles.get(label.split()[0], ("0.3", ":"))
        shown = min(max(level, limits[0]), limits[1])  # off the scale: at the edge
        text = threshold_label(label, level, limits)
        ax.axhline(shown, color=color, lw=1.2, ls=ls, label=text, zorder=5)
    ax.set_ylim(*limits)
    ax.set_ylabel("predicted\nreturn %")
    ax.legend(loc="upper left", fontsize=8, ncols=4, framealpha=0.85)
    ax.set_title(
        f"predicted return over the next {_bars(data.horizon)} at each bar's close",
        fontsize=9,
        loc="left",
    )


def _return_panels(ax_s: Axes, ax_h: Axes, data: ChartData, summary: dict[str, Any]) -> None:
    share = 100 * data.invested_fraction
    ax_s.axhline(0, color="0.5", lw=0.6)
    ax_s.plot(
        data.index,
        data.hold_scaled_return.to_numpy(),
        color="0.45",
        lw=0.8,
        ls="--",
        label=f"buy & hold of {share:.2g} % of the capital (the strategy's average invested)",
    )
    ax_s.plot(
        data.index, data.strategy_return.to_numpy(), color="tab:blue", lw=1.2, label="strategy"
    )
    ax_s.set_ylabel("return %")
    ax_s.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax_s.set_title(_return_note(summary, data), fontsize=9, loc="left")

    ax_h.axhline(0, color="0.5", lw=0.6)
    ax_h.plot(data.index, data.hold_return.to_numpy(), color="0.25", lw=0.8, label="buy & hold")
    ax_h.set_ylabel("buy & hold\nreturn %")
    ax_h.legend(loc="upper left", fontsize=8, framealpha=0.85)
    ax_h.set_title(
        f"buy & hold of all the capital: {data.hold_return.iloc[-1]:+.2f} %",
        fontsize=9,
        loc="left",
    )


def timeline_rows(states: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Row label -> the states (present) drawn in it; every guard gets a row of its own."""
    rows: dict[str, list[str]] = {}
    grouped = {s for members in _ROWS.values() for s in members}
    for row, members in _ROWS.items():
        present = [s for s in members if s in states]
        if present:
            rows[row] = present
    for state in states:
        if state not in grouped:
            rows[state.removesuffix(" fired")] = [state]
    return rows


def _timeline(ax: Axes, data: ChartData, rows: dict[str, list[str]]) -> None:
    """One labelled row per entry of ``rows``, top to bottom, each state in its colour."""
    spare = iter(_SPARE)
    edges = data.index.append(pd.DatetimeIndex([data.index[-1] + data.bar]))
    for i, members in enumerate(rows.values()):
        y = len(rows) - 1 - i
        for state in members:
            color = STATE_COLORS.get(state) or next(spare, "black")
            spans = _runs(edges, data.states[state])
            hatch = "////" if state == "in-sample" else None
            ax.broken_barh(
                spans,
                (y + 0.15, 0.7),
                facecolors="none" if hatch else color,
                edgecolors=color if hatch else "none",
                hatch=hatch,
                lw=0 if not hatch else 0.0,
                label=f"{state} ({int(data.states[state].sum()):,} bars)",
            )
    ax.set_ylim(0, max(len(rows), 1))
    ax.set_yticks([len(rows) - 0.5 - i for i in range(len(rows))], list(rows), fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.grid(False)
    if rows:
        ax.legend(
            loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, borderaxespad=0
        )


def _runs(edges: pd.DatetimeIndex, mask: np.ndarray) -> list[tuple[float, float]]:
    """(start, width) in matplotlib date numbers of each run of bars where ``mask`` is true,
    each bar from its open time to the next bar's (``edges`` has one more time than ``mask``)."""
    from matplotlib.dates import date2num

    x = date2num(edges)
    step = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(step == 1), np.flatnonzero(step == -1)
    return list(zip(x[starts], x[ends] - x[starts], strict=True))


def _markers(ax: Axes, orders: pd.DataFrame) -> None:
    """Entry and exit markers at the open time of the bar each order was filled in."""
    if not len(orders):
        return
    entries = orders[orders["role"] == "entry"]
    exits = orders[orders["role"] != "entry"]
    style = {"s": 30, "zorder": 4, "edgecolors": "black", "linewidths": 0.4}
    ax.scatter(
        entries["time"], entries["price"], marker="^", color="tab:green", label="entry", **style
    )
    ax.scatter(exits["time"], exits["price"], marker="v", color="tab:red", label="exit", **style)


# ---------------------------------------------------------------- text


def _bars(n: int) -> str:
    return f"{n} bar{'s' if n != 1 else ''}"


def chart_title(summary: dict[str, Any], title: str, index: pd.DatetimeIndex) -> str:
    first = title or (
        f"{summary.get('strategy', 'Strategy')} on {summary.get('symbol', '')} "
        f"{summary.get('timeframe', '')}".strip()
    )
    key = summary.get("model_key")
    model = f"model {key}   " if key and key not in first else ""
    period = f"{index[0]:%Y-%m-%d %H:%M} to {index[-1]:%Y-%m-%d %H:%M} ({len(index):,} bars)"
    return f"{first}\n{model}{period}"


def _price_note(result: BacktestResult, show_markers: bool) -> str:
    s = result.summary
    trades = len(result.trades)
    parts = [
        f"{trades:,} closed trades"
        + (" (markers)" if show_markers else " (positions in the timeline; --markers to mark)"),
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


def _return_note(s: dict[str, Any], data: ChartData) -> str:
    def pct(key: str) -> str:
        value = s.get(key)
        return "n/a" if value is None else f"{value * 100:+.2f} %"

    win = s.get("win_rate")
    return (
        f"strategy {pct('total_return')}   buy & hold at the same invested share "
        f"{data.hold_scaled_return.iloc[-1]:+.2f} %   max drawdown {s['max_drawdown'] * 100:.2f} %"
        f"   win rate {'n/a' if win is None else f'{win * 100:.1f} %'}"
    )
