"""atb_strategies plugged into ordinary backtrader setups, with real cerebro runs.

Each test builds what a backtrader user already has (several feeds, resampling, the optimiser,
analyzers, ``exactbars``, ``cheat_on_open``, ``cerebro.plot``, their own ``bt.Strategy``) and
checks that the ML strategies and ``MlPrediction`` work inside it, or fail before the first bar
with a message that says what to fix. The tiny ONNX models have a ``log_return`` target scaled
so that the strategies really trade; every test that compares outcomes checks that trades happen.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path
from typing import Any, ClassVar

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.bundle.format import FeatureSpec
from atb_strategies.config import PredictionConfig
from atb_strategies.data.feeds import SentimentData, make_feed
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import (
    AtbError,
    ConfigurationError,
    FeatureSchemaError,
    ModelNotFoundError,
)
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.strategies.ml_basic import MlBasic, create_ml_basic_strategy
from atb_strategies.strategies.ml_sentiment import MlSentiment
from tests.conftest import RICH_FEATURES, BundleFactory, linear_onnx

SEQ = 16
N_FEATURES = 3  # make_bundle's default features: RICH_FEATURES[:3]
BTC_KEY = "BTCUSDT/basic@2026-01-01_1h_v1"
ETH_KEY = "ETHUSDT/basic@2026-01-01_1h_v1"
SENTIMENT_FEATURES = (
    *RICH_FEATURES[:3],
    FeatureSpec("fear_greed", ("sentiment",), ({"op": "minmax_scale", "min": 0.0, "max": 100.0},)),
)


def tiny_model(seed: int, n_features: int = N_FEATURES) -> bytes:
    """scale 0.001: predicted log returns around +0.002 +- 0.0015 on ``generate_ohlcv`` data,
    so roughly half the bars pass the default 0.002 entry threshold and some go negative."""
    return linear_onnx(SEQ, n_features, seed=seed, scale=0.001)


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    """BTCUSDT and ETHUSDT 1h models (different weights) in one registry; a plain str path."""
    make_bundle(symbol="BTCUSDT", model_bytes=tiny_model(seed=0))
    make_bundle(symbol="ETHUSDT", model_bytes=tiny_model(seed=4))
    return str(tmp_path / "models")


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return generate_ohlcv(800, timeframe="1h", seed=1)


@pytest.fixture(scope="module")
def eth() -> pd.DataFrame:
    return generate_ohlcv(800, timeframe="1h", seed=2, start_price=2_000.0)


class RecordingMlBasic(MlBasic):
    """``MlBasic`` that keeps every order notification and counts ``prenext``/``next`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[tuple[str, str, str, dict[str, Any]]] = []
        self.calls = 0

    def prenext(self) -> None:
        self.calls += 1

    def next(self) -> None:
        self.calls += 1
        super().next()

    def notify_order(self, order: bt.Order) -> None:
        super().notify_order(order)
        self.orders.append(
            (order.data._name, order.ordtypename(), order.getstatusname(), dict(order.info))
        )


class NeverStartsMlBasic(MlBasic):
    """Records, on the class, whether any bar reached the strategy (it must not)."""

    bars_seen: ClassVar[list[str]] = []

    def prenext(self) -> None:
        self.bars_seen.append("prenext")

    def next(self) -> None:
        self.bars_seen.append("next")


class NeverStartsMlSentiment(MlSentiment):
    bars_seen: ClassVar[list[str]] = []

    def prenext(self) -> None:
        self.bars_seen.append("prenext")

    def next(self) -> None:
        self.bars_seen.append("next")


class MyStrategy(bt.Strategy):
    """A user's own strategy: long when the model predicts a rise, flat when it predicts a fall."""

    params = (("threshold", 0.002), ("registry", None))

    def __init__(self) -> None:
        self.pred = MlPrediction(
            self.data, symbol="BTCUSDT", model_type="basic", registry=self.p.registry
        )
        # an ordinary backtrader indicator on top of the model's line
        self.smooth = bt.indicators.SMA(self.pred.predicted_return, period=5)
        self.seen: list[tuple[Any, float, float]] = []
        self.closed = 0

    def next(self) -> None:
        self.seen.append(
            (
                bt.num2date(self.data.datetime[0]),
                self.pred.predicted_return[0],
                self.smooth[0],
            )
        )
        if not self.position and self.pred.predicted_return[0] > self.p.threshold:
            self.buy(size=1)
        elif self.position and self.pred.predicted_return[0] < 0:
            self.close()

    def notify_trade(self, trade: bt.Trade) -> None:
        self.closed += trade.isclosed


class WorkerPid(bt.Analyzer):
    """Reports the process the strategy ran in (optimiser workers are other processes)."""

    def stop(self) -> None:
        self.rets["pid"] = os.getpid()


def unique_name(prefix: str, registry: str) -> str:
    """A strategy-class name per test: generated classes are registered process-wide by name."""
    return prefix + "_" + re.sub(r"\W", "_", Path(registry).parent.name)


def cerebro_with(*feeds: tuple[pd.DataFrame, str], **kwargs: Any) -> bt.Cerebro:
    cerebro = bt.Cerebro(**kwargs)
    for frame, name in feeds:
        cerebro.adddata(make_feed(frame, name=name))
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.setcommission(commission=0.001)
    return cerebro


def completed_entries(strategy: RecordingMlBasic, symbol: str | None = None) -> list[tuple]:
    return [
        o
        for o in strategy.orders
        if o[2] == "Completed" and o[3].get("role") == "entry" and symbol in (None, o[0])
    ]


# ---------------------------------------------------------------- several feeds, several models


def test_mlbasic_with_btc_and_eth_feeds_uses_each_feeds_own_model(registry, btc, eth) -> None:
    cerebro = cerebro_with((btc, "BTCUSDT"), (eth, "ETHUSDT"), stdstats=False)
    cerebro.addstrategy(RecordingMlBasic, registry=registry)
    (strategy,) = cerebro.run()

    keys = {data._name: pred.model_key for data, pred in strategy.predictions.items()}
    assert keys == {"BTCUSDT": BTC_KEY, "ETHUSDT": ETH_KEY}
    for symbol, key in keys.items():
        entries = completed_entries(strategy, symbol)
        assert len(entries) >= 3, symbol
        assert {o[3]["model_key"] for o in strategy.orders if o[0] == symbol} == {key}
    records = {r["symbol"] for r in strategy.trade_records}
    assert records == {"BTCUSDT", "ETHUSDT"}
    assert {r["model_key"] for r in strategy.trade_records} == {BTC_KEY, ETH_KEY}

    # each feed's predictions come from its own model on its own candles
    engine = PredictionEngine(PredictionConfig(model_registry_path=Path(registry)))
    btc_pred, eth_pred = strategy.predictions.values()
    assert btc_pred.predicted_return[0] == pytest.approx(
        engine.predict(btc, symbol="BTCUSDT").predicted_return, abs=1e-12
    )
    assert eth_pred.predicted_return[0] == pytest.approx(
        engine.predict(eth, symbol="ETHUSDT").predicted_return, abs=1e-12
    )


# ---------------------------------------------------------------- timeframes and resampling


@pytest.fixture(scope="module")
def btc_15m() -> pd.DataFrame:
    return generate_ohlcv(4 * 600, timeframe="15m", seed=3)


class BarRecordingMlBasic(RecordingMlBasic):
    """Also records the (resampled) bars the strategy sees."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[tuple[Any, ...]] = []

    def _bar(self) -> None:
        d = self.data
        self.bars.append(
            (bt.num2date(d.datetime[0]), d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0])
        )

    def prenext(self) -> None:
        self._bar()
        super().prenext()

    def next(self) -> None:
        self._bar()
        super().next()


def bars_frame(strategy: BarRecordingMlBasic) -> pd.DataFrame:
    columns = ["timestamp", "open", "high", "low", "close", "volume"]
    return pd.DataFrame(strategy.bars, columns=columns).set_index("timestamp")


def test_resampledata_with_15m_candles_to_1h_feeds_the_1h_model(registry, btc_15m) -> None:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.resampledata(
        make_feed(btc_15m), name="BTCUSDT", timeframe=bt.TimeFrame.Minutes, compression=60
    )
    cerebro.addstrategy(BarRecordingMlBasic, registry=registry)
    (strategy,) = cerebro.run()

    pred = strategy.predictions[strategy.data]
    assert pred.model_key == BTC_KEY
    bars = bars_frame(strategy)
    assert len(bars) in (600, 601)
    assert (bars.index.to_series().diff().iloc[1:] == pd.Timedelta(hours=1)).all()
    assert len(completed_entries(strategy)) >= 3
    # the model saw exactly the resampled hourly bars: every decision's prediction equals the
    # engine's on the bars the strategy was shown
    engine = PredictionEngine(PredictionConfig(model_registry_path=Path(registry)))
    series = engine.predict_series(bars)
    decided = pd.Series(
        [d["predicted_return"] for d in strategy.decisions],
        index=pd.DatetimeIndex([d["bar"] for d in strategy.decisions]),
    )
    assert len(decided) == len(series) > 500
    np.testing.assert_allclose(
        decided.to_numpy(), series.loc[decided.index, "predicted_return"], rtol=1e-9, atol=1e-12
    )


def test_resampledata_with_open_time_15m_candles_matches_exchange_1h_candles(
    registry, btc_15m
) -> None:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.resampledata(
        make_feed(btc_15m), name="BTCUSDT", timeframe=bt.TimeFrame.Minutes, compression=60
    )
    cerebro.addstrategy(BarRecordingMlBasic, registry=registry)
    (strategy,) = cerebro.run()
    seen = bars_frame(strategy)
    hourly = btc_15m.resample("1h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    np.testing.assert_allclose(seen["close"].to_numpy()[:50], hourly["close"].to_numpy()[:50])


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        (
            lambda df15, df1h: make_feed(df15),
            r"1h model.*timeframe '15m'|15m.*1h",
        ),
        (
            lambda df15, df1h: bt.feeds.PandasData(dataname=df1h),
            r"timeframe '1d'.*PandasData defaults to daily",
        ),
    ],
    ids=["15m_feed_without_resampling", "pandasdata_default_daily"],
)
def test_mlbasic_with_mismatched_feed_timeframe_raises_before_first_bar(
    registry, btc_15m, btc, feed, message
) -> None:
    NeverStartsMlBasic.bars_seen.clear()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(btc_15m, btc), name="BTCUSDT")
    cerebro.addstrategy(NeverStartsMlBasic, registry=registry)
    with pytest.raises(ModelNotFoundError, match=message):
        cerebro.run()
    assert NeverStartsMlBasic.bars_seen == []


def test_mlbasic_with_15m_candles_declared_as_1h_raises_before_first_bar(registry, btc_15m) -> None:
    NeverStartsMlBasic.bars_seen.clear()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(make_feed(btc_15m, timeframe="1h", name="BTCUSDT"))
    cerebro.addstrategy(NeverStartsMlBasic, registry=registry)
    with pytest.raises(AtbError, match="1h"):
        cerebro.run()
    assert NeverStartsMlBasic.bars_seen == []


# ---------------------------------------------------------------- optimiser


def test_optstrategy_with_two_thresholds_and_two_workers_returns_both_results(
    registry, btc
) -> None:
    cerebro = cerebro_with((btc, "BTCUSDT"), stdstats=False, maxcpus=2)
    cerebro.optstrategy(MlBasic, long_threshold=[0.001, 0.003], registry=[registry])
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    cerebro.addanalyzer(WorkerPid, _name="pid")
    results = cerebro.run()

    by_threshold = {run[0].params.long_threshold: run[0] for run in results}
    assert set(by_threshold) == {0.001, 0.003}
    pids = {r.analyzers.pid.get_analysis()["pid"] for r in by_threshold.values()}
    assert os.getpid() not in pids  # really ran in worker processes
    closed = {
        t: r.analyzers.trades.get_analysis()["total"]["closed"] for t, r in by_threshold.items()
    }
    assert closed[0.001] > 0 and closed[0.003] > 0
    assert all(r.params.registry == registry for r in by_threshold.values())
    # the lower threshold enters more often
    assert closed[0.001] > closed[0.003]


def test_optstrategy_with_factory_class_and_two_workers_returns_both_results(registry, btc) -> None:
    cls = create_ml_basic_strategy(
        unique_name("OptTiny", registry), sequence_length=SEQ, registry=registry, position_size=0.5
    )
    assert cls.__module__ == "atb_strategies.strategies.generated"
    assert pickle.loads(pickle.dumps(cls)) is cls
    cerebro = cerebro_with((btc, "BTCUSDT"), stdstats=False, maxcpus=2)
    cerebro.optstrategy(cls, long_threshold=[0.001, 0.003])
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    cerebro.addanalyzer(WorkerPid, _name="pid")
    results = cerebro.run()

    assert os.getpid() not in {run.analyzers.pid.get_analysis()["pid"] for (run,) in results}

    assert sorted(run[0].params.long_threshold for run in results) == [0.001, 0.003]
    for (run,) in results:
        assert run.params.position_size == 0.5
        assert run.params.sequence_length == SEQ
        assert run.analyzers.trades.get_analysis()["total"]["closed"] > 0


# ---------------------------------------------------------------- analyzers, modes, plotting


def test_mlbasic_with_standard_analyzers_reports_closed_trades(registry, btc) -> None:
    cerebro = cerebro_with((btc, "BTCUSDT"))
    cerebro.addstrategy(RecordingMlBasic, registry=registry)
    cerebro.addanalyzer(
        bt.analyzers.SharpeRatio, _name="sharpe", timeframe=bt.TimeFrame.Days, riskfreerate=0.0
    )
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="drawdown")
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    cerebro.addanalyzer(bt.analyzers.Returns, _name="returns")
    (strategy,) = cerebro.run()

    trades = strategy.analyzers.trades.get_analysis()
    assert trades["total"]["closed"] > 0
    assert trades["total"]["closed"] == len(strategy.trade_records)
    assert sum(r["pnl_net"] for r in strategy.trade_records) == pytest.approx(
        trades["pnl"]["net"]["total"]
    )
    sharpe = strategy.analyzers.sharpe.get_analysis()["sharperatio"]
    assert sharpe is not None and math.isfinite(sharpe)
    drawdown = strategy.analyzers.drawdown.get_analysis()
    assert drawdown["max"]["drawdown"] > 0
    returns = strategy.analyzers.returns.get_analysis()
    assert returns["rtot"] == pytest.approx(math.log(cerebro.broker.getvalue() / 100_000.0))


def test_order_info_with_every_order_carries_model_key_and_predicted_return(registry, btc) -> None:
    cerebro = cerebro_with((btc, "BTCUSDT"), stdstats=False)
    cerebro.addstrategy(RecordingMlBasic, registry=registry)
    (strategy,) = cerebro.run()

    assert len(strategy.orders) >= 10
    roles = set()
    for _symbol, _side, _status, info in strategy.orders:
        assert info["model_key"] == BTC_KEY
        assert math.isfinite(info["predicted_return"])
        roles.add(info["role"])
    assert "entry" in roles and roles <= {"entry", "stop_loss", "take_profit", "exit"}
    for info in (o[3] for o in completed_entries(strategy)):
        assert info["predicted_return"] > 0.002  # long_threshold


def test_mlbasic_with_exactbars_1_trades_like_the_default_run(registry, btc, eth) -> None:
    outcomes = []
    for exactbars in (0, 1):
        cerebro = cerebro_with((btc, "BTCUSDT"), (eth, "ETHUSDT"), stdstats=False)
        cerebro.addstrategy(RecordingMlBasic, registry=registry)
        (strategy,) = cerebro.run(exactbars=exactbars)
        outcomes.append((strategy.trade_records, cerebro.broker.getvalue()))
    assert len(outcomes[0][0]) > 0
    assert outcomes[0] == outcomes[1]


def test_mlbasic_with_cheat_on_open_runs_and_trades(registry, btc) -> None:
    outcomes = []
    for coo in (False, True):
        cerebro = cerebro_with((btc, "BTCUSDT"), stdstats=False, cheat_on_open=coo)
        cerebro.addstrategy(RecordingMlBasic, registry=registry)
        (strategy,) = cerebro.run()
        outcomes.append((strategy.trade_records, cerebro.broker.getvalue()))
    assert len(outcomes[1][0]) > 0
    # MlBasic decides in next(), not next_open(): cheat_on_open changes nothing
    assert outcomes[0] == outcomes[1]


@pytest.fixture
def agg_pyplot():
    """Agg backend and pyplot imported before backtrader.plot (which selects TkAgg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_cerebro_plot_with_agg_backend_saves_png(registry, btc, agg_pyplot, tmp_path) -> None:
    cerebro = cerebro_with((btc.iloc[:300], "BTCUSDT"))
    cerebro.addstrategy(RecordingMlBasic, registry=registry)
    (strategy,) = cerebro.run()
    assert strategy.orders

    figs = cerebro.plot(iplot=False, volume=False)
    (fig,) = figs[0]
    out = tmp_path / "backtest.png"
    fig.savefig(out, dpi=60)
    assert out.is_file()
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    titles = [t.get_text() for ax in fig.axes for t in ax.texts] + [
        line.get_label() for ax in fig.axes for line in ax.get_lines()
    ]
    assert any("pred" in str(t) for t in titles)


# ---------------------------------------------------------------- MlPrediction in a user's strategy


def test_mlprediction_with_users_own_strategy_trades_on_its_lines(registry, btc) -> None:
    runs = []
    for mode in ({"runonce": True}, {"preload": False}):
        cerebro = cerebro_with((btc, "BTCUSDT"))
        cerebro.addstrategy(MyStrategy, registry=registry)
        (strategy,) = cerebro.run(**mode)
        runs.append((strategy, cerebro.broker.getvalue()))
    (strategy, value), (streamed, streamed_value) = runs

    assert strategy.pred.model_key == BTC_KEY
    assert strategy.closed > 0
    assert streamed.seen == strategy.seen and streamed_value == value
    # the strategy starts once MlPrediction (17 bars) and the SMA on it (5 more) are warm
    min_bars = strategy.pred.bundle.pipeline.min_bars
    assert len(strategy.seen) == len(btc) - (min_bars + 4) + 1
    seen = np.array([row[1] for row in strategy.seen])
    smooth = np.array([row[2] for row in strategy.seen])
    np.testing.assert_allclose(smooth[4:], np.convolve(seen, np.ones(5) / 5, "valid"), rtol=1e-12)
    engine = PredictionEngine(PredictionConfig(model_registry_path=Path(registry)))
    when, value, _ = strategy.seen[200]  # a bar's close time (make_feed stamps closes)
    opened = when - pd.Timedelta(hours=1)
    assert value == pytest.approx(
        engine.predict(btc.loc[:opened]).predicted_return, rel=1e-9, abs=1e-12
    )


# ---------------------------------------------------------------- errors before the first bar


def test_mlbasic_with_missing_model_raises_before_first_bar(registry, btc) -> None:
    NeverStartsMlBasic.bars_seen.clear()
    cerebro = cerebro_with((btc, "SOLUSDT"))
    cerebro.addstrategy(NeverStartsMlBasic, registry=registry)
    with pytest.raises(ModelNotFoundError, match=r"SOLUSDT.*Symbols present: BTCUSDT, ETHUSDT"):
        cerebro.run()
    assert NeverStartsMlBasic.bars_seen == []


def test_mlbasic_with_missing_version_raises_naming_it(registry, btc) -> None:
    NeverStartsMlBasic.bars_seen.clear()
    cerebro = cerebro_with((btc, "BTCUSDT"))
    cerebro.addstrategy(NeverStartsMlBasic, registry=registry, version="2099-01-01_1h_v9")
    with pytest.raises(ModelNotFoundError, match=r"no version '2099-01-01_1h_v9'"):
        cerebro.run()
    assert NeverStartsMlBasic.bars_seen == []


@pytest.fixture
def sentiment_registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    make_bundle(
        model_type="sentiment",
        features=SENTIMENT_FEATURES,
        model_bytes=tiny_model(seed=0, n_features=len(SENTIMENT_FEATURES)),
    )
    return str(tmp_path / "models")


def test_mlsentiment_with_feed_lacking_sentiment_raises_naming_column(
    sentiment_registry, btc
) -> None:
    NeverStartsMlSentiment.bars_seen.clear()
    cerebro = cerebro_with((btc, "BTCUSDT"))
    cerebro.addstrategy(NeverStartsMlSentiment, registry=sentiment_registry)
    with pytest.raises(FeatureSchemaError, match=r"(?s)lacks:\n- sentiment\n"):
        cerebro.run()
    assert NeverStartsMlSentiment.bars_seen == []


def test_mlsentiment_with_sentiment_column_feed_trades(sentiment_registry, btc) -> None:
    frame = btc.copy()
    frame["sentiment"] = 50 + 40 * np.sin(np.arange(len(frame)) / 50)
    feed = make_feed(frame, name="BTCUSDT")
    assert isinstance(feed, SentimentData)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed)
    cerebro.addstrategy(MlSentiment, registry=sentiment_registry)
    (strategy,) = cerebro.run()
    assert strategy.predictions[strategy.data].model_key == "BTCUSDT/sentiment@2026-01-01_1h_v1"
    assert len(strategy.trade_records) > 0


@pytest.mark.parametrize(
    "make_strategy",
    [
        lambda registry: (NeverStartsMlBasic, {"registry": registry, "sequence_length": 120}),
        lambda registry: (
            create_ml_basic_strategy(unique_name("SeqGuard", registry), registry=registry),
            {},
        ),
    ],
    ids=["param", "factory_default_120"],
)
def test_sequence_length_guard_with_mismatch_raises_configuration_error(
    registry, btc, make_strategy
) -> None:
    NeverStartsMlBasic.bars_seen.clear()
    cls, params = make_strategy(registry)
    cerebro = cerebro_with((btc, "BTCUSDT"))
    cerebro.addstrategy(cls, **params)
    with pytest.raises(ConfigurationError, match=r"sequence_length=120.*takes 16 bars"):
        cerebro.run()
    assert NeverStartsMlBasic.bars_seen == []


# ---------------------------------------------------------------- params and bookkeeping


def test_strategy_params_with_defaults_and_factory_are_plain_picklable_values(registry) -> None:
    plain = (type(None), bool, int, float, str)
    cls = create_ml_basic_strategy(
        unique_name("Picklable", registry), sequence_length=SEQ, registry=registry
    )
    for strategy_cls in (MlBasic, MlSentiment, cls):
        items = dict(strategy_cls.params._getitems())
        assert all(isinstance(v, plain) for v in items.values()), items
        assert pickle.loads(pickle.dumps(strategy_cls.params))._getitems() == (
            strategy_cls.params._getitems()
        )
        assert pickle.loads(pickle.dumps(strategy_cls)) is strategy_cls
    for strategy_cls in (MlPrediction,):
        assert all(isinstance(v, plain) for _, v in strategy_cls.params._getitems())


def test_trade_records_with_two_feeds_match_trade_analyzer(registry, btc, eth) -> None:
    cerebro = cerebro_with((btc, "BTCUSDT"), (eth, "ETHUSDT"), stdstats=False)
    cerebro.addstrategy(RecordingMlBasic, registry=registry, allow_shorts=True)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    (strategy,) = cerebro.run()
    trades = strategy.analyzers.trades.get_analysis()
    assert trades["total"]["closed"] > 0
    assert trades["total"]["closed"] == len(strategy.trade_records)
    assert trades["short"]["total"] > 0 and trades["long"]["total"] > 0
    assert sum(r["pnl"] for r in strategy.trade_records) == pytest.approx(
        trades["pnl"]["gross"]["total"]
    )
