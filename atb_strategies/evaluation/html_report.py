"""The walk-forward's ``report.html``: one interactive, self-contained page (bokeh, inlined).

On one linked time axis over every out-of-sample bar (nothing downsampled; the mouse wheel
zooms time, dragging pans): the realised and predicted close, the realised and predicted
return (each its own axis, their 0 levels aligned), the edge over the fixed baseline of each
fold with its 95 % CI and the pooled one across the whole period, and the point-in-time
(asof) backtest's equity against buy-and-hold scaled to its exposure when that backtest ran.
Every fold's first test bar is a dashed line labelled "fold N". Hovering over a bar shows its
time, fold, prediction, outcome and whether the direction was right. Below: the per-fold table
(sortable) and the pooled verdict.

The first seed is drawn (``oos["seed"]``), as in ``chart.png``; the table has every seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atb_strategies.backtest.html_common import (
    PREDICTED,
    WIDTH,
    autoscale_y,
    data_table,
    heading,
    legend,
    text_block,
    texts,
    time_figure,
    write_page,
)
from atb_strategies.evaluation.walkforward import WalkForwardResult

if TYPE_CHECKING:
    from bokeh.plotting import figure as Figure

_MAX_LABELS = 24  # fold labels drawn at most (every k-th beyond that; every line is drawn)


def write_walk_forward_html(
    result: WalkForwardResult,
    path: Path,
    *,
    equity: pd.DataFrame | None = None,
    backtest: dict[str, Any] | None = None,
    title: str = "",
) -> Path:
    """Write ``report.html`` (see the module docstring) to ``path``; returns ``path``.

    Parameters
    ----------
    result : WalkForwardResult
        From ``run_walk_forward``.
    equity, backtest : DataFrame, dict, optional
        The asof backtest's equity and summary (``asof_backtest``); without them the page has
        no equity panel.
    title : str
        The page's first line (market, model type, timeframe, data source).
    """
    layout, page_title = walk_forward_layout(result, equity=equity, backtest=backtest, title=title)
    return write_page(layout, path, page_title)


def walk_forward_layout(
    result: WalkForwardResult,
    *,
    equity: pd.DataFrame | None = None,
    backtest: dict[str, Any] | None = None,
    title: str = "",
) -> tuple[Any, str]:
    """The bokeh layout of the page and its title."""
    from bokeh.layouts import column, gridplot

    seed = result.oos.get("seed", 0)
    preds = result.predictions[result.predictions["seed"] == seed]
    page_title = title or f"walk-forward {result.walk_forward_id}"
    bars = bar_source(preds)
    price = _price(bars, result.config.horizon)
    panels = [price, _returns(bars, preds, price), _edge(result, preds, price)]
    if equity is not None and len(equity):
        panels += _equity(equity, price)
    starts = fold_starts(result, preds)
    for fig in panels:
        _fold_lines(fig, starts, labelled=fig is price)
    panels[-1].xaxis.visible = True
    grid = gridplot([[p] for p in panels], merge_tools=True, toolbar_location="right")
    seeds = sorted(result.predictions["seed"].unique()) if len(result.predictions) else []
    drawn = f" (seed {seed} drawn; the table has all {len(seeds)} seeds)" if len(seeds) > 1 else ""
    head = heading(
        page_title,
        f"walk-forward {result.walk_forward_id}: {len(result.folds)} folds, "
        f"{len(preds):,} out-of-sample bars{drawn}, embargo {result.embargo} bars",
        verdict_line(result.oos),
        *([backtest_line(backtest)] if backtest is not None else []),
        "Mouse wheel: zoom time; drag: pan; click a legend entry to hide it; hover a bar for "
        "its prediction. The table sorts by any column header.",
    )
    table = fold_table_widget(result, preds)
    notes = text_block(
        "How to read the folds table",
        [
            "edge = direction accuracy minus the fixed baseline (the sign of the fold's training "
            "drift, chosen before its test period), with its 95 % CI (block bootstrap).",
            "DM = Diebold-Mariano statistic of squared errors against last close (negative: "
            "the model's errors are smaller); p is one-sided.",
            "own test bars in training: test bars inside the fold's training window (0: the "
            "embargo held). Other folds' OOS bars in training: out-of-sample bars of earlier "
            "folds that this fold's model trained on (a backtest of that version over them "
            "would be in-sample).",
        ],
    )
    return column(head, grid, table, notes), page_title


# ---------------------------------------------------------------- data


def bar_source(preds: pd.DataFrame) -> Any:
    """One row per out-of-sample bar: its time, fold, closes and returns (%), hit."""
    from bokeh.models import ColumnDataSource

    predicted = preds["predicted"].to_numpy(float)
    actual = preds["actual"].to_numpy(float)
    close = preds["close"].to_numpy(float)
    hit = np.sign(predicted) == np.sign(actual)
    return ColumnDataSource(
        {
            "time": pd.DatetimeIndex(preds.index).to_numpy(),
            "fold": preds["fold"].to_numpy(int),
            "close": close,
            "predicted_close": close * np.exp(predicted),
            "realised_close": close * np.exp(actual),
            "predicted": 100 * predicted,
            "actual": 100 * actual,
            "hit": np.where(hit, "yes", "no"),
        }
    )


def fold_starts(result: WalkForwardResult, preds: pd.DataFrame) -> list[tuple[int, pd.Timestamp]]:
    """(fold number, its first out-of-sample bar) of every fold with predictions."""
    out = []
    for fold in result.folds:
        index = preds.index[preds["fold"] == fold.number]
        if len(index):
            out.append((fold.number, pd.Timestamp(index[0])))
    return out


def fold_rows(result: WalkForwardResult, preds: pd.DataFrame) -> pd.DataFrame:
    """``report.fold_table`` with the in-sample counts of each fold's model: its own test bars
    inside its training window, and the drawn seed's out-of-sample bars of other folds inside
    it."""
    from atb_strategies.evaluation.report import fold_table

    table = fold_table(result)
    times = pd.DatetimeIndex(preds.index)
    by_number = {f.number: f for f in result.folds}
    own, others = [], []
    for number in table["fold"]:
        fold = by_number[int(number)]
        first, last = result.at(fold.train_start), result.at(fold.train_end - 1)
        tested = (fold.test_start < fold.train_end) and (fold.test_end > fold.train_start)
        own.append(
            min(fold.train_end, fold.test_end) - max(fold.train_start, fold.test_start)
            if tested
            else 0
        )
        inside = (times >= first) & (times <= last) & (preds["fold"].to_numpy() != fold.number)
        others.append(int(inside.sum()))
    return table.assign(own_test_in_training=own, oos_in_training=others)


def fold_table_widget(result: WalkForwardResult, preds: pd.DataFrame) -> Any:
    """The sortable per-(fold, seed) table."""
    table = fold_rows(result, preds)

    def pct(column: str) -> list[float]:
        return [100 * float(v) if v is not None else math.nan for v in table[column]]

    rows = {
        "fold": table["fold"].astype(int).tolist(),
        "seed": table["seed"].astype(int).tolist(),
        "version": texts(table["version"], "-"),
        "test": [
            f"{a[:16]} .. {b[:16]}"
            for a, b in zip(table["test_start"], table["test_end"], strict=True)
        ],
        "bars": table["samples"].astype(int).tolist(),
        "accuracy": pct("direction_accuracy"),
        "fixed": pct("fixed_baseline"),
        "edge": pct("edge_vs_fixed"),
        "ci_low": pct("edge_vs_fixed_ci_low"),
        "ci_high": pct("edge_vs_fixed_ci_high"),
        "dm": table["dm_vs_last_close"].astype(float).tolist(),
        "dm_p": table["dm_pvalue_one_sided"].astype(float).tolist(),
        "gate": [_yes(v) for v in table["gate_passed"]],
        "own": table["own_test_in_training"].astype(int).tolist(),
        "others": table["oos_in_training"].astype(int).tolist(),
        "error": texts(table["error"], ""),
    }
    titles = {
        "fold": "fold",
        "seed": "seed",
        "version": "version",
        "test": "test bars (open times)",
        "bars": "bars",
        "accuracy": "direction %",
        "fixed": "fixed baseline %",
        "edge": "edge (points)",
        "ci_low": "95% CI low",
        "ci_high": "95% CI high",
        "dm": "DM vs last close",
        "dm_p": "DM p (one-sided)",
        "gate": "gate passed",
        "own": "own test in training",
        "others": "other folds' OOS in training",
    }
    if any(rows["error"]):
        titles["error"] = "error"
    formats = {k: "0.0" for k in ("accuracy", "fixed")}
    formats.update({k: "+0.0" for k in ("edge", "ci_low", "ci_high")})
    formats.update({"dm": "+0.00", "dm_p": "0.000", "bars": "0,0", "others": "0,0"})
    widths = {"fold": 40, "seed": 40, "version": 120, "test": 215, "bars": 55, "gate": 75}
    widths.update({k: 78 for k in ("accuracy", "fixed", "edge", "ci_low", "ci_high")})
    widths.update({"dm": 90, "dm_p": 90, "own": 120, "others": 145, "error": 300})
    return data_table(rows, titles, formats=formats, widths=widths, width=WIDTH, name="folds")


def verdict_line(oos: dict[str, Any]) -> str:
    """The pooled verdict with the numbers the gate reads."""
    lo, hi = oos.get("edge_vs_fixed_ci95") or (math.nan, math.nan)
    dm = oos.get("dm_vs_last_close") or {}
    verdict = "BEATS the baselines" if oos.get("beats_baselines") else "does NOT beat the baselines"
    return (
        f"verdict: {verdict}. Pooled out of sample: direction "
        f"{100 * oos['direction_accuracy']:.1f} % vs the fixed baseline "
        f"{100 * oos.get('fixed_baseline', math.nan):.1f} %, edge "
        f"{100 * oos.get('edge_vs_fixed', math.nan):+.1f} points (95 % CI {100 * lo:+.1f}.."
        f"{100 * hi:+.1f}); Diebold-Mariano vs last close {_num(dm.get('stat'), '+.2f')} "
        f"(one-sided p {_num(dm.get('pvalue_one_sided'), '.3g')}). Majority share (hindsight) "
        f"{100 * oos['majority_baseline']:.1f} %."
    )


def backtest_line(backtest: dict[str, Any]) -> str:
    """The asof backtest in one line: strategy, buy-and-hold scaled and whole, in-sample bars."""
    scaled = ((backtest.get("baselines") or {}).get("buy_and_hold_scaled") or {}).get(
        "total_return"
    )
    in_sample = (backtest.get("in_sample") or {}).get("in_sample_bars")
    return (
        f"asof backtest (each bar served by the newest fold trained before it): strategy "
        f"{_pct(backtest.get('total_return'))}, buy & hold scaled to its exposure "
        f"{_pct(scaled)}, buy & hold {_pct(backtest.get('buy_and_hold_return'))}; "
        f"{backtest.get('trades', 0)} closed trades; in-sample bars: "
        f"{'unknown' if in_sample is None else f'{in_sample:,}'}."
    )


def _yes(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "yes" if bool(value) else "no"


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    return format(float(value), spec)


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):+.2f} %"


# ---------------------------------------------------------------- panels


_TIPS = [
    ("bar (open)", "@time{%F %H:%M}"),
    ("fold", "@fold"),
    ("predicted return", "@predicted{+0.0000} %"),
    ("actual return", "@actual{+0.0000} %"),
    ("hit", "@hit"),
    ("close", "@close{0,0.00}"),
    ("predicted close", "@predicted_close{0,0.00}"),
    ("realised close", "@realised_close{0,0.00}"),
]


def _hover(renderer: Any) -> Any:
    from bokeh.models import HoverTool

    return HoverTool(
        renderers=[renderer], mode="vline", tooltips=_TIPS, formatters={"@time": "datetime"}
    )


def _price(bars: Any, horizon: int) -> Figure:
    from bokeh.models import NumeralTickFormatter

    fig = time_figure(
        340,
        "price",
        title=f"realised and predicted close {horizon} bar(s) after each out-of-sample bar "
        "(drawn at the bar the prediction was made at)",
    )
    fig.line(
        "time",
        "predicted_close",
        source=bars,
        color=PREDICTED,
        line_width=2,
        legend_label="predicted close (close x exp(predicted return))",
    )
    realised = fig.line(
        "time", "realised_close", source=bars, color="black", legend_label="realised close"
    )
    fig.add_tools(_hover(realised))
    autoscale_y(fig, bars, ["predicted_close", "realised_close"])
    legend(fig, "bottom_right")  # the fold labels are along the top
    fig.yaxis.formatter = NumeralTickFormatter(format="0,0")
    return fig


def _returns(bars: Any, preds: pd.DataFrame, price: Figure) -> Figure:
    """Realised return on the left axis, predicted on its own right axis; both axes are
    symmetric about 0, so their 0 levels are at the same height."""
    from bokeh.models import LinearAxis, Range1d

    def half(values: np.ndarray) -> float:
        finite = np.abs(values[np.isfinite(values)])
        return float(finite.max()) * 1.05 if len(finite) and finite.max() > 0 else 1.0

    actual, predicted = (100 * preds[c].to_numpy(float) for c in ("actual", "predicted"))
    a, p = half(actual), half(predicted)
    fig = time_figure(
        240,
        "realised return %",
        price.x_range,
        y_range=Range1d(-a, a),
        title="realised return (left axis) and predicted return (right axis, its own scale; "
        "both 0 levels at the middle)",
    )
    fig.extra_y_ranges = {"predicted": Range1d(-p, p)}
    fig.add_layout(LinearAxis(y_range_name="predicted", axis_label="predicted return %"), "right")
    realised = fig.line(
        "time", "actual", source=bars, color="#555555", line_width=0.8, legend_label="realised"
    )
    fig.line(
        "time",
        "predicted",
        source=bars,
        color=PREDICTED,
        line_width=1.2,
        y_range_name="predicted",
        legend_label="predicted (right axis)",
    )
    fig.add_tools(_hover(realised))
    legend(fig)
    return fig


def _edge(result: WalkForwardResult, preds: pd.DataFrame, price: Figure) -> Figure:
    """Each fold's edge over the fixed baseline with its 95 % CI (a box over its test bars),
    and the pooled edge with its 95 % CI as a band over the whole period."""
    from bokeh.models import ColumnDataSource, HoverTool, Range1d, Span

    fig = time_figure(
        240,
        "edge, percentage points",
        price.x_range,
        title="direction edge over the fixed baseline (training drift's sign): each fold and "
        "pooled, with 95 % CIs (block bootstrap)",
    )
    o = result.oos
    seed = o.get("seed", 0)
    lo, hi = o.get("edge_vs_fixed_ci95") or (math.nan, math.nan)
    start, end = pd.Timestamp(preds.index[0]), pd.Timestamp(preds.index[-1])
    fig.varea(
        x=[start, end],
        y1=[100 * lo] * 2,
        y2=[100 * hi] * 2,
        color="purple",
        alpha=0.12,
        legend_label=f"pooled edge, 95 % CI {100 * lo:+.1f}..{100 * hi:+.1f} points",
    )
    fig.line(
        [start, end],
        [100 * o.get("edge_vs_fixed", math.nan)] * 2,
        color="purple",
        line_width=2,
        legend_label=f"pooled edge {100 * o.get('edge_vs_fixed', math.nan):+.1f} points",
    )
    rows = [r for r in result.results if r.seed == seed and r.predictions is not None]
    spans: dict[str, list[Any]] = {
        k: [] for k in ("left", "right", "low", "high", "edge", "fold", "bars")
    }
    for r in rows:
        oos = r.metrics.get("oos") or {}
        ci = oos.get("edge_vs_fixed_ci95") or [math.nan, math.nan]
        index = preds.index[preds["fold"] == r.fold.number]
        if not len(index):
            continue
        spans["left"].append(pd.Timestamp(index[0]))
        spans["right"].append(pd.Timestamp(index[-1]))
        spans["low"].append(100 * _float(ci[0]))
        spans["high"].append(100 * _float(ci[1]))
        spans["edge"].append(100 * _float(oos.get("edge_vs_fixed")))
        spans["fold"].append(r.fold.number)
        spans["bars"].append(len(index))
    source = ColumnDataSource(spans)
    levels = [v for v in (100 * lo, 100 * hi, 0.0, *spans["low"], *spans["high"]) if np.isfinite(v)]
    low, high = min(levels), max(levels)
    # room above the data for the legend
    fig.y_range = Range1d(low - 0.1 * (high - low), high + 0.6 * (high - low) + 1e-9)
    boxes = fig.quad(
        left="left",
        right="right",
        bottom="low",
        top="high",
        source=source,
        fill_color="teal",
        fill_alpha=0.25,
        line_color="teal",
        legend_label="a fold's edge and its 95 % CI",
    )
    fig.segment(
        x0="left", x1="right", y0="edge", y1="edge", source=source, color="teal", line_width=2
    )
    fig.add_layout(Span(location=0, dimension="width", line_color="black", line_width=1))
    fig.add_tools(
        HoverTool(
            renderers=[boxes],
            tooltips=[
                ("fold", "@fold"),
                ("bars", "@bars"),
                ("edge", "@edge{+0.0} points"),
                ("95 % CI", "@low{+0.0} .. @high{+0.0}"),
            ],
        )
    )
    legend(fig)
    return fig


def _equity(equity: pd.DataFrame, price: Figure) -> list[Figure]:
    """The asof strategy against buy-and-hold scaled to its exposure (one axis, return %),
    and buy-and-hold of all the capital in its own panel."""
    from bokeh.models import ColumnDataSource, HoverTool

    returns = 100 * (equity / equity.iloc[0] - 1)
    names = list(returns.columns)
    data = {f"c{i}": returns[name].to_numpy(float) for i, name in enumerate(names)}
    source = ColumnDataSource({"time": pd.DatetimeIndex(returns.index).to_numpy(), **data})
    fig = time_figure(
        240,
        "return %",
        price.x_range,
        title="asof backtest: strategy vs buy & hold at its exposure",
    )
    full = "buy & hold"
    lines = []
    for i, name in enumerate(names):
        if name == full:
            continue
        first = i == 0
        lines.append(
            fig.line(
                "time",
                f"c{i}",
                source=source,
                color="#1f77b4" if first else "gray",
                line_width=2 if first else 1.2,
                line_dash="solid" if first else "dashed",
                legend_label=name,
            )
        )
    autoscale_y(fig, source, [f"c{i}" for i, name in enumerate(names) if name != full])
    tips = [("bar (open)", "@time{%F %H:%M}")]
    tips += [(name, f"@c{i}{{+0.00}} %") for i, name in enumerate(names)]
    fig.add_tools(
        HoverTool(
            renderers=lines[:1], mode="vline", tooltips=tips, formatters={"@time": "datetime"}
        )
    )
    legend(fig)
    panels = [fig]
    if full in names:
        hold = time_figure(
            160, "buy & hold %", price.x_range, title="buy & hold of all the capital"
        )
        hold.line(
            "time",
            f"c{names.index(full)}",
            source=source,
            color="#333333",
            legend_label="buy & hold",
        )
        autoscale_y(hold, source, [f"c{names.index(full)}"])
        legend(hold)
        panels.append(hold)
    return panels


def _fold_lines(fig: Figure, starts: list[tuple[int, pd.Timestamp]], *, labelled: bool) -> None:
    """A dashed line at each fold's first test bar; "fold N" above it on the first panel (at
    most ``_MAX_LABELS`` labels: every k-th fold beyond that)."""
    from bokeh.models import ColumnDataSource, LabelSet, Span

    for _, start in starts:
        fig.add_layout(
            Span(location=start, dimension="height", line_color="grey", line_dash="dashed")
        )
    if not labelled or not starts:
        return
    every = max(1, math.ceil(len(starts) / _MAX_LABELS))
    shown = starts[::every]
    fig.add_layout(
        LabelSet(
            x="x",
            y="y",
            text="text",
            y_units="screen",
            x_offset=3,
            text_font_size="8pt",
            text_color="#555555",
            source=ColumnDataSource(
                {
                    "x": [s for _, s in shown],
                    "y": [fig.height - 60] * len(shown),
                    "text": [f"fold {n}" for n, _ in shown],
                }
            ),
            name="fold_labels",
        )
    )


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
