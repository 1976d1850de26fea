"""The sweep's ``report.html``: one interactive, self-contained page (bokeh, inlined).

* the one-line overfitting verdict, the in-sample note and the ranking's warnings;
* every cell as a sortable table (``DataTable``: click a header to sort);
* a heatmap of the ranking metric per pair of varied parameters (one row when one varies), on
  the colour rule of the static heatmaps (``report.colour_scale``: returns and Sharpe-like
  ratios diverge from 0, green gains and red losses, equally strong for equal size). With more
  than two varied parameters, or several symbols or versions, a square shows the best cell
  over the others (hover names it and says over how many cells); the best cell is outlined.
  Hovering over a square shows every metric of its cell. With ``--screen`` the heatmaps show
  every screened cell (the screen's numbers) and the table the backtested ones;
* the overfitting block (deflated Sharpe, PBO, SPA / StepM), the ``--walk-forward`` selection
  (each fold's chosen cell) and the ``--screen`` agreement (Spearman, per-cell return
  differences) when present.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atb_strategies.backtest.html_common import (
    data_table,
    heading,
    text_block,
    texts,
    write_page,
)
from atb_strategies.sweep.grid import varying
from atb_strategies.sweep.metrics import METRICS, RANK_METRICS
from atb_strategies.sweep.report import (
    PERCENT_METRICS,
    check_rank_by,
    colour_scale,
    format_metric,
    in_sample_note,
    param_column,
    rank_cells,
)

if TYPE_CHECKING:
    from bokeh.plotting import figure as Figure

#: Metrics of a cell, in the table's and the hover's order.
METRIC_COLUMNS = (*METRICS, "dsr")  # the deflated Sharpe ratio beside results.csv's metrics
_TITLES = {
    "total_return": "total return",
    "max_drawdown": "max drawdown",
    "win_rate": "win rate",
    "fees_paid": "fees paid",
    "dsr": "deflated Sharpe",
    "beats_benchmark": "beats benchmark",
    "in_sample_bars": "in-sample bars",
}
_MAX_HEATMAPS = 15  # pairs drawn at most (6 varied params)


def write_sweep_html(
    results: pd.DataFrame,
    grid: Mapping[str, Sequence[Any]],
    path: Path,
    *,
    rank_by: str | None = None,
    screen: pd.DataFrame | None = None,
    title: str = "",
) -> Path:
    """Write ``report.html`` (see the module docstring) to ``path``; returns ``path``.

    Parameters
    ----------
    results : DataFrame
        From ``run_sweep`` (its ``attrs`` hold the audit), or ``results.csv`` read back.
    grid : mapping
        The swept grid (names -> values), as given to ``run_sweep``.
    rank_by : str, optional
        The ranking metric [``results.attrs["rank_by"]``, else ``"sharpe"``].
    screen : DataFrame, optional
        Every screened cell (``screen.csv``) when the sweep ran with ``screen``.
    title : str
        The page's first line.
    """
    layout, page_title = sweep_layout(results, grid, rank_by=rank_by, screen=screen, title=title)
    return write_page(layout, path, page_title)


def sweep_layout(
    results: pd.DataFrame,
    grid: Mapping[str, Sequence[Any]],
    *,
    rank_by: str | None = None,
    screen: pd.DataFrame | None = None,
    title: str = "",
) -> tuple[Any, str]:
    """The bokeh layout of the page and its title."""
    from bokeh.layouts import column

    rank_by = check_rank_by(rank_by or results.attrs.get("rank_by") or "sharpe")
    a = results.attrs
    stats = a.get("overfitting") or {}
    page_title = title or f"Sweep: {len(results)} cells ranked by {rank_by}"
    failed = int(results["error"].notna().sum()) if "error" in results else 0
    lines = [
        f"{len(results)} cells, {failed} failed, ranked by {rank_by} "
        f"({'higher' if RANK_METRICS[rank_by] else 'lower'} is better)."
        + (f" Screened first: {len(screen)} cells." if screen is not None else ""),
        f"verdict: {stats['verdict']}" if stats.get("verdict") else "",
        f"no overfitting statistics: {stats['error']}" if stats.get("error") else "",
        in_sample_note(results) or "",
        *(f"warning: {w}" for w in a.get("warnings", [])),
        "Hover a square for its cell's metrics; click a table header to sort.",
    ]
    parts: list[Any] = [heading(page_title, *lines)]
    source = screen if screen is not None else results
    maps = heatmaps(source, grid, rank_by, screened=screen is not None)
    if maps is not None:
        parts.append(maps)
    parts.append(text_block(f"Every backtested cell ({len(results)})", []))
    parts.append(cell_table(results, grid, rank_by, name="cells"))
    if stats and not stats.get("error"):
        parts.append(text_block("Is the best cell luck?", overfitting_lines(stats)))
    wf = a.get("walk_forward")
    if wf and "error" not in wf:
        parts += _walk_forward_parts(wf, results, grid)
    elif wf:
        parts.append(text_block("Walk-forward selection", [f"failed: {wf['error']}"]))
    if a.get("screen"):
        parts += _screen_parts(a["screen"])
    if screen is not None:
        parts.append(text_block(f"Every screened cell ({len(screen)}; the screen's numbers)", []))
        parts.append(cell_table(screen, grid, rank_by, name="screened"))
    return column(*parts), page_title


# ---------------------------------------------------------------- table


def cell_table(
    frame: pd.DataFrame, grid: Mapping[str, Sequence[Any]], rank_by: str, *, name: str
) -> Any:
    """Every cell as a sortable table, best first (then the unranked cells in cell order):
    rank, params, symbol and version (when several), metrics, in-sample bars, error, id."""
    ranks = dict(zip(*_ranks(frame, rank_by), strict=True))
    order = sorted(range(len(frame)), key=lambda i: ranks.get(frame["cell"].iloc[i], math.inf))
    frame = frame.iloc[order]
    rows: dict[str, list[Any]] = {
        "rank": [ranks.get(c, math.nan) for c in frame["cell"]],
    }
    titles = {"rank": f"rank ({rank_by})"}
    formats = {"rank": "0"}
    for param in grid:
        column = param_column(param)
        values = frame[column].tolist()
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        rows[column] = values if numeric else [str(v) for v in values]
        titles[column] = param
    for column in ("symbol", "version"):
        if column in frame and frame[column].nunique(dropna=False) > 1:
            rows[column] = texts(frame[column], "-")
            titles[column] = column
    for metric in (*METRIC_COLUMNS, "in_sample_bars", "bars"):
        if metric in frame:
            rows[metric] = pd.to_numeric(frame[metric], errors="coerce").astype(float).tolist()
            titles[metric] = _TITLES.get(metric, metric)
            formats[metric] = _numbro(metric)
    if "beats_benchmark" in frame and frame["beats_benchmark"].notna().any():
        rows["beats_benchmark"] = [_yes(v) for v in frame["beats_benchmark"]]
        titles["beats_benchmark"] = _TITLES["beats_benchmark"]
    if "error" in frame and frame["error"].notna().any():
        rows["error"] = texts(frame["error"], "")
        titles["error"] = "error"
    rows["cell"] = frame["cell"].astype(str).tolist()
    titles["cell"] = "cell"
    widths = {"cell": 170, "error": 300, "rank": 80}
    widths.update({param_column(p): max(80, 8 * len(p)) for p in grid})
    widths.update({k: 100 for k in ("max_drawdown", "dsr", "in_sample_bars", "beats_benchmark")})
    return data_table(
        rows,
        titles,
        formats=formats,
        widths=widths,
        height=min(600, 30 + 25 * len(frame)),
        name=name,
    )


def _ranks(frame: pd.DataFrame, rank_by: str) -> tuple[list[str], list[int]]:
    ranked = rank_cells(frame, rank_by) if rank_by in frame else frame.iloc[:0]
    return ranked["cell"].astype(str).tolist(), ranked.get("rank", pd.Series()).tolist()


def _numbro(metric: str) -> str:
    if metric in PERCENT_METRICS:
        return "0.00%"
    if metric in ("trades", "in_sample_bars", "bars"):
        return "0,0"
    if metric == "dsr":
        return "0.000"
    return "0.00"


def _yes(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return "yes" if value.strip().lower() == "true" else "no"
    return "yes" if bool(value) else "no"


# ---------------------------------------------------------------- heatmaps


def heatmap_pairs(grid: Mapping[str, Sequence[Any]]) -> list[tuple[str | None, str]]:
    """(down, across) of every heatmap: each pair of varied params in grid order (one row,
    ``(None, name)``, when one param varies; none when none does)."""
    names = varying(grid)
    if len(names) == 1:
        return [(None, names[0])]
    return list(itertools.combinations(names, 2))[:_MAX_HEATMAPS]


def heatmap_cells(
    frame: pd.DataFrame,
    grid: Mapping[str, Sequence[Any]],
    rank_by: str,
    down: str | None,
    across: str,
) -> pd.DataFrame:
    """One row per square of the heatmap of ``down`` x ``across``: the best cell by
    ``rank_by`` among the cells with those two values (all of them failed or without a value:
    the first of them, its value NaN), with ``x``, ``y`` (the values as text), ``value`` and
    ``cells`` (how many cells the square stands for)."""
    higher = RANK_METRICS[rank_by]
    value = pd.to_numeric(frame[rank_by], errors="coerce")
    if "error" in frame:
        value = value.where(frame["error"].isna())
    work = frame.assign(
        value=value,
        x=frame[param_column(across)].map(value_label),
        y=frame[param_column(down)].map(value_label) if down else "",
    )
    rows = []
    for _, group in work.groupby(["y", "x"], sort=False):
        finite = group["value"].dropna()
        at = group.index[0]  # every cell of the square failed: the first, its value NaN
        if len(finite):
            at = finite.idxmax() if higher else finite.idxmin()
        rows.append(group.loc[at].to_dict() | {"cells": len(group)})
    return pd.DataFrame(rows)


def value_label(value: Any) -> str:
    """A grid value as an axis label; ``none`` (None, or NaN once read back from a CSV) is
    "None"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    return str(value)


def heatmaps(
    frame: pd.DataFrame, grid: Mapping[str, Sequence[Any]], rank_by: str, *, screened: bool
) -> Any:
    """The heatmaps in a grid of plots, one colour scale over every cell; None when no param
    varies."""
    from bokeh.layouts import gridplot

    pairs = heatmap_pairs(grid)
    if not pairs:
        return None
    values = pd.to_numeric(frame[rank_by], errors="coerce")
    if "error" in frame:
        values = values.where(frame["error"].isna())
    finite = values.to_numpy(float)
    finite = finite[np.isfinite(finite)]
    cmap, norm, reading = colour_scale(rank_by, finite)
    best = None
    if len(finite):
        best = frame.loc[values.idxmax() if RANK_METRICS[rank_by] else values.idxmin(), "cell"]
    figs = [
        _heatmap(frame, grid, rank_by, down, across, cmap, norm, best, screened)
        for down, across in pairs
    ]
    figs[-1].add_layout(_colour_bar(cmap, norm, f"{rank_by}: {reading}", rank_by), "below")
    figs[-1].height += 90
    cols = 1 if len(figs) == 1 else 2 if len(figs) <= 4 else 3
    return gridplot(figs, ncols=cols, toolbar_location=None)


def _heatmap(
    frame: pd.DataFrame,
    grid: Mapping[str, Sequence[Any]],
    rank_by: str,
    down: str | None,
    across: str,
    cmap: Any,
    norm: Any,
    best: Any,
    screened: bool,
) -> Figure:
    from bokeh.models import ColumnDataSource, HoverTool, Title
    from bokeh.plotting import figure
    from matplotlib.colors import to_hex

    squares = heatmap_cells(frame, grid, rank_by, down, across)
    xs = [value_label(v) for v in grid[across]]
    ys = [value_label(v) for v in grid[down]] if down else [""]
    colours, labels, inks = [], [], []
    for v in squares["value"]:
        if np.isfinite(v):
            r, g, b, _ = cmap(norm(v))
            colours.append(to_hex((r, g, b)))
            inks.append("white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
        else:
            colours.append("lightgrey")
            inks.append("black")
        labels.append(format_metric(rank_by, v))
    data = {
        "x": squares["x"].tolist(),
        "y": squares["y"].tolist(),
        "colour": colours,
        "text": labels,
        "ink": inks,
        "cells": squares["cells"].tolist(),
        "cell": squares["cell"].astype(str).tolist(),
        "params": [_params(row, grid) for _, row in squares.iterrows()],
    }
    for metric in METRIC_COLUMNS:
        if metric in squares:
            data[metric] = [format_metric(metric, v) for v in squares[metric]]
    if "in_sample_bars" in squares:
        data["in_sample_bars"] = [_count(v) for v in squares["in_sample_bars"]]
    data["error"] = texts(squares["error"] if "error" in squares else [None] * len(squares))
    source = ColumnDataSource(data)
    others = len(frame) // max(1, len(xs) * len(ys))
    what = "the screen's numbers" if screened else "backtests"
    note = f"best of {others} cells per square; {what}" if others > 1 else what
    fig = figure(
        x_range=xs,
        y_range=ys[::-1],
        width=max(420, 75 * len(xs) + 130),
        height=max(200, 45 * len(ys) + 120),
        title=f"{rank_by}: {down} x {across}" if down else f"{rank_by}: {across}",
        tools="save",
        toolbar_location=None,
        name="heatmap",
    )
    fig.add_layout(Title(text=f"({note})", text_font_size="8pt", text_font_style="normal"), "above")
    squares_r = fig.rect(
        "x", "y", 1, 1, source=source, fill_color="colour", line_color="white", line_width=1
    )
    fig.text(
        "x",
        "y",
        text="text",
        source=source,
        text_color="ink",
        text_align="center",
        text_baseline="middle",
        text_font_size="9pt",
    )
    at = [i for i, c in enumerate(data["cell"]) if c == best]
    if at:
        i = at[0]
        fig.rect(
            [data["x"][i]], [data["y"][i]], 1, 1, fill_alpha=0, line_color="black", line_width=3
        )
    tips = [("cell", "@cell"), ("params", "@params"), ("cells in square", "@cells")]
    tips += [(_TITLES.get(m, m), f"@{m}") for m in (*METRIC_COLUMNS, "in_sample_bars") if m in data]
    tips.append(("error", "@error"))
    fig.add_tools(HoverTool(renderers=[squares_r], tooltips=tips))
    fig.xaxis.axis_label = across
    fig.yaxis.axis_label = down or ""
    fig.grid.visible = False
    fig.axis.major_tick_line_color = None
    return fig


def _count(value: Any) -> str:
    number = pd.to_numeric(value, errors="coerce")
    return "-" if pd.isna(number) else f"{int(number):,}"


def _params(row: pd.Series, grid: Mapping[str, Sequence[Any]]) -> str:
    out = [f"{name}={row[param_column(name)]}" for name in grid]
    for column in ("symbol", "version"):
        if column in row and isinstance(row[column], str):
            out.append(row[column])
    return ", ".join(out)


def _colour_bar(cmap: Any, norm: Any, label: str, rank_by: str) -> Any:
    """The colour bar of the matplotlib colormap and norm (256 steps, the same colours)."""
    from bokeh.models import ColorBar, LinearColorMapper, NumeralTickFormatter
    from matplotlib.colors import to_hex

    mapper = LinearColorMapper(
        palette=[to_hex(cmap(i / 255)) for i in range(256)], low=norm.vmin, high=norm.vmax
    )
    bar = ColorBar(
        color_mapper=mapper,
        title=label,
        orientation="horizontal",
        height=14,
        width=300,
        title_text_font_size="9pt",
        name="colour_bar",
    )
    if rank_by in PERCENT_METRICS:
        bar.formatter = NumeralTickFormatter(format="0.0%")
    return bar


# ---------------------------------------------------------------- audit blocks


def overfitting_lines(stats: Mapping[str, Any]) -> list[str]:
    """The overfitting statistics, one per line, and the verdict."""

    def num(key: str, spec: str) -> str:
        value = stats.get(key)
        return "-" if value is None else format(value, spec)

    beat = stats.get("beat_benchmark") or []
    return [
        f"deflated Sharpe ratio of the best cell: {num('deflated_sharpe', '.3f')} over "
        f"{stats.get('trials', '-')} trials (survives at >= 0.95; per-bar Sharpe "
        f"{num('sharpe', '.4f')}, expected maximum of the trials "
        f"{num('expected_max_sharpe', '.4f')})",
        f"probability of backtest overfitting (CSCV, {stats.get('pbo_blocks', '-')} blocks, "
        f"{stats.get('pbo_splits', '-')} splits): {num('pbo', '.2f')}",
        f"Hansen's SPA p-value against buy-and-hold scaled to each cell's exposure: "
        f"{num('spa_pvalue', '.3f')} (survives at < 0.05)"
        + (f"; {stats['spa_reason']}" if stats.get("spa_reason") else ""),
        f"StepM: {len(beat)} cell(s) beat that benchmark"
        + (f" ({', '.join(map(str, beat[:10]))})" if beat else ""),
        f"verdict: {stats.get('verdict', '-')}",
    ]


def _walk_forward_parts(
    wf: Mapping[str, Any], results: pd.DataFrame, grid: Mapping[str, Sequence[Any]]
) -> list[Any]:
    from atb_strategies.sweep.walkforward import format_walk_forward

    params = {str(row["cell"]): _params(row, grid) for _, row in results.iterrows()}
    folds = wf.get("folds") or []
    rows = {
        "fold": list(range(len(folds))),
        "train": [f"{f['train_from'][:16]} .. {f['train_to'][:16]}" for f in folds],
        "test": [f"{f['test_from'][:16]} .. {f['test_to'][:16]}" for f in folds],
        "chosen": [str(f["chosen"]) for f in folds],
        "params": [params.get(str(f["chosen"]), "") for f in folds],
        "train_score": [float(f["train_score"]) for f in folds],
        "test_return": [float(f["test_return"]) for f in folds],
    }
    titles = {
        "fold": "fold",
        "train": "train bars",
        "test": "test bars",
        "chosen": "chosen cell",
        "params": "its params",
        "train_score": f"train {wf.get('rank_by', '')}",
        "test_return": "test return",
    }
    widths = {"fold": 45, "train": 250, "test": 250, "chosen": 170, "params": 330}
    formats = {"train_score": "0.000", "test_return": "+0.00%"}
    return [
        text_block("Walk-forward selection", format_walk_forward(dict(wf)).splitlines()),
        data_table(rows, titles, formats=formats, widths=widths, name="walk_forward"),
    ]


def _screen_parts(block: Mapping[str, Any]) -> list[Any]:
    from atb_strategies.sweep.screen import format_screen

    lines = format_screen(block).splitlines()
    per_cell = block.get("per_cell") or []
    if not per_cell:
        return [text_block("Screen against backtrader", lines)]
    keys = ["cell", "screen_return", "backtest_return", "return_difference"]
    keys += ["screen_trades", "backtest_trades"]
    rows = {k: [r.get(k) for r in per_cell] for k in keys}
    rows["return_difference"] = [
        "-" if v is None else f"{v:+.2e}" for v in rows["return_difference"]
    ]  # differences of 1e-14: numbro has no exponent format
    titles = {k: k.replace("_", " ") for k in keys}
    formats = {k: "+0.0000%" for k in keys[1:3]}
    formats.update({"screen_trades": "0", "backtest_trades": "0"})
    return [
        text_block("Screen against backtrader", lines[:1]),
        data_table(rows, titles, formats=formats, widths={"cell": 170}, name="screen"),
    ]
