"""The walk-forward chart (issue 22): buy & hold's right axis has its 0 level with the left
axis' 0, the rolling window has a plain name, the band says it is a 95 % CI, the folds are
labelled."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from atb_strategies.evaluation.report import (
    _align_zeros,
    _rolling_window,
    plot_walk_forward,
    rolling_edge,
)
from atb_strategies.stats import fixed_edge_differences


def _zero_height(ax) -> float:  # type: ignore[no-untyped-def]
    lo, hi = ax.get_ylim()
    return -lo / (hi - lo)


@pytest.mark.parametrize(
    ("left", "right"),
    [((-5.0, 20.0), (-40.0, 10.0)), ((1.0, 3.0), (-2.0, 8.0)), ((-6.0, -1.0), (-3.0, 4.0))],
)
def test_align_zeros_puts_both_zeros_at_the_same_height_and_keeps_the_data(left, right):
    fig = Figure()
    a = fig.add_subplot()
    b = a.twinx()
    a.set_ylim(*left)
    b.set_ylim(*right)
    _align_zeros(a, b)
    assert _zero_height(a) == pytest.approx(_zero_height(b))
    for ax, (lo, hi) in ((a, left), (b, right)):
        new_lo, new_hi = ax.get_ylim()
        assert new_lo <= min(lo, 0) and new_hi >= max(hi, 0)  # stretched, never cut


def test_rolling_window_on_hourly_bars_is_whole_days_and_named_so():
    index = pd.date_range("2024-01-01", periods=1806, freq="h")  # a sixth: 301 bars
    window, name = _rolling_window(index)
    assert (window, name) == (288, "rolling 12-day window")


def test_rolling_window_on_daily_bars_is_named_in_bars():
    index = pd.date_range("2020-01-01", periods=600, freq="D")
    assert _rolling_window(index) == (100, "rolling 100-bar window")


def test_the_chart_labels_the_band_the_window_and_every_fold(tmp_path: Path):
    index = pd.date_range("2024-01-01", periods=1806, freq="h")
    rng = np.random.default_rng(0)
    fold = np.repeat([1, 2, 3], 602)
    preds = pd.DataFrame(
        {"seed": 0, "fold": fold, "predicted": rng.normal(size=1806)},
        index=index,
    )
    preds["actual"] = rng.normal(size=1806)
    result = SimpleNamespace(
        walk_forward_id="wf-test",
        folds=[SimpleNamespace(number=n) for n in (1, 2, 3)],
        predictions=preds,
        oos={
            "seed": 0,
            "edge_ci95": (-0.03, 0.02),
            "direction_accuracy": 0.5,
            "majority_baseline": 0.51,
            "edge": -0.01,
            "beats_baselines": False,
        },
    )
    steps = np.cumprod(1 + rng.normal(0, 0.01, size=(1806, 2)), axis=0)
    equity = pd.DataFrame(steps, index=index, columns=["model", "buy & hold"])
    captured: list[Figure] = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        captured.append(self)
        return original(self, *args, **kwargs)

    Figure.savefig = keep  # type: ignore[method-assign]
    try:
        path = plot_walk_forward(result, tmp_path / "chart.png", equity=equity)  # type: ignore[arg-type]
    finally:
        Figure.savefig = original  # type: ignore[method-assign]
    assert path.read_bytes()[:4] == b"\x89PNG"
    (fig,) = captured
    top, twin, bottom = fig.axes[0], fig.axes[2], fig.axes[1]
    labels = bottom.get_legend_handles_labels()[1]
    assert "direction edge over the majority baseline, rolling 12-day window" in labels
    assert "95 % CI of that edge (normal approximation over 288 bars)" in labels
    assert "a fold's first test bar" in labels
    assert [t.get_text() for t in top.texts] == ["fold 1", "fold 2", "fold 3"]
    assert twin.get_ylabel().startswith("buy & hold")
    assert _zero_height(top) == pytest.approx(_zero_height(twin))


def test_rolling_edge_is_over_the_gates_fixed_baseline_when_the_drift_is_known():
    """The panel shows the edge the gate tests: over the sign of the training drift."""
    index = pd.date_range("2024-01-01", periods=400, freq="h")
    actual = np.where(np.arange(400) % 4 == 0, -1.0, 1.0)  # 75 % up: the majority is "up"
    preds = pd.DataFrame({"predicted": 1.0, "actual": actual}, index=index)
    # always up, like the majority: no edge over it
    assert rolling_edge(preds, 100)["edge"].abs().max() == pytest.approx(0.0)
    assert rolling_edge(preds, 100).attrs["baseline"] == "majority"
    # the training drift said down: always up beats that fixed baseline by 50 points
    preds["drift"] = -0.001
    edge = rolling_edge(preds, 100)
    assert edge.attrs["baseline"] == "fixed"
    assert edge["edge"].to_numpy() == pytest.approx(0.5)
    assert (edge["band"] > 0).all()
    assert edge["edge"].mean() == pytest.approx(
        np.mean(fixed_edge_differences(preds["predicted"], actual, preds["drift"]))
    )
