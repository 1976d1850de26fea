"""Backtest pictures that tell the truth (issue 22): the chart PNG (``backtest.chart``), the
series behind it (``backtest.chart_data``), ``report.html`` (``backtest.html_report``) and
``trades.csv`` with each trade's exit price and reason.

Real backtests of a real ONNX bundle on seeded synthetic candles; the figures are checked for
what they draw (data of each line, labels, colours), not for pixels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba

from atb_strategies.backtest.chart import STATE_COLORS, backtest_figure, plot_backtest
from atb_strategies.backtest.chart_data import chart_data, held_return
from atb_strategies.backtest.html_report import html_layout, write_html_report
from atb_strategies.backtest.report import write_trades
from atb_strategies.backtest.runner import BacktestResult, run_backtest
from atb_strategies.cli.main import cli
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import BundleFactory, synthetic_candles

GAP_AT = 500
EXIT_REASONS = {"signal", "guard_flatten", "stop_loss", "take_profit", "kill_switch_flatten"}


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    make_bundle()
    return str(tmp_path / "models")


@pytest.fixture
def candles() -> pd.DataFrame:
    frame = synthetic_candles(1500)
    return frame.drop(frame.index[GAP_AT])


def _run(candles: pd.DataFrame, registry: str, **params) -> BacktestResult:
    return run_backtest(
        candles, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=registry, **params
    )


@pytest.fixture
def busy(registry, candles) -> BacktestResult:
    """Hundreds of trades: enter whenever flat, exit on any negative prediction."""
    return _run(candles, registry, long_threshold=-1.0)


def _axes(fig) -> dict[str, object]:
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label()}


def _legend(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def _line(ax, label: str):
    (line,) = [x for x in ax.get_lines() if x.get_label() == label]
    return line


# ---------------------------------------------------------------- trades.csv


def test_trades_carry_the_exit_price_and_reason_of_the_order_that_closed_them(registry, candles):
    result = _run(candles, registry, long_threshold=0.0, stop_loss=0.002, take_profit=0.002)

    reasons = {t["exit_reason"] for t in result.trades}
    assert {"stop_loss", "take_profit"} <= reasons <= EXIT_REASONS
    fills = {(o["time"], o["role"]): o["price"] for o in result.orders if o["role"] != "entry"}
    for trade in result.trades:
        role = (
            "exit" if trade["exit_reason"] in ("signal", "guard_flatten") else trade["exit_reason"]
        )
        assert trade["exit_price"] == fills[(trade["closed"], role)]
        # the P&L is the size times the move from entry to exit
        move = trade["exit_price"] - trade["entry_price"]
        assert trade["pnl"] == pytest.approx(trade["size"] * move, rel=1e-9, abs=1e-9)


def test_a_trade_open_at_the_end_is_written_last_with_end_of_data(busy, candles, tmp_path):
    assert busy.equity["exposed"].iloc[-1]  # enters whenever flat: holding at the end
    (still,) = busy.open_trades
    last_close = float(candles["close"].iloc[-1])
    assert still["exit_reason"] == "end_of_data" and still["exit_price"] == last_close
    assert still["pnl"] == pytest.approx(still["size"] * (last_close - still["entry_price"]))
    assert busy.summary["trades"] == len(busy.trades)  # closed trades only in the summary

    paths = write_trades(busy, tmp_path)
    table = pd.read_csv(paths["trades_csv"])
    assert len(table) == len(busy.trades) + 1
    assert {"exit_price", "exit_reason"} <= set(table.columns)
    assert table["exit_reason"].iloc[-1] == "end_of_data"
    assert set(table["exit_reason"].iloc[:-1]) <= EXIT_REASONS
    assert json.loads(paths["trades_json"].read_text())[-1]["exit_reason"] == "end_of_data"


# ---------------------------------------------------------------- the series behind the charts


def test_buy_and_hold_returns_never_go_below_minus_100_percent():
    crash = pd.Series([100.0, 60.0, 3.0, 0.5], index=pd.date_range("2024", periods=4, freq="h"))
    assert held_return(crash, 1.0).tolist() == pytest.approx([0.0, -40.0, -97.0, -99.5])
    assert held_return(crash, 0.1).tolist() == pytest.approx([0.0, -4.0, -9.7, -9.95])


def test_chart_data_scales_buy_and_hold_to_the_strategys_invested_fraction(busy, candles):
    data = chart_data(busy, candles)

    share = busy.summary["invested_fraction"]
    assert 0 < share < 1 and data.invested_fraction == share
    close = candles["close"].loc[busy.equity.index]
    np.testing.assert_allclose(data.hold_return, (close / close.iloc[0] - 1) * 100)
    np.testing.assert_allclose(data.hold_scaled_return, share * (close / close.iloc[0] - 1) * 100)
    value = busy.equity["value"]
    np.testing.assert_allclose(data.strategy_return, (value / value.iloc[0] - 1) * 100)


def test_the_error_band_at_a_bar_reads_no_later_close(busy, candles):
    cut = 900
    later = candles.copy()
    later.iloc[cut + 1 :, later.columns.get_loc("close")] *= 1.5  # a different future
    before, after = chart_data(busy, candles), chart_data(busy, later)

    upto = busy.equity.index[cut]
    assert before.error_band.loc[:upto].notna().sum() > 100
    pd.testing.assert_series_equal(before.error_band.loc[:upto], after.error_band.loc[:upto])
    pd.testing.assert_series_equal(
        before.predicted_close_band.loc[:upto], after.predicted_close_band.loc[:upto]
    )
    assert not before.error_band.loc[upto:].equals(after.error_band.loc[upto:])


# ---------------------------------------------------------------- the PNG chart


def test_the_chart_has_one_panel_per_quantity_in_order(busy, candles):
    fig = backtest_figure(busy, candles)

    assert list(_axes(fig)) == [
        "price",
        "prediction",
        "strategy return",
        "buy & hold return",
        "drawdown",
        "timeline",
    ]


def test_the_predicted_close_is_drawn_in_its_own_colour_at_the_bar_it_predicts(busy, candles):
    price = _axes(backtest_figure(busy, candles))["price"]

    predicted = _line(price, "predicted close (made 1 bar before)")
    close = _line(price, "close")
    assert to_rgba(predicted.get_color()) != to_rgba(close.get_color())
    assert predicted.get_linewidth() > close.get_linewidth()  # shows around the close line
    made_at = busy.predictions["predicted_price"].dropna().index[0]
    x = pd.DatetimeIndex(pd.to_datetime(predicted.get_xdata()))
    y = np.asarray(predicted.get_ydata(), dtype=float)
    assert (
        y[x.get_loc(made_at + pd.Timedelta("1h"))]
        == busy.predictions.loc[made_at, "predicted_price"]
    )
    assert "prediction error band (RMS of 168 bars)" in _legend(price)


def test_the_prediction_panel_draws_the_predicted_return_and_the_thresholds(registry, candles):
    result = _run(
        candles,
        registry,
        long_threshold=0.0005,
        allow_shorts=True,
        short_threshold=0.0005,
        exit_threshold=0.001,
    )
    ax = _axes(backtest_figure(result, candles))["prediction"]

    line = _line(ax, "predicted return")
    expected = result.predictions["predicted_return"].reindex(result.equity.index) * 100
    np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
    levels = {
        x.get_label(): x.get_ydata()[0] for x in ax.get_lines() if x.get_label() != line.get_label()
    }
    assert levels == {
        "long entry > 0.05 %": pytest.approx(0.05),
        "short entry < -0.05 %": pytest.approx(-0.05),
        "exit long < -0.1 %": pytest.approx(-0.1),
        "exit short > 0.1 %": pytest.approx(0.1),
    }
    assert set(levels) <= set(_legend(ax))


def test_strategy_and_buy_and_hold_each_get_an_axis_in_one_unit(busy, candles):
    axes = _axes(backtest_figure(busy, candles))
    data = chart_data(busy, candles)

    ret, hold = axes["strategy return"], axes["buy & hold return"]
    assert [x.get_label() for x in ret.get_lines()][1:] == [
        f"buy & hold of {100 * data.invested_fraction:.2g} % of the capital (the strategy's "
        "average invested)",
        "strategy",
    ]
    np.testing.assert_allclose(_line(ret, "strategy").get_ydata(), data.strategy_return)
    np.testing.assert_allclose(_line(hold, "buy & hold").get_ydata(), data.hold_return)
    for ax in (ret, hold):
        assert "%" in ax.get_ylabel() and ax.get_ylim()[0] > -100
    fig = ret.get_figure()
    assert len(fig.axes) == len(axes)  # no twin axis: every axis holds one quantity


def test_positions_are_a_thin_timeline_row_and_markers_come_on_demand(busy, candles):
    fig = backtest_figure(busy, candles)
    price, timeline = _axes(fig)["price"], _axes(fig)["timeline"]

    assert len(busy.trades) > 100
    assert not [c for c in price.collections if isinstance(c, PathCollection)]  # no markers
    assert "position" in [t.get_text() for t in timeline.get_yticklabels()]
    long = [c for c in timeline.collections if c.get_label().startswith("long position")]
    (long,) = long
    assert long.get_label() == f"long position ({int(busy.equity['long'].sum()):,} bars)"
    exposed = busy.equity["long"].to_numpy().astype(int)
    runs = int(np.count_nonzero(np.diff(np.concatenate(([0], exposed))) == 1))
    assert len(long.get_paths()) == runs
    assert "--markers to mark" in price.get_title("left")

    for forced in (
        backtest_figure(busy, candles, markers=True),
        backtest_figure(busy, candles, max_markers=10_000),
    ):
        marks = {
            c.get_label(): c
            for c in _axes(forced)["price"].collections
            if isinstance(c, PathCollection)
        }
        entries = [o for o in busy.orders if o["role"] == "entry"]
        assert len(marks["entry"].get_offsets()) == len(entries)
        assert len(marks["exit"].get_offsets()) == len(busy.orders) - len(entries)


def test_each_guard_gets_its_own_row_colour_and_legend_entry(busy, candles):
    decisions = [dict(d) for d in busy.decisions]
    decided = [d for d in decisions if d["action"] != "skip"]
    for d in decided[100:400]:
        d["reason"] = "model older than max_model_age 30d (31.0 days past 2024-01-01 00:00)"
    for d in decided[300:350]:
        d["reason"] = (d["reason"] or "") + "; inputs drifted: close PSI 0.4 > 0.25"
    busy.decisions = decisions
    timeline = _axes(backtest_figure(busy, candles))["timeline"]

    rows = [t.get_text() for t in timeline.get_yticklabels()]
    assert {"model-age guard", "drift guard"} <= set(rows)
    shades = {c.get_label().split(" (")[0]: c for c in timeline.collections}
    age, drift = shades["model-age guard fired"], shades["drift guard fired"]
    assert len(age.get_paths()) == 1 and len(drift.get_paths()) == 1
    assert to_rgba(STATE_COLORS["model-age guard fired"]) == tuple(age.get_facecolor()[0])
    assert tuple(age.get_facecolor()[0]) != tuple(drift.get_facecolor()[0])
    legend = _legend(timeline)
    assert "model-age guard fired (300 bars)" in legend and "drift guard fired (50 bars)" in legend


def test_no_prediction_and_in_sample_are_labelled_rows_not_washes(busy, candles):
    timeline = _axes(backtest_figure(busy, candles))["timeline"]

    assert "no prediction" in [t.get_text() for t in timeline.get_yticklabels()]
    gap_bars = busy.summary["no_prediction"]["gap"]["bars"]
    assert f"no prediction (gap) ({gap_bars:,} bars)" in _legend(timeline)
    price = _axes(backtest_figure(busy, candles))["price"]
    assert not [c for c in price.collections if "no prediction" in str(c.get_label())]


def test_the_sentiment_panel_appears_when_the_candles_carry_sentiment(busy, candles):
    with_sentiment = candles.assign(sentiment=np.linspace(10.0, 90.0, len(candles)))

    axes = _axes(backtest_figure(busy, with_sentiment))
    (line,) = axes["sentiment"].get_lines()
    expected = with_sentiment["sentiment"].loc[busy.equity.index]
    np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
    assert "sentiment" not in _axes(backtest_figure(busy, candles))


def test_plot_backtest_writes_a_png_chart(busy, candles, tmp_path):
    path = plot_backtest(busy, candles, tmp_path / "deep" / "chart.png")

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    assert int.from_bytes(data[16:20], "big") == 1540


# ---------------------------------------------------------------- report.html


def test_report_html_is_self_contained_with_every_bar_for_hover(busy, candles, tmp_path):
    from bokeh.models import ColumnDataSource, HoverTool

    path = write_html_report(busy, candles, tmp_path / "r" / "report.html", title="My run")

    page = path.read_text()
    assert "<title>My run</title>" in page
    assert not re.search(r"<script[^>]+src=", page)  # bokeh's JavaScript is inlined: offline
    assert "cdn.bokeh.org" not in page
    layout, heading = html_layout(busy, candles, title="My run")
    sources = [m for m in layout.references() if isinstance(m, ColumnDataSource)]
    (bars,) = [s for s in sources if "predicted_return" in s.data]
    assert len(bars.data["time"]) == len(busy.equity)  # not downsampled
    decided = {d["action"] for d in busy.decisions}
    assert set(bars.data["action"]) - {""} == decided
    filled = sum(text.count("@") for text in bars.data["orders"])
    assert filled == len(busy.orders)
    tips = [dict(h.tooltips) for h in layout.references() if isinstance(h, HoverTool)]
    bar_tip = next(t for t in tips if "predicted close" in t)
    assert {"close", "predicted return", "decision", "reason", "orders"} <= set(bar_tip)
    assert heading.startswith("My run\n")


# ---------------------------------------------------------------- atb backtest


def test_atb_backtest_writes_chart_report_and_trades_with_exits(registry, tmp_path):
    out = tmp_path / "out"
    args = [
        "backtest", "ml_basic", "--synthetic", "--bars", "700", "--registry", registry,
        "--long-threshold", "-1", "--no-baselines", "--no-progress", "--markers", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'} (interactive, works offline)" in result.stdout
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert "Bokeh" in (out / "report.html").read_text()[:2_000_000]
    table = pd.read_csv(out / "trades.csv")
    assert len(table) > 5 and table["exit_price"].notna().all()
    assert set(table["exit_reason"]) <= EXIT_REASONS | {"end_of_data"}


@pytest.mark.slow
def test_a_trade_closed_by_the_model_age_guard_says_guard_flatten():
    shipped = str(Path(__file__).resolve().parents[2] / "models")
    market = synthetic_candles(1000, seed=3, start="2024-10-10")  # the model saw up to 09-29
    result = run_backtest(
        market,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=shipped,
        long_threshold=-1.0,  # long whenever flat...
        exit_threshold=1.0,  # ...and the model never exits
        max_model_age="30d",
        age_action="flatten",
        stop_loss=0,
        take_profit=0,
    )

    (trade,) = result.trades  # held from the first prediction until the guard closed it
    limit = pd.Timestamp("2024-09-29 11:00") + pd.Timedelta(days=30)
    assert trade["exit_reason"] == "guard_flatten"
    assert limit < pd.Timestamp(trade["closed"]) <= limit + pd.Timedelta(hours=3)
    (fill,) = [o for o in result.orders if o["role"] == "exit"]
    assert trade["exit_price"] == fill["price"] and fill["time"] == trade["closed"]
