"""The walk-forward's ``report.html`` (issue 22 item 2): a real ridge walk-forward (serial, a
few folds on an AR(1) market) and its asof backtest; the page is self-contained and holds
every out-of-sample bar, the folds (lines, labels, table with the in-sample counts), the
per-fold and pooled edge with their 95 % CIs, the verdict and the equity panels."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bokeh.models import ColumnDataSource, DataTable, Div, HoverTool, LabelSet, Span

from atb_strategies.evaluation.html_report import fold_rows, walk_forward_layout
from atb_strategies.evaluation.report import fold_table, write_report
from atb_strategies.evaluation.walkforward import (
    WalkForwardConfig,
    WalkForwardResult,
    asof_backtest,
    run_walk_forward,
)
from tests.integration.test_walk_forward import ar_market

pytestmark = pytest.mark.slow  # trains folds and runs a backtest


def ridge_walk_forward(
    tmp: Path, *, seeds: tuple[int, ...] = (0,)
) -> tuple[WalkForwardResult, dict, pd.DataFrame]:
    """A 4-fold ridge walk-forward on 2,700 AR(1) bars and its asof backtest."""
    market = ar_market(2700, phi=0.3, seed=3)
    config = WalkForwardConfig(
        symbol="BTCUSDT",
        train_bars=1200,
        test_bars=400,
        sequence_length=16,
        architecture="ridge",
        registry=tmp / "models",
        bootstrap_reps=200,
        seeds=seeds,
    )
    result = run_walk_forward(market, config, executor="serial")
    summary, equity = asof_backtest(market, result)
    return result, summary, equity


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[WalkForwardResult, dict, pd.DataFrame]:
    return ridge_walk_forward(tmp_path_factory.mktemp("wfhtml"))


def _sources(layout) -> list[ColumnDataSource]:  # type: ignore[no-untyped-def]
    return [m for m in layout.references() if isinstance(m, ColumnDataSource)]


def test_write_report_writes_a_self_contained_report_html(run, tmp_path):
    result, summary, equity = run
    paths = write_report(result, tmp_path / "wf", equity=equity, backtest=summary, title="AR")
    page = paths["html"].read_text()
    assert paths["html"] == tmp_path / "wf" / "report.html"
    assert "<title>AR</title>" in page
    assert not re.search(r"<script[^>]+src=", page)  # bokeh inlined: works offline
    assert "cdn.bokeh.org" not in page
    assert paths["html"].stat().st_size < 5_000_000


def test_every_out_of_sample_bar_is_in_the_page_with_its_fold_prediction_and_hit(run):
    result, summary, equity = run
    layout, _ = walk_forward_layout(result, equity=equity, backtest=summary)
    (bars,) = [s for s in _sources(layout) if "hit" in s.data]
    preds = result.predictions[result.predictions["seed"] == 0]
    assert len(bars.data["time"]) == len(preds) > 1000  # every test bar, nothing downsampled
    np.testing.assert_allclose(bars.data["predicted"], 100 * preds["predicted"].to_numpy())
    np.testing.assert_allclose(bars.data["actual"], 100 * preds["actual"].to_numpy())
    right = np.sign(preds["predicted"].to_numpy()) == np.sign(preds["actual"].to_numpy())
    assert list(bars.data["hit"]) == ["yes" if r else "no" for r in right]
    assert list(bars.data["fold"]) == list(preds["fold"])
    np.testing.assert_allclose(
        bars.data["realised_close"], preds["close"] * np.exp(preds["actual"]), rtol=1e-12
    )
    tips = [dict(h.tooltips) for h in layout.references() if isinstance(h, HoverTool)]
    bar_tip = next(t for t in tips if "hit" in t)
    assert {"bar (open)", "fold", "predicted return", "actual return", "hit"} <= set(bar_tip)


def test_fold_boundaries_are_drawn_on_every_panel_and_labelled(run):
    result, summary, equity = run
    layout, _ = walk_forward_layout(result, equity=equity, backtest=summary)
    (labels,) = [m for m in layout.references() if isinstance(m, LabelSet)]
    numbers = [f.number for f in result.folds]
    assert list(labels.source.data["text"]) == [f"fold {n}" for n in numbers]
    preds = result.predictions
    firsts = [preds.index[preds["fold"] == n][0] for n in numbers]
    assert [pd.Timestamp(x) for x in labels.source.data["x"]] == firsts
    spans = [m for m in layout.references() if isinstance(m, Span) and m.dimension == "height"]
    # price, returns, edge, asof equity, buy & hold: one line per fold on each
    assert len(spans) == 5 * len(numbers)


def test_the_folds_table_has_each_fold_its_edge_ci_dm_and_in_sample_counts(run):
    result, summary, equity = run
    layout, _ = walk_forward_layout(result, equity=equity, backtest=summary)
    (table,) = [m for m in layout.references() if isinstance(m, DataTable)]
    data = table.source.data
    expected = fold_table(result)
    assert list(data["fold"]) == list(expected["fold"])
    np.testing.assert_allclose(data["edge"], 100 * expected["edge_vs_fixed"].to_numpy(float))
    np.testing.assert_allclose(data["ci_low"], 100 * expected["edge_vs_fixed_ci_low"])
    np.testing.assert_allclose(data["dm_p"], expected["dm_pvalue_one_sided"].to_numpy(float))
    assert set(data["own"]) == {0}  # the embargo held: no test bar inside its own training
    # other folds' out-of-sample bars inside each fold's training window, by bar position
    position = pd.Index(result.index).get_indexer(result.predictions.index)
    for fold, counted in zip(result.folds, data["others"], strict=True):
        inside = (position >= fold.train_start) & (position < fold.train_end)
        assert counted == int((inside & (result.predictions["fold"] != fold.number)).sum())
    assert data["others"][0] == 0 and max(data["others"]) > 0  # later folds trained on them
    titles = [c.title for c in table.columns]
    assert "edge (points)" in titles and "own test in training" in titles


def test_the_edge_panel_shows_each_folds_ci_and_the_pooled_ci_band_labelled(run):
    result, summary, equity = run
    layout, _ = walk_forward_layout(result, equity=equity, backtest=summary)
    (boxes,) = [s for s in _sources(layout) if "low" in s.data and "high" in s.data]
    per_fold = {r.fold.number: r.metrics["oos"] for r in result.results}
    for fold, low, high in zip(boxes.data["fold"], boxes.data["low"], boxes.data["high"],
                               strict=True):  # fmt: skip
        ci = per_fold[fold]["edge_vs_fixed_ci95"]
        assert (low, high) == pytest.approx((100 * ci[0], 100 * ci[1]))
    lo, hi = result.oos["edge_vs_fixed_ci95"]
    labels = [
        item.label.value
        for fig in layout.children[1].children
        for legend in getattr(fig[0], "legend", [])
        for item in legend.items
    ]
    assert f"pooled edge, 95 % CI {100 * lo:+.1f}..{100 * hi:+.1f} points" in labels
    assert "a fold's edge and its 95 % CI" in labels


def test_the_heading_says_the_verdict_and_the_asof_backtest(run):
    result, summary, equity = run
    layout, _ = walk_forward_layout(result, equity=equity, backtest=summary, title="AR")
    text = " ".join(m.text for m in layout.references() if isinstance(m, Div))
    verdict = "BEATS" if result.oos["beats_baselines"] else "does NOT beat"
    assert f"verdict: {verdict} the baselines" in text
    lo, _ = result.oos["edge_vs_fixed_ci95"]
    assert f"95 % CI {100 * lo:+.1f}.." in text
    assert f"strategy {100 * summary['total_return']:+.2f} %" in text
    assert "in-sample bars: 0." in text  # asof: each bar served by an earlier fold


def test_without_the_backtest_there_is_no_equity_panel(run):
    result, _, _ = run
    with_equity = walk_forward_layout(result, equity=run[2], backtest=run[1])[0]
    without = walk_forward_layout(result)[0]
    panels = len(with_equity.children[1].children)
    assert len(without.children[1].children) == panels - 2  # asof equity and buy & hold
    text = " ".join(m.text for m in without.references() if isinstance(m, Div))
    assert "asof backtest" not in text


def test_several_seeds_draw_the_first_and_table_every_seed(tmp_path):
    result, _, _ = ridge_walk_forward(tmp_path, seeds=(0, 1))
    layout, _ = walk_forward_layout(result)
    (bars,) = [s for s in _sources(layout) if "hit" in s.data]
    assert len(bars.data["time"]) == int((result.predictions["seed"] == 0).sum())
    (table,) = [m for m in layout.references() if isinstance(m, DataTable)]
    assert sorted(set(table.source.data["seed"])) == [0, 1]
    assert len(table.source.data["fold"]) == 2 * len(result.folds)
    assert len(fold_rows(result, result.predictions[result.predictions["seed"] == 0])) == 2 * len(
        result.folds
    )
    assert not math.isnan(table.source.data["edge"][0])


def test_a_failed_fold_is_a_table_row_with_its_error_and_no_bars(run):
    result, _, _ = run
    lost = result.folds[1].number
    failed = [
        replace(r, predictions=None, metrics={}, version=None, error="RuntimeError: boom")
        if r.fold.number == lost
        else r
        for r in result.results
    ]
    preds = result.predictions[result.predictions["fold"] != lost]
    broken = replace(result, results=failed, predictions=preds)
    layout, _ = walk_forward_layout(broken)
    (table,) = [m for m in layout.references() if isinstance(m, DataTable)]
    row = list(table.source.data["fold"]).index(lost)
    assert table.source.data["error"][row] == "RuntimeError: boom"
    assert table.source.data["gate"][row] == "-" and table.source.data["bars"][row] == 0
    assert "error" in [c.field for c in table.columns]
    (labels,) = [m for m in layout.references() if isinstance(m, LabelSet)]
    assert f"fold {lost}" not in list(labels.source.data["text"])  # no bars: no line
    (bars,) = [s for s in _sources(layout) if "hit" in s.data]
    assert lost not in set(bars.data["fold"])
