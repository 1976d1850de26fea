"""What a sweep says: cells ranked by a metric, the warnings a ranking needs, and a heatmap.

``results`` is the frame ``run_sweep`` returns (or ``results.csv`` read back): one row per
cell, in cell order, i.e. symbol by symbol, version by version, then every combination of the
grid with its last name varying fastest (``grid.expand_grid``). The heatmap relies on that
order to place the cells.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.sweep.grid import varying
from atb_strategies.sweep.metrics import RANK_METRICS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Metrics that are fractions, shown as percentages.
PERCENT_METRICS = {"total_return", "cagr", "max_drawdown", "win_rate", "exposure"}
_MAX_PANELS = 36


#: Results columns a grid param may not take as its own name (it gets ``param_<name>``).
RESERVED_COLUMNS = (
    "cell",
    "symbol",
    "version",
    "model_key",
    "bars",
    "in_sample_bars",
    "oos_from",
    "error",
    "rank",
    "dsr",
    "beats_benchmark",
    *RANK_METRICS,
)


def check_rank_by(rank_by: str) -> str:
    """``rank_by`` when it is a known metric.

    Raises
    ------
    ConfigurationError
        Otherwise, listing the metrics.
    """
    if rank_by not in RANK_METRICS:
        raise ConfigurationError(
            f"The 'rank_by' parameter must be one of {', '.join(RANK_METRICS)}. "
            f"Got {rank_by!r} instead."
        )
    return rank_by


def param_column(name: str) -> str:
    """The results column of grid param ``name`` (``param_<name>`` if it clashes with one of
    ``RESERVED_COLUMNS``)."""
    return f"param_{name}" if name in RESERVED_COLUMNS else name


def rank_cells(results: pd.DataFrame, rank_by: str) -> pd.DataFrame:
    """The cells without error that have a ``rank_by`` value, best first, with a ``rank``
    column (ties keep cell order)."""
    check_rank_by(rank_by)
    values = pd.to_numeric(results[rank_by], errors="coerce")
    ok = results["error"].isna() & values.notna()
    ranked = results[ok].assign(_key=values[ok])
    ranked = ranked.sort_values("_key", ascending=not RANK_METRICS[rank_by], kind="stable")
    ranked = ranked.drop(columns="_key")
    return ranked.assign(rank=range(1, len(ranked) + 1))


def format_metric(metric: str, value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "-"
    if metric in PERCENT_METRICS:
        return f"{100 * number:.1f}%"
    if metric == "trades":
        return f"{number:.0f}"
    return f"{number:.2f}"


def format_ranking(
    results: pd.DataFrame, grid: Mapping[str, Sequence[Any]], rank_by: str, top: int = 10
) -> str:
    """The ``top`` cells as a table: rank, the grid params, symbol and version (when several),
    the ranking metric, total return, Sharpe, max drawdown and trades."""
    ranked = rank_cells(results, rank_by)
    if ranked.empty:
        return f"No cell has a {rank_by} value to rank by."
    names = [param_column(n) for n in grid]
    shown = ["rank", *names]
    shown += [c for c in ("symbol", "version") if results[c].nunique(dropna=False) > 1]
    metrics = list(dict.fromkeys([rank_by, "total_return", "sharpe", "max_drawdown", "trades"]))
    if "dsr" in results and results["dsr"].notna().any():
        metrics.append("dsr")
    table = ranked.head(top)[shown + metrics].copy()
    for metric in metrics:
        table[metric] = [format_metric(metric, v) for v in table[metric]]
    return table.to_string(index=False)


def sweep_warnings(
    results: pd.DataFrame, grid: Mapping[str, Sequence[Any]], rank_by: str
) -> list[str]:
    """Warnings about a ranking: the best cell on the edge of the grid, an in-sample (or
    possibly in-sample) ranking, failed cells."""
    out: list[str] = []
    failed = results[results["error"].notna()]
    if len(failed):
        out.append(
            f"{len(failed)} of {len(results)} cells failed (first: {failed['error'].iloc[0]}); "
            "see the error column of results.csv."
        )
    ranked = rank_cells(results, rank_by)
    if ranked.empty:
        return out
    best = ranked.iloc[0]
    for name in varying(grid):
        values = list(grid[name])
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if not numeric or len(values) < 3:
            continue
        value = best[param_column(name)]
        if value in (min(values), max(values)):
            side = "smallest" if value == min(values) else "largest"
            out.append(
                f"The best cell by {rank_by} has {name}={value}, the {side} value tried: the "
                f"optimum may lie outside the grid; extend {name} beyond {value}."
            )
    out += _in_sample_warnings(ranked, best)
    return out


def _in_sample_warnings(ranked: pd.DataFrame, best: pd.Series) -> list[str]:
    bars = pd.to_numeric(ranked["in_sample_bars"], errors="coerce")
    n_best = bars.iloc[0]
    out = []
    if pd.isna(n_best) and best["model_key"]:  # no model: nothing to be in-sample about
        out.append(
            f"The training period of {best['model_key']} (the best cell's model) is unknown: "
            "the ranking may be in-sample (the model may have been trained on these bars)."
        )
    inside = bars[bars > 0]
    if inside.empty:
        return out
    others = (
        f"{len(inside)} of {len(ranked)} ranked cells include in-sample bars (up to "
        f"{int(inside.max())})"
    )
    if not n_best > 0:
        what = "has no in-sample bar" if n_best == 0 else "has an unknown training period"
        out.append(
            f"The ranking mixes in-sample and out-of-sample results: {others}; the best cell "
            f"{what}."
        )
        return out
    total = int(best["bars"]) if not pd.isna(best["bars"]) else 0
    share = f" ({100 * n_best / total:.0f} %)" if total else ""
    oos = best.get("oos_from")  # NaN when read back from results.csv without a value
    oos = oos if isinstance(oos, str) and oos else None
    out.append(
        f"The ranking is in-sample: {int(n_best)} of the best cell's {total} bars{share} are "
        f"inside the training period of {best['model_key']}, and {others}. Rank out of "
        f"sample with a start date at or after {oos or 'the end of that period'}."
    )
    return out


def plot_heatmap(
    results: pd.DataFrame,
    grid: Mapping[str, Sequence[Any]],
    rank_by: str,
    path: Path | str,
    *,
    source: str | None = None,
    in_sample_from: pd.DataFrame | None = None,
) -> Path | None:
    """Save ``heatmap_figure`` as a PNG at ``path``; None (nothing written) when no grid param
    varies."""
    fig = heatmap_figure(results, grid, rank_by, source=source, in_sample_from=in_sample_from)
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def heatmap_figure(
    results: pd.DataFrame,
    grid: Mapping[str, Sequence[Any]],
    rank_by: str,
    *,
    source: str | None = None,
    in_sample_from: pd.DataFrame | None = None,
) -> Figure | None:
    """A heatmap of ``rank_by`` over the grid (no pyplot); None when no grid param varies.

    ``results`` holds every cell of the grid in cell order (a screened sweep passes the
    screen's frame: its verified backtests are too few to fill a grid); ``source`` names where
    the numbers come from in the title, ``in_sample_from`` the frame whose in-sample bars the
    note reads (``results`` by default).

    Two varying params: one heatmap (first param down, second across); one param: a single
    row; more params, several symbols or versions: small multiples, one panel per combination
    of the others (at most 36 panels drawn), on one colour scale. Failed cells are grey; the
    best cell is outlined. Colours say good or bad, not rank (``colour_scale``): returns and
    Sharpe-like ratios diverge from 0 (green gains, red losses, equally strong for equal
    size), the win rate from 50 %; drawdown and fees run from 0 (white, best) to red; trades
    and exposure are neither good nor bad (a plain sequential map). The colour bar is labelled
    with that reading, and a ranking on bars the model was trained on carries an
    "in-sample" note.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    check_rank_by(rank_by)
    names = varying(grid)
    if not names:
        return None
    shape = [len(v) for v in grid.values()]
    per_block = int(np.prod(shape))
    n = (len(results) // per_block) * per_block
    values = pd.to_numeric(results[rank_by], errors="coerce").to_numpy(dtype=np.float64)[:n]
    values = np.where(results["error"].isna().to_numpy()[:n], values, np.nan)
    coords = np.array(np.unravel_index(np.arange(n) % per_block, shape)).T
    block = np.arange(n) // per_block
    axis = {name: i for i, name in enumerate(grid)}
    y_name = names[0] if len(names) > 1 else None
    x_name = names[1] if len(names) > 1 else names[0]
    rest = [name for name in names if name not in (x_name, y_name)]
    panel_of = [(int(block[i]), *(int(coords[i, axis[r]]) for r in rest)) for i in range(n)]
    panels = list(dict.fromkeys(panel_of))
    shown = panels[:_MAX_PANELS]
    finite = values[np.isfinite(values)]
    best_at = -1
    if len(finite):
        best_at = int(np.nanargmax(values) if RANK_METRICS[rank_by] else np.nanargmin(values))
    ny = len(grid[y_name]) if y_name else 1
    nx = len(grid[x_name])
    cols = min(len(shown), 3)
    rows = math.ceil(len(shown) / cols)
    fig = Figure(
        figsize=(cols * max(3.6, 0.9 * nx + 1.8), rows * max(2.6, 0.55 * ny + 1.6) + 0.4),
        layout="constrained",
    )
    cmap, norm, reading = colour_scale(rank_by, finite)
    image = None
    for p, key in enumerate(shown):
        matrix = np.full((ny, nx), np.nan)
        outline = None
        for i in (i for i in range(n) if panel_of[i] == key):
            r = int(coords[i, axis[y_name]]) if y_name else 0
            c = int(coords[i, axis[x_name]])
            matrix[r, c] = values[i]
            if i == best_at:
                outline = (r, c)
        ax = fig.add_subplot(rows, cols, p + 1)
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(nx), [str(v) for v in grid[x_name]])
        ax.set_xlabel(x_name)
        if y_name:
            ax.set_yticks(range(ny), [str(v) for v in grid[y_name]])
            ax.set_ylabel(y_name)
        else:
            ax.set_yticks([])
        for (r, c), v in np.ndenumerate(matrix):
            red, green, blue, _ = cmap(norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # white text on dark cells
            ax.text(
                c,
                r,
                format_metric(rank_by, v),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
        if outline is not None:
            r, c = outline
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=2.5))
        first = key[0] * per_block
        title = [f"{results['symbol'].iloc[first]} {results['version'].iloc[first] or ''}"]
        title += [f"{name}={grid[name][k]}" for name, k in zip(rest, key[1:], strict=True)]
        ax.set_title(", ".join(t.strip() for t in title), fontsize=9)
    if image is not None:
        bar = fig.colorbar(image, ax=fig.axes, label=f"{rank_by}: {reading}", shrink=0.9)
        if rank_by in PERCENT_METRICS:  # the same unit as the cells' labels
            from matplotlib.ticker import PercentFormatter

            bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    note = f" (first {len(shown)} of {len(panels)} panels)" if len(shown) < len(panels) else ""
    origin = f" ({source})" if source else ""
    title = f"Sweep: {rank_by} per cell{origin}, the best outlined{note}"
    in_sample = in_sample_note(results if in_sample_from is None else in_sample_from)
    if in_sample:  # wrapped to the figure's width
        width = max(30, int(fig.get_figwidth() * 11))
        title += "\n" + textwrap.fill(in_sample, width)
    fig.suptitle(title, fontsize=10)
    return fig


#: Metrics whose colours diverge from a neutral value (green above it, red below).
_CENTRES = {"sharpe": 0.0, "sortino": 0.0, "total_return": 0.0, "cagr": 0.0, "win_rate": 0.5}
#: Metrics that only cost: 0 is best.
_COSTS = ("max_drawdown", "fees_paid")


def colour_scale(rank_by: str, finite: np.ndarray) -> tuple[Any, Any, str]:
    """The colormap, norm and colour-bar reading of ``rank_by`` over the values ``finite``.

    A diverging metric gets limits symmetric about its centre (so -2 is as red as +2 is
    green, and a loss is never green); a cost runs from 0 to its worst value; the others span
    their values without a good or bad colour.
    """
    from matplotlib import colormaps
    from matplotlib.colors import CenteredNorm, Normalize

    if rank_by in _CENTRES:
        centre = _CENTRES[rank_by]
        half = float(np.max(np.abs(finite - centre))) if len(finite) else 0.0
        shown = f"{100 * centre:g} %" if rank_by in PERCENT_METRICS else f"{centre:g}"
        return (
            colormaps["RdYlGn"].with_extremes(bad="lightgrey"),
            CenteredNorm(vcenter=centre, halfrange=half or 1.0),
            f"green above {shown}, red below",
        )
    if rank_by in _COSTS:
        worst = float(np.max(np.abs(finite))) if len(finite) else 0.0
        return (
            colormaps["Reds"].with_extremes(bad="lightgrey"),
            Normalize(vmin=0.0, vmax=worst or 1.0),
            "0 is best, redder is worse",
        )
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    return (
        colormaps["viridis"].with_extremes(bad="lightgrey"),
        Normalize(vmin=low, vmax=high if high > low else low + 1.0),
        "colour shows size, not better or worse",
    )


def in_sample_note(results: pd.DataFrame) -> str | None:
    """``in-sample: N of M bars ...`` when cells trade bars their model was trained on (the
    most of any cell), else None."""
    if "in_sample_bars" not in results:
        return None
    bars = pd.to_numeric(results["in_sample_bars"], errors="coerce")
    if not (bars > 0).any():
        return None
    worst = int(np.nanargmax(bars.to_numpy(dtype=np.float64)))
    total = pd.to_numeric(results["bars"], errors="coerce").iloc[worst] if "bars" in results else 0
    of = f" of {int(total)}" if total and not pd.isna(total) else ""
    return (
        f"in-sample: {int(bars.iloc[worst])}{of} bars inside the model's training period "
        f"({int((bars > 0).sum())} of {len(results)} cells)"
    )
