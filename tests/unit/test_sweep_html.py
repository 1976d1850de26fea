"""The sweep's ``report.html`` (issue 22 item 2) from a results frame: a sortable table of
every cell, a heatmap per pair of varied params on the static heatmaps' colour rule (centred
on 0: a loss is never green), hover with every metric, the verdict, the in-sample note."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
from bokeh.models import ColumnDataSource, DataTable, Div, HoverTool
from matplotlib import colormaps
from matplotlib.colors import to_hex, to_rgb

from atb_strategies.sweep.grid import expand_grid
from atb_strategies.sweep.html_report import (
    METRIC_COLUMNS,
    heatmap_cells,
    heatmap_pairs,
    sweep_layout,
    write_sweep_html,
)

GRID = {"long_threshold": [0.0, 0.001, 0.002], "stop_loss": [0.01, 0.02], "size": [0.5, 1.0]}


def _results(seed: int = 0) -> pd.DataFrame:
    """A results frame in cell order (last grid name fastest), Sharpes of both signs."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, params in enumerate(expand_grid(GRID)):
        rows.append(
            {
                "cell": f"cell{i:02d}",
                **params,
                "symbol": "BTCUSDT",
                "version": "v1",
                "total_return": rng.normal(0, 0.05),
                "cagr": rng.normal(0, 0.1),
                "sharpe": rng.normal(0, 2),
                "sortino": rng.normal(0, 2),
                "max_drawdown": abs(rng.normal(0, 0.05)),
                "trades": int(rng.integers(1, 200)),
                "win_rate": rng.uniform(0.3, 0.7),
                "exposure": rng.uniform(0, 1),
                "fees_paid": rng.uniform(0, 100),
                "bars": 500,
                "in_sample_bars": 120,
                "oos_from": "2024-02-01",
                "model_key": "BTCUSDT/basic@v1",
                "error": None,
                "dsr": rng.uniform(0, 1),
                "beats_benchmark": False,
            }
        )
    frame = pd.DataFrame(rows)
    frame.loc[3, "error"] = "boom"
    frame.loc[3, "sharpe"] = np.nan
    frame.attrs.update(
        {
            "rank_by": "sharpe",
            "warnings": ["The ranking is in-sample: a warning."],
            "overfitting": {
                "trials": 11,
                "deflated_sharpe": 0.42,
                "pbo": 0.31,
                "spa_pvalue": 0.2,
                "beat_benchmark": [],
                "verdict": "The best cell does NOT survive the overfitting checks.",
            },
            "walk_forward": None,
        }
    )
    return frame


def _sources(layout) -> list[ColumnDataSource]:  # type: ignore[no-untyped-def]
    return [m for m in layout.references() if isinstance(m, ColumnDataSource)]


def test_one_heatmap_per_pair_of_varied_params():
    assert heatmap_pairs(GRID) == list(itertools.combinations(GRID, 2))
    assert heatmap_pairs({"a": [1, 2], "b": [3]}) == [(None, "a")]
    assert heatmap_pairs({"a": [1], "b": [3]}) == []


def test_a_square_is_the_best_cell_over_the_other_params_and_says_how_many():
    frame = _results()
    squares = heatmap_cells(frame, GRID, "sharpe", "long_threshold", "stop_loss")
    assert len(squares) == 3 * 2 and set(squares["cells"]) == {2}
    for _, square in squares.iterrows():
        mine = frame[
            (frame["long_threshold"].map(str) == square["y"])
            & (frame["stop_loss"].map(str) == square["x"])
            & frame["error"].isna()
        ]
        assert square["value"] == mine["sharpe"].max()
        assert square["cell"] == mine.loc[mine["sharpe"].idxmax(), "cell"]
    drawdown = heatmap_cells(frame, GRID, "max_drawdown", "long_threshold", "stop_loss")
    first = frame[(frame["long_threshold"] == 0.0) & (frame["stop_loss"] == 0.01)]
    assert drawdown["value"].iloc[0] == first["max_drawdown"].min()  # lower is better


def test_the_table_has_every_cell_best_first_and_sorts(tmp_path):
    frame = _results()
    layout, _ = sweep_layout(frame, GRID)
    (table,) = [m for m in layout.references() if isinstance(m, DataTable) and m.name == "cells"]
    data = table.source.data
    assert table.sortable is True
    assert len(data["cell"]) == len(frame)
    ranked = frame[frame["error"].isna()].sort_values("sharpe", ascending=False)
    assert list(data["cell"][: len(ranked)]) == list(ranked["cell"])
    assert list(data["rank"][: len(ranked)]) == list(range(1, len(ranked) + 1))
    assert data["cell"][-1] == "cell03" and np.isnan(data["rank"][-1])  # the failed one
    assert data["error"][-1] == "boom"
    for metric in METRIC_COLUMNS:
        assert metric in data


def test_heatmap_colours_diverge_from_zero_and_hover_shows_every_metric():
    frame = _results()
    layout, _ = sweep_layout(frame, GRID)
    squares = [s for s in _sources(layout) if "colour" in s.data]
    assert len(squares) == 3  # one per pair of the three varied params
    values = frame["sharpe"].where(frame["error"].isna())
    seen = 0
    for source in squares:
        for colour, cell in zip(source.data["colour"], source.data["cell"], strict=True):
            value = values[frame["cell"] == cell].iloc[0]
            r, g, _ = to_rgb(colour)
            if value > 0.3:
                assert g > r, (value, colour)  # gains green
                seen += 1
            elif value < -0.3:
                assert r > g, (value, colour)  # losses red, never green
                seen += 1
    assert seen >= 6
    tips = [dict(h.tooltips) for h in layout.references() if isinstance(h, HoverTool)]
    heat_tip = next(t for t in tips if "cells in square" in t)
    assert {"sharpe", "total return", "max drawdown", "trades", "deflated Sharpe"} <= set(heat_tip)
    assert set(squares[0].data["in_sample_bars"]) == {"120"}  # a count, not 120.00


def test_equal_gains_and_losses_get_equally_strong_colours_and_zero_the_middle():
    frame = _results().head(6).copy()
    grid = {"long_threshold": [0.0, 0.001, 0.002], "stop_loss": [0.01, 0.02]}
    frame = frame.assign(
        long_threshold=[0.0, 0.0, 0.001, 0.001, 0.002, 0.002],
        stop_loss=[0.01, 0.02] * 3,
        sharpe=[2.0, -2.0, 1.0, -1.0, 0.5, 0.0],
        error=None,
    )
    layout, _ = sweep_layout(frame, grid)
    (source,) = [s for s in _sources(layout) if "colour" in s.data]
    colour = dict(zip(source.data["text"], source.data["colour"], strict=True))
    palette = colormaps["RdYlGn"]  # the static heatmaps' map, symmetric about 0:
    assert colour["2.00"] == to_hex(palette(1.0))  # +2, the largest size: the greenest end
    assert colour["-2.00"] == to_hex(palette(0.0))  # -2: the reddest end, as strong
    assert colour["0.00"] == to_hex(palette(0.5))  # 0: the middle


def test_the_heading_has_the_verdict_the_in_sample_note_and_the_warnings():
    frame = _results()
    layout, title = sweep_layout(frame, GRID, title="My sweep")
    text = " ".join(m.text for m in layout.references() if isinstance(m, Div))
    assert title == "My sweep"
    assert "verdict: The best cell does NOT survive the overfitting checks." in text
    assert "in-sample: 120 of 500 bars inside the model&#x27;s training period" in text
    assert "warning: The ranking is in-sample: a warning." in text
    assert "deflated Sharpe ratio of the best cell: 0.420 over 11 trials" in text


def test_write_sweep_html_is_self_contained(tmp_path):
    path = write_sweep_html(_results(), GRID, tmp_path / "s" / "report.html", title="Grid")
    page = path.read_text()
    assert "<title>Grid</title>" in page
    assert not re.search(r"<script[^>]+src=", page)
    assert "cdn.bokeh.org" not in page


def test_no_varied_param_gives_a_table_and_no_heatmap():
    frame = _results().head(1)
    layout, _ = sweep_layout(frame, {"long_threshold": [0.0], "stop_loss": [0.01]})
    assert not [s for s in _sources(layout) if "colour" in s.data]
    assert [m for m in layout.references() if isinstance(m, DataTable)]


def test_a_none_value_read_back_from_a_csv_as_nan_keeps_its_square(tmp_path):
    grid = {"take_profit": [None, 0.05], "stop_loss": [0.01, 0.02]}
    frame = (
        _results()
        .head(4)
        .assign(take_profit=[None, None, 0.05, 0.05], stop_loss=[0.01, 0.02] * 2, error=None)
    )
    frame.drop(columns=["long_threshold", "size"]).to_csv(tmp_path / "r.csv", index=False)
    back = pd.read_csv(tmp_path / "r.csv")
    assert back["take_profit"].isna().sum() == 2
    squares = heatmap_cells(back, grid, "sharpe", "take_profit", "stop_loss")
    assert sorted(squares["y"]) == ["0.05", "0.05", "None", "None"]
    np.testing.assert_allclose(sorted(squares["value"]), sorted(frame["sharpe"]))
