"""The sweep heatmap's colours say good or bad honestly (issue 22): a loss is never green, the
same size of gain and loss get equally strong colours, drawdown is best at 0, the colour bar
says how to read it, and an in-sample ranking says so."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from atb_strategies.sweep.report import colour_scale, heatmap_figure, in_sample_note
from tests.unit.test_sweep_grid import _results


def _colour(rank_by: str, values: list[float], value: float) -> tuple[float, ...]:
    cmap, norm, _ = colour_scale(rank_by, np.array(values))
    return cmap(norm(value))


def _is_green(rgba: tuple[float, ...]) -> bool:
    r, g, _, _ = rgba
    return g > r + 0.1


def _is_red(rgba: tuple[float, ...]) -> bool:
    r, g, _, _ = rgba
    return r > g + 0.1


def test_a_negative_sharpe_is_red_even_when_it_is_the_best_of_the_sweep() -> None:
    values = [-5.18, -7.0, -6.0]  # every cell loses; -5.18 is the best
    assert _is_red(_colour("sharpe", values, -5.18))


def test_a_positive_sharpe_is_green_even_when_it_is_the_worst_of_the_sweep() -> None:
    values = [4.46, 6.0, 8.0]
    assert _is_green(_colour("sharpe", values, 4.46))


def test_gains_and_losses_of_the_same_size_are_equally_strong() -> None:
    values = [-1.0, 0.2, 3.0]
    _, norm, reading = colour_scale("total_return", np.array(values))
    assert norm(0.0) == 0.5 and norm(1.0) - 0.5 == pytest.approx(0.5 - norm(-1.0))
    assert reading == "green above 0 %, red below"


def test_drawdown_is_best_at_zero_and_the_deepest_is_reddest() -> None:
    cmap, norm, reading = colour_scale("max_drawdown", np.array([0.05, 0.1, 0.3]))
    assert norm(0.0) == 0.0 and norm(0.3) == 1.0
    assert _is_red(cmap(norm(0.3))) and not _is_red(cmap(norm(0.0)))
    assert "0 is best" in reading


def test_the_colour_bar_is_labelled_with_the_reading() -> None:
    frame = _results([-1.0, 2.0], a=[1, 2])
    fig = heatmap_figure(frame, {"a": [1, 2]}, "sharpe")
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bar.get_ylabel() == "sharpe: green above 0, red below"
    panel = next(ax for ax in fig.axes if ax.get_label() != "<colorbar>")
    image = panel.images[0]
    loss, gain = (image.cmap(image.norm(v)) for v in (-1.0, 2.0))
    assert _is_red(loss) and _is_green(gain)
    assert tuple(image.cmap.get_bad()) == to_rgba("lightgrey")


def test_an_in_sample_ranking_is_noted_on_the_chart() -> None:
    frame = _results([1.0, 2.0], in_sample=[0, 300], a=[1, 2])
    note = in_sample_note(frame)
    assert note is not None and note.startswith("in-sample: 300 of 1000 bars")
    assert "(1 of 2 cells)" in note
    fig = heatmap_figure(frame, {"a": [1, 2]}, "sharpe")
    assert note in " ".join(fig._suptitle.get_text().split())
    assert in_sample_note(_results([1.0, 2.0], a=[1, 2])) is None
