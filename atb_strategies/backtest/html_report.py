"""``report.html``: the backtest as an interactive, self-contained page (bokeh).

The panels of the PNG chart (``backtest.chart``), on one linked time axis: pan and zoom (the
mouse wheel zooms time) over every bar; hovering over the price panel shows the bar's time,
close, predicted close and return, the decision made at its close (action, signal, reason) and
the orders filled in it; entries and exits are markers with their own hover (side, size, price,
role, the trade's exit reason). Every bar is in the page (nothing is downsampled), and bokeh's
JavaScript and CSS are inlined, so the file works offline and without a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atb_strategies.backtest.chart import STATE_COLORS, chart_title, timeline_rows
from atb_strategies.backtest.chart_data import (
    ERROR_WINDOW,
    ChartData,
    chart_data,
    prediction_limits,
    threshold_label,
)
from atb_strategies.backtest.html_common import (
    PREDICTED,
    WIDTH,
    autoscale_y,
    escape,
    legend,
    time_figure,
    write_page,
)
from atb_strategies.backtest.runner import BacktestResult

if TYPE_CHECKING:
    from bokeh.plotting import figure as Figure

_SPARE = ("olive", "darkcyan", "navy", "gold")


def write_html_report(
    result: BacktestResult,
    candles: pd.DataFrame,
    path: Path,
    *,
    title: str = "",
    max_markers: int = 60,
    markers: bool | None = None,
) -> Path:
    """Write ``report.html`` (see the module docstring) to ``path``.

    Parameters
    ----------
    result : BacktestResult
        From ``run_backtest``.
    candles : DataFrame
        The candles backtested.
    path : Path
        The HTML file to write; parent directories are created.
    title : str
        First title line, as in ``plot_backtest``.
    max_markers, markers
        Entry and exit markers start shown when ``markers`` is True, or None with at most
        ``max_markers`` closed trades; else hidden until their legend entry is clicked.

    Returns
    -------
    Path
        ``path``.
    """
    layout, heading = html_layout(
        result, candles, title=title, max_markers=max_markers, markers=markers
    )
    return write_page(layout, path, heading.splitlines()[0])


def html_layout(
    result: BacktestResult,
    candles: pd.DataFrame,
    *,
    title: str = "",
    max_markers: int = 60,
    markers: bool | None = None,
) -> Any:
    """The bokeh layout of ``report.html`` and its title text. Entry and exit markers start
    shown when ``markers`` is True, or None and there are at most ``max_markers`` trades;
    else hidden (a click on their legend entry shows them)."""
    from bokeh.layouts import column, gridplot
    from bokeh.models import Div

    data = chart_data(result, candles)
    heading = chart_title(result.summary, title, data.index)
    bars = _bar_source(data)
    shown = markers if markers is not None else len(result.trades) <= max_markers
    price = _price(data, bars, shown)
    panels = [
        price,
        _prediction(data, bars, price),
        _returns(data, bars, price),
        _hold(data, bars, price),
        _drawdown(data, bars, price),
    ]
    if data.sentiment is not None:
        panels.append(_line_panel(price, bars, "sentiment", "sentiment", "darkcyan", 140))
    rows = timeline_rows(data.states)
    if rows:
        panels.append(_timeline(data, rows, price))
    panels[-1].xaxis.visible = True
    first, *rest = heading.splitlines()
    div = Div(
        text=f"<h2 style='margin:4px 0'>{escape(first)}</h2>"
        f"<div>{escape(' '.join(rest))}</div><div style='color:#555'>{escape(_note(result))}"
        "</div>",
        width=WIDTH,
    )
    grid = gridplot([[p] for p in panels], merge_tools=True, toolbar_location="right")
    return column(div, grid), heading


# ---------------------------------------------------------------- data


def _bar_source(data: ChartData) -> Any:
    """One row per bar with everything hover shows (nothing downsampled)."""
    from bokeh.models import ColumnDataSource

    n = len(data.index)
    action = np.full(n, "", dtype=object)
    signal = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)
    if len(data.decisions):
        at = data.index.get_indexer(pd.DatetimeIndex(data.decisions["time"]))
        ok = at >= 0
        for column, out in (("action", action), ("signal", signal), ("reason", reason)):
            if column in data.decisions:
                values = data.decisions[column].fillna("").astype(str).to_numpy()
                out[at[ok]] = values[ok]
    orders = np.full(n, "", dtype=object)
    if len(data.orders):
        at = data.index.get_indexer(pd.DatetimeIndex(data.orders["time"]))
        for i, (_, order) in zip(at, data.orders.iterrows(), strict=True):
            if i >= 0:
                size, price = abs(order["size"]), order["price"]
                text = f"{order['side']} {size:.6g} @ {price:.2f} ({order['role']})"
                orders[i] = f"{orders[i]}; {text}" if orders[i] else text
    position = np.where(
        data.states.get("long position", np.zeros(n, bool)),
        "long",
        np.where(data.states.get("short position", np.zeros(n, bool)), "short", "flat"),
    )
    band = data.predicted_close_band
    return ColumnDataSource(
        {
            "time": data.index.to_numpy(),
            "close": data.close.to_numpy(float),
            "predicted_close": data.predicted_close.to_numpy(float),
            "band_lo": (data.predicted_close - band).to_numpy(float),
            "band_hi": (data.predicted_close + band).to_numpy(float),
            "predicted_return": data.predicted_return.to_numpy(float),
            "ret_lo": (data.predicted_return - data.error_band).to_numpy(float),
            "ret_hi": (data.predicted_return + data.error_band).to_numpy(float),
            "strategy": data.strategy_return.to_numpy(float),
            "hold_scaled": data.hold_scaled_return.to_numpy(float),
            "hold": data.hold_return.to_numpy(float),
            "drawdown": data.drawdown.to_numpy(float),
            "zero": np.zeros(n),
            "action": action,
            "signal": signal,
            "reason": reason,
            "orders": orders,
            "position": position,
            **({"sentiment": data.sentiment.to_numpy(float)} if data.sentiment is not None else {}),
        }
    )


# ---------------------------------------------------------------- panels


def _price(data: ChartData, bars: Any, markers: bool) -> Figure:
    from bokeh.models import HoverTool, NumeralTickFormatter

    fig = time_figure(380, "price", title="price and the model's predicted close")
    fig.varea(
        "time",
        "band_lo",
        "band_hi",
        source=bars,
        color=PREDICTED,
        alpha=0.3,
        legend_label=f"prediction error band (RMS of {ERROR_WINDOW} bars)",
    )
    fig.line(
        "time",
        "predicted_close",
        source=bars,
        color=PREDICTED,
        line_width=2,
        legend_label=f"predicted close (made {data.horizon} bar(s) before)",
    )
    close = fig.line("time", "close", source=bars, color="black", legend_label="close")
    fig.add_tools(
        HoverTool(
            renderers=[close],
            mode="vline",
            tooltips=[
                ("bar (open)", "@time{%F %H:%M}"),
                ("close", "@close{0,0.00}"),
                ("predicted close", "@predicted_close{0,0.00}"),
                ("predicted return", "@predicted_return{+0.000} %"),
                ("position", "@position"),
                ("decision", "@action (signal @signal)"),
                ("reason", "@reason"),
                ("orders", "@orders"),
            ],
            formatters={"@time": "datetime"},
        )
    )
    _order_markers(fig, data, markers)
    legend(fig)
    fig.yaxis.formatter = NumeralTickFormatter(format="0,0")
    autoscale_y(fig, bars, ["close", "band_lo", "band_hi"])  # a zoomed week fills the panel
    return fig


def _order_markers(fig: Figure, data: ChartData, visible: bool) -> None:
    """Entries (green triangles) and exits (red, pointing down) with their own hover; hidden
    unless ``visible`` (their legend entries show them)."""
    from bokeh.models import ColumnDataSource, HoverTool

    orders = data.orders
    if not len(orders):
        return
    renderers = []
    for is_entry, marker, color, label in (
        (True, "triangle", "green", "entry"),
        (False, "inverted_triangle", "red", "exit"),
    ):
        part = orders[(orders["role"] == "entry") == is_entry]
        if not len(part):
            continue
        source = ColumnDataSource(
            {
                "time": pd.DatetimeIndex(part["time"]).to_numpy(),
                "price": part["price"].to_numpy(float),
                "side": part["side"].astype(str).to_numpy(),
                "size": part["size"].abs().to_numpy(float),
                "role": part["role"].fillna("").astype(str).to_numpy(),
            }
        )
        renderers.append(
            fig.scatter(
                "time",
                "price",
                source=source,
                marker=marker,
                size=9,
                color=color,
                line_color="black",
                legend_label=label + ("" if visible else " (click to show)"),
                visible=visible,
            )
        )
    fig.add_tools(
        HoverTool(
            renderers=renderers,
            tooltips=[
                ("filled in bar", "@time{%F %H:%M}"),
                ("order", "@side @size{0.000000} @ @price{0,0.00}"),
                ("role", "@role"),
            ],
            formatters={"@time": "datetime"},
        )
    )


def _prediction(data: ChartData, bars: Any, price: Figure) -> Figure:
    from bokeh.models import Range1d, Span

    limits = prediction_limits(data)
    fig = time_figure(
        220,
        "predicted return %",
        price.x_range,
        y_range=Range1d(*limits),
        title=f"predicted return over the next {data.horizon} bar(s), with its error band",
    )
    fig.varea("time", "ret_lo", "ret_hi", source=bars, color=PREDICTED, alpha=0.25)
    fig.line(
        "time",
        "predicted_return",
        source=bars,
        color=PREDICTED,
        legend_label="predicted return",
    )
    colors = {"long": "green", "short": "red"}
    for label, level in data.thresholds.items():
        color = colors.get(label.split()[0], "gray")
        shown = min(max(level, limits[0]), limits[1])  # off the scale: at the edge
        fig.add_layout(
            Span(location=shown, dimension="width", line_color=color, line_dash="dashed")
        )
        text = threshold_label(label, level, limits)  # a legend entry for the span:
        fig.line([data.index[0]], [shown], color=color, line_dash="dashed", legend_label=text)
    legend(fig)
    return fig


def _returns(data: ChartData, bars: Any, price: Figure) -> Figure:
    fig = time_figure(
        220, "return %", price.x_range, title="strategy vs buy & hold at its exposure"
    )
    share = 100 * data.invested_fraction
    fig.line(
        "time",
        "hold_scaled",
        source=bars,
        color="gray",
        line_dash="dashed",
        legend_label=f"buy & hold of {share:.2g} % of the capital (the strategy's average)",
    )
    fig.line(
        "time", "strategy", source=bars, color="#1f77b4", line_width=2, legend_label="strategy"
    )
    legend(fig)
    autoscale_y(fig, bars, ["hold_scaled", "strategy"])
    return fig


def _hold(data: ChartData, bars: Any, price: Figure) -> Figure:
    fig = time_figure(160, "buy & hold %", price.x_range, title="buy & hold of all the capital")
    fig.line("time", "hold", source=bars, color="#333333", legend_label="buy & hold")
    legend(fig)
    autoscale_y(fig, bars, ["hold"])
    return fig


def _drawdown(data: ChartData, bars: Any, price: Figure) -> Figure:
    fig = time_figure(140, "drawdown %", price.x_range)
    fig.varea("time", "drawdown", "zero", source=bars, color="red", alpha=0.45)
    return fig


def _line_panel(price: Figure, bars: Any, column: str, label: str, color: str, height: int) -> Any:
    fig = time_figure(height, label, price.x_range)
    fig.line("time", column, source=bars, color=color)
    return fig


def _timeline(data: ChartData, rows: dict[str, list[str]], price: Figure) -> Figure:
    """One labelled row per state group; each state its colour and legend entry."""
    from matplotlib.colors import to_hex

    names = list(rows)[::-1]
    fig = time_figure(
        80 + 30 * len(names), "", price.x_range, y_range=names, title="states (bars by open time)"
    )
    spare = iter(_SPARE)
    edges = data.index.append(pd.DatetimeIndex([data.index[-1] + data.bar]))
    for row, members in rows.items():
        for state in members:
            mask = data.states[state]
            step = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
            starts, ends = np.flatnonzero(step == 1), np.flatnonzero(step == -1)
            color = STATE_COLORS.get(state)
            fig.hbar(
                y=[row] * len(starts),
                left=edges[starts].to_numpy(),
                right=edges[ends].to_numpy(),
                height=0.7,
                line_color=None,
                fill_color=to_hex(color) if color else next(spare, "black"),
                alpha=0.5 if state == "in-sample" else 0.9,
                legend_label=f"{state} ({int(mask.sum()):,} bars)",
            )
    legend(fig)
    box = fig.legend[0]
    box.orientation = "horizontal"
    fig.add_layout(box, "below")
    fig.height += 40
    return fig


def _note(result: BacktestResult) -> str:
    s = result.summary
    return (
        f"{len(result.trades):,} closed trades, exposure {100 * s['exposure']:.1f} %, "
        f"strategy {100 * s['total_return']:+.2f} %, buy & hold "
        f"{100 * (s.get('buy_and_hold_return') or 0):+.2f} %. Mouse wheel: zoom time; drag: "
        "pan; click a legend entry to hide it."
    )
