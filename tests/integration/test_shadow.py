"""Shadow challengers in a backtest: virtual books that follow the strategy's rules.

The trading model's virtual twin must reproduce backtrader's own book fill for fill (same
entries, stops, take-profits, fees and slippage), so that a challenger's virtual book means
what the champion's real one would; and adding shadows must not change a single real order.
"""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data.feeds import make_feed
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.registry.shared import clear_shared_registries
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.strategies.shadow import SHADOW_COLUMNS, parse_shadows
from tests.conftest import RICH_FEATURES, synthetic_candles

pytestmark = pytest.mark.slow  # runs backtests

V1, V2 = "2026-01-01_1h_v1", "2026-02-01_1h_v2"


@pytest.fixture
def registry(make_bundle, tmp_path):
    clear_shared_registries()
    make_bundle(version=V1, features=RICH_FEATURES[:6], seed=1)
    make_bundle(version=V2, features=RICH_FEATURES[:6], seed=2, promote=False)
    yield str(tmp_path / "models")
    clear_shared_registries()


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return synthetic_candles(2500, seed=21)


def _run(market, registry, **params):
    return run_backtest(
        market,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=registry,
        long_threshold=0.0,
        **params,
    )


@pytest.mark.parametrize("slippage_bps", [0.0, 7.5])
@pytest.mark.parametrize("shorts", [False, True])
def test_the_virtual_twin_reproduces_the_real_book_fill_for_fill(
    market, registry, slippage_bps, shorts
):
    result = _run(
        market,
        registry,
        shadows=[V2],
        slippage_bps=slippage_bps,
        allow_shorts=shorts,
        take_profit=0.01,
        stop_loss=0.01,
    )
    rows = pd.DataFrame(result.strategy.shadow.rows, columns=SHADOW_COLUMNS)
    twin = rows[rows.role == "champion"].set_index("time")
    assert len(result.trades) > 100  # a test of many fills, stops and take-profits
    assert twin["trades"].iloc[-1] == len(result.trades)
    real = result.equity["value"]
    real.index = (real.index + pd.Timedelta(hours=1)).map(pd.Timestamp.isoformat)  # close times
    both = twin["equity"].to_frame("virtual").join(real.rename("real"), how="inner")
    assert len(both) == len(twin)
    np.testing.assert_allclose(both["virtual"], both["real"], rtol=1e-9)
    decisions = pd.DataFrame(result.strategy.decisions).set_index("bar")["action"]
    np.testing.assert_array_equal(twin["action"], decisions.loc[twin.index])


def test_shadows_change_no_real_order_and_a_challenger_trades_its_own_book(market, registry):
    alone = _run(market, registry)
    watched = _run(market, registry, shadows=[V2, f"basic@{V1}"])
    pd.testing.assert_series_equal(alone.equity["value"], watched.equity["value"])
    assert len(alone.strategy.trade_records) == len(watched.strategy.trade_records)
    rows = pd.DataFrame(watched.strategy.shadow.rows)
    keys = rows.groupby("role")["model_key"].unique()
    assert set(keys["shadow"]) == {f"BTCUSDT/basic@{V2}", f"BTCUSDT/basic@{V1}"}
    by_key = rows[rows.role == "shadow"].groupby("model_key")
    final = by_key["equity"].last()
    twin = rows[rows.role == "champion"]["equity"].iloc[-1]
    assert final[f"BTCUSDT/basic@{V1}"] == pytest.approx(twin, rel=1e-12)  # same model
    assert final[f"BTCUSDT/basic@{V2}"] != pytest.approx(twin, rel=1e-6)  # another model
    assert by_key["trades"].last()[f"BTCUSDT/basic@{V2}"] > 50


@pytest.mark.parametrize("spec", ["latest", "basic@asof", "BTCUSDT/basic@v1", ""])
def test_a_shadow_that_is_not_a_pinned_version_raises_one_line(spec):
    with pytest.raises(ConfigurationError, match="pinned versions"):
        parse_shadows([spec], "basic")


def test_parse_shadows_reads_type_at_version():
    (a, b) = parse_shadows(["v9", "sentiment@v2"], "basic")
    assert (a.model_type, a.version, b.model_type, b.version) == ("basic", "v9", "sentiment", "v2")


class _Values(bt.Analyzer):
    def start(self) -> None:
        self.values: dict[str, float] = {}

    def next(self) -> None:
        stamp = bt.num2date(self.strategy.data.datetime[0]).isoformat()
        self.values[stamp] = self.strategy.broker.getvalue()


def test_the_virtual_twin_reproduces_a_broker_that_keeps_slippage_inside_the_bar(market, registry):
    """``PaperBroker`` sets slippage with ``slip_match=True, slip_out=False``: slipped fills
    stay inside the bar's range and a take-profit never fills worse than its limit."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(make_feed(market, name="BTCUSDT"))
    cerebro.broker.setcash(10_000.0)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.broker.set_slippage_perc(
        0.003, slip_open=True, slip_limit=True, slip_match=True, slip_out=False
    )
    cerebro.addstrategy(
        MlBasic,
        registry=registry,
        shadows=[V2],
        long_threshold=0.0,
        allow_shorts=True,
        take_profit=0.004,
        stop_loss=0.004,
    )
    cerebro.addanalyzer(_Values, _name="values")
    strat = cerebro.run()[0]
    rows = pd.DataFrame(strat.shadow.rows)
    twin = rows[rows.role == "champion"].set_index("time")["equity"]
    real = pd.Series(strat.analyzers.values.values).loc[twin.index]
    assert len(strat.trade_records) > 100
    np.testing.assert_allclose(twin.to_numpy(), real.to_numpy(), rtol=1e-9)


def test_shadow_books_decide_once_per_bar_when_another_feed_moves_between_bars():
    """A sentiment feed published at :30 moves the strategy between two price bars: the books
    must neither decide twice on one bar nor fill an order on the bar it was decided."""
    from pathlib import Path

    from atb_strategies.data.feeds import make_sentiment_feed
    from atb_strategies.data.synthetic import generate_ohlcv
    from atb_strategies.sentiment import generate_sentiment
    from atb_strategies.strategies.ml_sentiment import MlSentiment

    clear_shared_registries()
    candles = generate_ohlcv(1500, seed=21, start_price=2000.0)
    sentiment = generate_sentiment(candles, seed=21)
    sentiment.index = sentiment.index + pd.Timedelta(minutes=30)  # off the bar closes
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(make_feed(candles.loc[sentiment.index[0] :]), name="ETHUSDT")
    cerebro.adddata(make_sentiment_feed(sentiment), name="fng")
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addanalyzer(_Values, _name="values")
    cerebro.addstrategy(
        MlSentiment,
        sentiment_feed="fng",
        shadows=["2026-11-26_1h_v1"],
        long_threshold=0.0,
        registry=str(Path(__file__).resolve().parents[2] / "models"),
    )
    strat = cerebro.run()[0]
    rows = pd.DataFrame(strat.shadow.rows)
    assert not rows.duplicated(["role", "model_key", "time"]).any()
    assert not pd.DataFrame(strat.decisions).duplicated(["bar"]).any()
    twin = rows[rows.role == "champion"].set_index("time")["equity"]
    real = pd.Series(strat.analyzers.values.values).loc[twin.index]
    assert len(strat.trade_records) > 20
    np.testing.assert_allclose(twin.to_numpy(), real.to_numpy(), rtol=1e-9)
