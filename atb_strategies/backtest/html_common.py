"""What every ``report.html`` shares (backtest, walk-forward, sweep): bokeh figures on one
style, legends, a heading, escaped text, tables, and writing a self-contained page.

A page is written with bokeh's JavaScript and CSS inlined (``bokeh.resources.INLINE``): it
works offline, from disk, without a server. Here, below ``sweep`` and ``evaluation`` in the
layers, so each report module imports it downward.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bokeh.plotting import figure as Figure

WIDTH = 1400
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
PREDICTED = "#ff7f0e"  # matplotlib's tab:orange, as in the PNG charts


def escape(text: str) -> str:
    """``text`` safe inside HTML."""
    return html.escape(text)


def texts(values: Any, empty: str = "") -> list[str]:
    """``values`` as text, ``empty`` for a missing one (None, NaN): a column of a table."""
    import pandas as pd

    return [
        empty if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in values
    ]


def time_figure(height: int, ylabel: str, x_range: Any = None, **kwargs: Any) -> Figure:
    """A figure on a datetime x axis (hidden: the last panel of a column shows it), panned by
    dragging and zoomed in time by the mouse wheel; ``x_range`` links it to another panel."""
    from bokeh.plotting import figure

    fig = figure(
        width=kwargs.pop("width", WIDTH),
        height=height,
        x_axis_type="datetime",
        tools=TOOLS,
        active_scroll="xwheel_zoom",
        active_drag="xpan",
        **({"x_range": x_range} if x_range is not None else {}),
        **kwargs,
    )
    fig.yaxis.axis_label = ylabel
    fig.xaxis.visible = False
    fig.toolbar.logo = None
    fig.min_border_left = 80
    return fig


_AUTOSCALE = """
const t = source.data[time];
const x0 = xr.start, x1 = xr.end;
let lo = Infinity, hi = -Infinity;
for (const c of columns) {
  const v = source.data[c];
  for (let i = 0; i < t.length; i++) {
    if (t[i] >= x0 && t[i] <= x1 && Number.isFinite(v[i])) {
      if (v[i] < lo) lo = v[i];
      if (v[i] > hi) hi = v[i];
    }
  }
}
if (lo <= hi) {
  const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.01 || 1;
  yr.start = lo - pad;
  yr.end = hi + pad;
}
"""


def autoscale_y(fig: Figure, source: Any, columns: list[str], time: str = "time") -> None:
    """Fit ``fig``'s y axis to ``columns`` of ``source`` over the bars in view whenever the
    (shared) time axis is zoomed or panned: a zoom into a week of an 18,000-bar price shows
    that week's moves, not a flat line on the whole period's scale."""
    import numpy as np
    from bokeh.models import CustomJS, Range1d

    values = np.concatenate([np.asarray(source.data[c], dtype=float) for c in columns])
    values = values[np.isfinite(values)]
    if len(values):  # a fixed range (a data range would refit itself to every bar)
        lo, hi = float(values.min()), float(values.max())
        pad = (hi - lo) * 0.05 or abs(hi) * 0.01 or 1.0
        fig.y_range = Range1d(lo - pad, hi + pad)
    callback = CustomJS(
        args={
            "source": source,
            "xr": fig.x_range,
            "yr": fig.y_range,
            "columns": list(columns),
            "time": time,
        },
        code=_AUTOSCALE,
    )
    fig.x_range.js_on_change("start", callback)
    fig.x_range.js_on_change("end", callback)


def legend(fig: Figure, location: str = "top_left") -> None:
    """A small, half-transparent legend whose entries hide their lines when clicked."""
    fig.legend.location = location
    fig.legend.click_policy = "hide"
    fig.legend.label_text_font_size = "9pt"
    fig.legend.background_fill_alpha = 0.7


def heading(title: str, *lines: str, width: int = WIDTH) -> Any:
    """A ``Div``: ``title`` as the page's only ``h2``, then each line (escaped) below it."""
    from bokeh.models import Div

    body = "".join(f"<div style='margin:2px 0'>{escape(line)}</div>" for line in lines if line)
    return Div(text=f"<h2 style='margin:4px 0'>{escape(title)}</h2>{body}", width=width)


def text_block(title: str, lines: Sequence[str], *, width: int = WIDTH, css: str = "") -> Any:
    """A ``Div``: an ``h3`` and the lines as preformatted text (tables printed by the CLI)."""
    from bokeh.models import Div

    text = escape("\n".join(lines))
    return Div(
        text=f"<h3 style='margin:10px 0 2px'>{escape(title)}</h3>"
        f"<pre style='margin:0;font-size:12px;white-space:pre-wrap;{css}'>{text}</pre>",
        width=width,
    )


def data_table(
    rows: Mapping[str, Sequence[Any]],
    titles: Mapping[str, str],
    *,
    formats: Mapping[str, str] | None = None,
    widths: Mapping[str, int] | None = None,
    width: int = WIDTH,
    height: int | None = None,
    name: str | None = None,
) -> Any:
    """A sortable bokeh ``DataTable`` (click a header to sort) over ``rows`` (column ->
    values), its columns in the order of ``titles`` (column -> header). ``formats`` maps a
    column to a numbro format (``"0.00"``, ``"0.0%"``); text columns need none. ``widths``
    maps a column to its width in pixels (others: 80). ``height`` None: every row shown
    without scrolling up to 30 rows."""
    from bokeh.models import ColumnDataSource, DataTable, NumberFormatter, TableColumn

    formats, widths = formats or {}, widths or {}
    columns = [
        TableColumn(
            field=key,
            title=title,
            width=widths.get(key, 80),
            **({"formatter": NumberFormatter(format=formats[key])} if key in formats else {}),
        )
        for key, title in titles.items()
    ]
    n = len(next(iter(rows.values()))) if rows else 0
    return DataTable(
        source=ColumnDataSource(dict(rows)),
        columns=columns,
        width=width,
        height=height or 48 + 25 * min(max(n, 1), 30),  # header, rows, a scroll bar
        index_position=None,
        sortable=True,
        reorderable=False,  # column dragging needs jquery-ui, which bokeh does not inline
        autosize_mode="none",
        **({"name": name} if name else {}),
    )


def write_page(layout: Any, path: Path, title: str) -> Path:
    """Write ``layout`` as a self-contained page (bokeh inlined) at ``path``; parent
    directories are created. Returns ``path``."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(file_html(layout, resources=INLINE, title=title))
    return path
