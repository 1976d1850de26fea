"""The model-age guard: a model trading long after the data it was trained on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.strategies.ml_basic import MlBasic

pytestmark = pytest.mark.slow  # many full backtests in every backtrader mode

SHIPPED = str(Path(__file__).resolve().parents[2] / "models")
SEEN_UNTIL = pd.Timestamp("2024-09-29 11:00:00")  # the shipped basic model's lineage


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return generate_ohlcv(2500, timeframe="1h", seed=3, start="2024-09-01")


def _run(market, **params):
    return run_backtest(
        market,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=SHIPPED,
        long_threshold=0.0003,
        **params,
    )


def test_model_age_with_no_entries_enters_nothing_after_the_limit(market):
    free = _run(market)
    guarded = _run(market, max_model_age="30d", age_action="no_entries")
    limit = SEEN_UNTIL + pd.Timedelta(days=30)
    entries = [pd.Timestamp(o["time"]) for o in guarded.orders if o["role"] == "entry"]
    assert entries and max(entries) <= limit + pd.Timedelta(hours=2)
    assert any(pd.Timestamp(o["time"]) > limit for o in free.orders if o["role"] == "entry")
    blocked = [d for d in guarded.decisions if (d.get("reason") or "").startswith("model older")]
    assert blocked and all(pd.Timestamp(d["bar"]) > limit for d in blocked)


def test_model_age_with_warn_trades_as_before_and_logs_once(market, caplog):
    free = _run(market)
    with caplog.at_level("WARNING"):
        warned = _run(market, max_model_age="30d")
    assert len(warned.orders) == len(free.orders)
    assert sum("past the last bar it was trained on" in r.getMessage() for r in caplog.records) == 1


def test_model_age_with_flatten_closes_the_position_at_the_limit(market):
    guarded = _run(market, max_model_age="30d", age_action="flatten", stop_loss=0, take_profit=0)
    limit = SEEN_UNTIL + pd.Timedelta(days=30)
    late = guarded.equity.loc[limit + pd.Timedelta(hours=3) :]
    assert not late["exposed"].any()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"max_model_age": "soon"}, "'max_model_age'"),
        ({"max_model_age": "30d", "age_action": "panic"}, "'age_action'"),
    ],
)
def test_model_age_with_bad_params_raises_one_line(market, params, match):
    with pytest.raises(ConfigurationError, match=match):
        _run(market.iloc[:300], **params)


def test_the_backtest_chart_shades_the_bars_where_a_guard_fired(market):
    from atb_strategies.backtest.chart_data import chart_data
    from atb_strategies.backtest.report import backtest_figure

    guarded = _run(market, max_model_age="30d", age_action="no_entries")
    index = guarded.equity.index
    mask = chart_data(guarded, market).states["model-age guard fired"]
    limit = SEEN_UNTIL + pd.Timedelta(days=30)
    # from the first bar past the limit (open time = decision time - 1h) to the end
    assert mask.any() and not mask[index < limit - pd.Timedelta(hours=1)].any()
    assert mask[index > limit].all()
    fig = backtest_figure(guarded, market)
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert f"model-age guard fired ({int(mask.sum()):,} bars)" in labels
    plain = backtest_figure(_run(market), market)
    assert not [t for t in plain.axes[-1].get_legend().get_texts() if "guard" in t.get_text()]
