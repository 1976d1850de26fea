"""Sweep grids, ranking, warnings and heatmaps: pure logic on small frames (no backtests)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.sweep.grid import check_grid, expand_grid, parse_grid, parse_value
from atb_strategies.sweep.report import (
    format_ranking,
    heatmap_figure,
    rank_cells,
    sweep_warnings,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("-2", -2),
        ("0.001", 0.001),
        ("1e-3", 0.001),
        ("true", True),
        ("False", False),
        ("none", None),
        ("skip", "skip"),
        (" warn ", "warn"),
        ("nan", "nan"),
    ],
)
def test_parse_value_with_each_kind_gives_its_python_type(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_grid_with_two_options_keeps_their_order_and_types():
    grid = parse_grid(["long_threshold=0.0005,0.001", "allow_shorts=true,false"])
    assert grid == {"long_threshold": [0.0005, 0.001], "allow_shorts": [True, False]}
    assert list(grid) == ["long_threshold", "allow_shorts"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["long_threshold"], "NAME=V1,V2"),
        (["=1,2"], "NAME=V1,V2"),
        (["a=1,,2"], "empty value"),
        (["a=1", "a=2"], "twice"),
    ],
)
def test_parse_grid_with_bad_option_names_the_problem(options, words):
    with pytest.raises(ConfigurationError, match=words):
        parse_grid(options)


def test_expand_grid_with_two_names_varies_the_last_fastest():
    cells = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert cells[:3] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}]
    assert len(cells) == 6 and cells[-1] == {"a": 2, "b": "z"}


def test_check_grid_with_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigurationError, match="no parameter 'stoploss'; its parameters: a, b"):
        check_grid({"stoploss": [1]}, ["b", "a"], "MlBasic")


@pytest.mark.parametrize(
    ("grid", "words"),
    [
        ({"version": ["v1"]}, "--model-version"),
        ({"a": []}, "non-empty"),
        ({"a": [1, 1]}, "repeat"),
    ],
)
def test_check_grid_with_reserved_empty_or_repeated_values_refuses(grid, words):
    with pytest.raises(ConfigurationError, match=words):
        check_grid(grid, ["a", "version"], "MlBasic")


def _results(sharpe, drawdown=None, errors=None, in_sample=None, **params) -> pd.DataFrame:
    n = len(sharpe)
    return pd.DataFrame(
        {
            "cell": [f"c{i}" for i in range(n)],
            **params,
            "symbol": "BTCUSDT",
            "version": "v1",
            "total_return": np.linspace(0, 0.1, n),
            "sharpe": sharpe,
            "max_drawdown": drawdown if drawdown is not None else [0.1] * n,
            "trades": [10] * n,
            "bars": [1000] * n,
            "in_sample_bars": in_sample if in_sample is not None else [0] * n,
            "oos_from": "2024-03-01 00:00:00",
            "model_key": "BTCUSDT/basic@v1",
            "error": errors if errors is not None else [None] * n,
        }
    )


def test_rank_cells_with_errors_and_missing_values_ranks_only_the_valid_cells():
    frame = _results(
        [1.0, None, 3.0, 2.0], errors=[None, None, None, "ValueError: x"], a=[1, 2, 3, 4]
    )
    ranked = rank_cells(frame, "sharpe")
    assert list(ranked["cell"]) == ["c2", "c0"] and list(ranked["rank"]) == [1, 2]


def test_rank_cells_by_drawdown_puts_the_smallest_first():
    frame = _results([1.0, 2.0, 3.0], drawdown=[0.3, 0.1, 0.2], a=[1, 2, 3])
    assert list(rank_cells(frame, "max_drawdown")["cell"]) == ["c1", "c2", "c0"]


def test_rank_cells_with_unknown_metric_lists_the_metrics():
    with pytest.raises(ConfigurationError, match="must be one of sharpe, sortino"):
        rank_cells(_results([1.0], a=[1]), "profit")


def test_format_ranking_shows_params_and_metrics_of_the_top_cells():
    frame = _results([1.0, 3.0, 2.0], a=[0.001, 0.002, 0.003])
    text = format_ranking(frame, {"a": [0.001, 0.002, 0.003]}, "sharpe", top=2)
    lines = text.splitlines()
    assert len(lines) == 3 and lines[0].split()[:3] == ["rank", "a", "sharpe"]
    assert lines[1].split()[:3] == ["1", "0.002", "3.00"]


def test_sweep_warnings_with_best_on_the_edge_of_a_numeric_grid_says_so():
    grid = {"a": [1, 2, 3], "b": [0.1, 0.2], "c": [True, False, None]}
    cells = expand_grid(grid)
    sharpe = [10.0 if (c["a"] == 3 and c["b"] == 0.1 and c["c"] is None) else 0.0 for c in cells]
    frame = _results(sharpe, **{k: [c[k] for c in cells] for k in grid})
    warnings = sweep_warnings(frame, grid, "sharpe")
    assert len(warnings) == 1  # b has two values, c is not numeric: no edge to speak of
    assert "a=3, the largest value tried" in warnings[0]


def test_sweep_warnings_with_best_inside_the_grid_has_no_edge_warning():
    frame = _results([0.0, 5.0, 0.0], a=[1, 2, 3])
    assert sweep_warnings(frame, {"a": [1, 2, 3]}, "sharpe") == []


def test_sweep_warnings_with_in_sample_bars_says_the_ranking_is_in_sample_and_by_how_much():
    frame = _results([1.0, 2.0], in_sample=[300, 250], a=[1, 2])
    (warning,) = sweep_warnings(frame, {"a": [1, 2]}, "sharpe")
    assert warning.startswith("The ranking is in-sample: 250 of the best cell's 1000 bars (25 %)")
    assert "2 of 2 ranked cells include in-sample bars (up to 300)" in warning
    assert "at or after 2024-03-01 00:00:00" in warning


def test_sweep_warnings_with_unknown_training_period_says_it_may_be_in_sample():
    frame = _results([1.0, 2.0], in_sample=[None, None], a=[1, 2])
    (warning,) = sweep_warnings(frame, {"a": [1, 2]}, "sharpe")
    assert "training period of BTCUSDT/basic@v1 (the best cell's model) is unknown" in warning


def test_sweep_warnings_with_failed_cells_counts_them_with_the_first_error():
    frame = _results([1.0, None], errors=[None, "ConfigurationError: bad"], a=[1, 2])
    (warning,) = sweep_warnings(frame, {"a": [1, 2]}, "sharpe")
    assert warning.startswith("1 of 2 cells failed (first: ConfigurationError: bad)")


def test_heatmap_figure_with_three_varying_params_draws_one_panel_per_third_value():
    grid = {"a": [1, 2], "b": [0.1, 0.2, 0.3], "c": ["x", "y"], "fixed": [7]}
    cells = expand_grid(grid)
    sharpe = [float(i) for i in range(len(cells))]
    errors = [None] * len(cells)
    errors[0] = "ValueError: failed"
    frame = _results(sharpe, errors=errors, **{k: [c[k] for c in cells] for k in grid})
    fig = heatmap_figure(frame, grid, "sharpe")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["BTCUSDT v1, c=x", "BTCUSDT v1, c=y"]
    first = panels[0].images[0].get_array()
    assert first.shape == (2, 3) and first.mask[0, 0]  # a failed cell is masked (grey)
    assert first[1, 2] == sharpe[cells.index({"a": 2, "b": 0.3, "c": "x", "fixed": 7})]
    # the best cell (the last one: a=2, b=0.3, c=y) is outlined in the second panel only
    outlined = [[p.get_xy() for p in ax.patches if isinstance(p, Rectangle)] for ax in panels]
    assert outlined == [[], [(1.5, 0.5)]]


def test_heatmap_figure_with_no_varying_param_draws_nothing():
    assert heatmap_figure(_results([1.0], a=[1]), {"a": [1]}, "sharpe") is None
