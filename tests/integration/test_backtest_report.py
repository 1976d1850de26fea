"""Backtest charts a trader can read: ``backtest_figure``/``plot_backtest`` and backtrader's own
``cerebro.plot()`` of the ML indicators.

The figures are checked for structure (axes, line labels and order, title, legend, shading);
``plot_backtest`` is also rendered to PNG.
"""

from __future__ import annotations

from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection

from atb_strategies.backtest.report import backtest_figure, format_summary, plot_backtest
from atb_strategies.backtest.runner import BacktestResult, run_backtest
from atb_strategies.data.feeds import make_feed
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import REPO, BundleFactory, synthetic_candles

GAP_AT = 500


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    make_bundle()
    return str(tmp_path / "models")


@pytest.fixture
def candles() -> pd.DataFrame:
    frame = synthetic_candles(1500)
    return frame.drop(frame.index[GAP_AT])


@pytest.fixture
def busy(registry, candles) -> BacktestResult:
    """Hundreds of trades: enter whenever flat, exit on any negative prediction."""
    return run_backtest(
        candles, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=registry, long_threshold=-1.0
    )


def _figure(result: BacktestResult, candles: pd.DataFrame, **kwargs):
    return backtest_figure(result, candles, result.predictions["predicted_price"], **kwargs)


def _labels(ax) -> list[str]:
    return [str(a.get_label()) for a in ax.get_children() if not str(a.get_label()).startswith("_")]


def _legend(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_backtest_figure_with_many_trades_shades_position_instead_of_markers(busy, candles):
    assert len(busy.trades) > 100
    fig = _figure(busy, candles)

    price = fig.axes[0]
    assert not [c for c in price.collections if isinstance(c, PathCollection)]  # no markers
    (long,) = [c for c in price.collections if c.get_label() == "long position"]
    assert isinstance(long, PolyCollection)
    # one rectangle per run of bars in a position, together as long as the exposure
    exposed = busy.equity["long"].to_numpy()
    runs = int(np.count_nonzero(np.diff(np.concatenate(([0], exposed.astype(int)))) == 1))
    assert len(long.get_paths()) == runs
    widths = sum(np.ptp(path.vertices[:, 0]) for path in long.get_paths())
    index = busy.equity.index
    held = (index[1:].append(index[-1:] + pd.Timedelta("1h")) - index)[exposed]  # to next bar
    assert widths == pytest.approx(held.sum() / pd.Timedelta("1D"), rel=1e-9)
    assert "long position" in _legend(price) and "entry" not in _legend(price)
    assert f"{len(busy.trades):,} closed trades, open position shaded" in price.get_title("left")


def test_backtest_figure_with_few_trades_keeps_entry_and_exit_markers(busy, candles):
    fig = _figure(busy, candles, max_markers=10_000)

    price = fig.axes[0]
    markers = {c.get_label(): c for c in price.collections if isinstance(c, PathCollection)}
    entries = [o for o in busy.orders if o["role"] == "entry"]
    assert len(markers["entry"].get_offsets()) == len(entries)
    assert len(markers["exit"].get_offsets()) == len(busy.orders) - len(entries)
    assert {"entry", "exit"} <= set(_legend(price))


def test_backtest_figure_draws_close_over_the_prediction(busy, candles):
    fig = _figure(busy, candles)

    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    close, predicted = lines["close"], lines["predicted close (made a bar before)"]
    assert close.get_zorder() > predicted.get_zorder()
    assert _legend(fig.axes[0])[:2] == ["close", "predicted close (made a bar before)"]
    # each prediction is drawn at the bar it predicts, next to that bar's close
    made_at = busy.predictions["predicted_price"].dropna().index[0]
    x = pd.DatetimeIndex(pd.to_datetime(predicted.get_xdata()))
    y = np.asarray(predicted.get_ydata(), dtype=float)
    target = made_at + pd.Timedelta("1h")
    assert y[x.get_loc(target)] == busy.predictions.loc[made_at, "predicted_price"]


def test_backtest_figure_puts_strategy_and_buy_and_hold_in_percent_with_aligned_zero(busy, candles):
    fig = _figure(busy, candles)

    ret = fig.axes[1]
    (strategy,) = [line for line in ret.get_lines() if line.get_label() == "strategy"]
    value = busy.equity["value"]
    np.testing.assert_allclose(strategy.get_ydata(), (value / value.iloc[0] - 1) * 100)
    assert "%" in ret.get_ylabel()
    hold_axes = [ax for ax in fig.axes if "buy & hold" in [x.get_label() for x in ax.get_lines()]]
    (hold_ax,) = hold_axes
    (hold,) = [line for line in hold_ax.get_lines() if line.get_label() == "buy & hold"]
    closes = candles["close"]
    np.testing.assert_allclose(hold.get_ydata(), (closes / closes.iloc[0] - 1) * 100)
    assert _legend(ret) == ["strategy", "buy & hold"]
    if hold_ax is not ret:  # its own scale: 0 % at the same height on both axes
        assert "%" in hold_ax.get_ylabel()
        heights = [-lo / (hi - lo) for lo, hi in (ret.get_ylim(), hold_ax.get_ylim())]
        assert heights[0] == pytest.approx(heights[1], abs=1e-9)


def test_backtest_figure_with_gap_shades_bars_without_prediction_in_every_panel(busy, candles):
    fig = _figure(busy, candles)

    price, ret, drawdown = fig.axes[:3]
    for ax in (price, ret, drawdown):
        (gap,) = [c for c in ax.collections if c.get_label() == "no prediction (gap)"]
        (warm,) = [c for c in ax.collections if c.get_label() == "no prediction (warm-up)"]
        (span,) = gap.get_paths()  # the bars after the gap, one run
        gap_bars = busy.summary["no_prediction"]["gap"]["bars"]
        assert np.ptp(span.vertices[:, 0]) == pytest.approx(gap_bars / 24, rel=1e-6)
        assert len(warm.get_paths()) == 1
    assert "no prediction (gap)" in _legend(price)
    assert "no prediction on" in price.get_title("left") and "rows span a gap" in price.get_title(
        "left"
    )


def test_backtest_figure_title_names_strategy_model_and_period(busy, candles):
    fig = _figure(busy, candles)

    title = fig.get_suptitle()
    key = busy.summary["model_key"]
    assert title.splitlines()[0] == "MlBasic on BTCUSDT 1h"
    assert f"model {key}" in title
    assert f"{candles.index[0]:%Y-%m-%d %H:%M} to {candles.index[-1]:%Y-%m-%d %H:%M}" in title
    assert f"({len(candles):,} bars)" in title
    # a title of the caller's own comes first; the model is not repeated when it names it
    mine = _figure(busy, candles, title=f"My run - {key}").get_suptitle()
    assert mine.startswith(f"My run - {key}\n") and mine.count(key) == 1


def test_plot_backtest_writes_a_png_chart(busy, candles, tmp_path):
    path = plot_backtest(
        busy, candles, tmp_path / "deep" / "chart.png", busy.predictions["predicted_price"]
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1540, 990)


def test_format_summary_without_gaps_prints_zero_bars_without_prediction(registry):
    frame = synthetic_candles(700)
    result = run_backtest(
        frame, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=registry, start=frame.index[400]
    )
    text = format_summary(result.summary)
    assert "No prediction          0 of 300 bars (0.00 %)" in text
    assert "Gaps in the candles" not in text


# ---------------------------------------------------------------- backtrader's own cerebro.plot()


@pytest.fixture
def agg_pyplot():
    """Agg backend and pyplot imported before backtrader.plot (which selects TkAgg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_cerebro_plot_with_mlbasic_draws_return_and_confidence_on_own_axes_named_by_model(
    registry, candles, agg_pyplot, tmp_path
):
    cerebro = bt.Cerebro()
    cerebro.adddata(make_feed(candles.iloc[:700], timeframe="1h"), name="BTCUSDT")
    cerebro.addstrategy(MlBasic, registry=registry, long_threshold=-1.0)
    (strategy,) = cerebro.run()
    key = strategy.predictions[strategy.data].model_key

    (fig,) = cerebro.plot(iplot=False, volume=False)[0]
    fig.savefig(tmp_path / "bt.png", dpi=60)

    by_line = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            by_line.setdefault(line.get_label().split("\n")[-1], ax)
    ret_ax, conf_ax = by_line["predicted return"], by_line["confidence"]
    assert ret_ax is not conf_ax
    assert ret_ax.get_lines()[0].get_label().endswith("\npredicted return")
    assert not [line for line in ret_ax.get_lines() if "confidence" in line.get_label()]
    (ret_legend,) = [t for t in _legend(ret_ax) if "predicted return" in t]
    assert ret_legend == f"ML prediction ({key})\npredicted return"
    (conf_legend,) = _legend(conf_ax)
    assert conf_legend == f"ML confidence ({key})\nconfidence"
    assert conf_ax.get_ylim()[0] <= 0 and conf_ax.get_ylim()[1] >= 1
    ret_values = np.asarray(by_line["predicted return"].get_lines()[0].get_ydata(), dtype=float)
    assert np.nanmax(np.abs(ret_values)) < 0.5  # its own scale, not a 0..1 axis


# ---------------------------------------------------------------- the real candles


@pytest.mark.realdata
@pytest.mark.slow
def test_backtest_report_with_real_btcusdt_candles_explains_the_gap_and_shades_positions(
    real_candles, tmp_path
):
    candles = real_candles.copy()
    candles.attrs["timeframe"] = "1h"
    result = run_backtest(
        candles,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=str(REPO / "models"),
        long_threshold=0.0002,
    )

    summary = result.summary
    assert summary["trades"] > 1000
    # one missing candle (2023-03-24 13:00): the shipped model reads 287 rows per prediction
    assert summary["gaps"] == [
        {"after": "2023-03-24 12:00:00", "resumes": "2023-03-24 14:00:00", "missing_bars": 1}
    ]
    assert {code: v["bars"] for code, v in summary["no_prediction"].items()} == {
        "warm_up": 286,
        "gap": 286,
    }
    skips = [d for d in result.decisions if d["action"] == "skip"]
    assert len(skips) == 286 and {d["reason"] for d in skips} == {
        "no prediction: its rows span a gap in the candles"
    }
    fig = _figure(result, candles)
    price = fig.axes[0]
    assert not [c for c in price.collections if isinstance(c, PathCollection)]
    assert {"long position", "no prediction (gap)", "no prediction (warm-up)"} <= set(
        _legend(price)
    )
    fig.savefig(tmp_path / "chart.png", dpi=60)
