"""Backtest reports a trader can read: the printed summary, backtrader's own ``cerebro.plot()``
of the ML indicators, and the chart on the real candles (the chart's panels are tested in
``test_backtest_charts.py``).
"""

from __future__ import annotations

from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from atb_strategies.backtest.report import backtest_figure, format_summary
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
    price, timeline = fig.axes[0], fig.axes[-1]
    assert not [c for c in price.collections if isinstance(c, PathCollection)]
    shown = {text.split(" (")[0] for text in _legend(timeline)}
    assert {"long position", "no prediction", "in-sample"} <= shown
    fig.savefig(tmp_path / "chart.png", dpi=60)
