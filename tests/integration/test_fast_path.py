"""The batch path (preloaded data) and the streaming path give the same backtest, bar for bar.

The same ``MlBasic`` backtest runs with ``runonce`` True/False x ``preload`` True/False and with
``exactbars`` 1 and -1: the prediction lines at every bar, every order event and the final
portfolio value must be identical. A tiny real ONNX model with a ``log_return`` target is scaled
so that it trades (long and short); the tests check that trades happen, otherwise equality would
prove nothing.

The real-data part runs the reference bundle over the last 3,000 real BTCUSDT candles, batched
(``runonce=True, preload=True`` and ``runonce=False, preload=True``) and streaming
(``preload=False``): every bar, the first predicted one included, must be identical. (On these
bars the reference LSTM computes the first window differently at batch size 1 than in a batch:
a path that ran that window alone was off by 5.6e-9 at that bar only.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.bundle.format import BundleMetadata, FeatureSchema, InputSpec, OutputSpec
from atb_strategies.config import PredictionConfig
from atb_strategies.data.feeds import make_feed
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.inference.runner import OnnxRunner
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.registry.registry import ModelRegistry
from atb_strategies.registry.writer import write_bundle
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import RICH_FEATURES, linear_onnx

pytestmark = pytest.mark.slow  # many full backtests in every backtrader mode

SEQ = 24
BARS = 1200
TINY_KEY = "BTCUSDT/basic@2026-01-01_1h_v1"
LINES = ("predicted_price", "predicted_return", "confidence", "direction")
REFERENCE_VERSION = "2025-10-30_12h_v1"
REFERENCE_KEY = f"BTCUSDT/basic@{REFERENCE_VERSION}"
REAL_BARS = 3000

#: Every way backtrader can drive an indicator: runonce x preload, and exactbars 1 / -1.
MODES: dict[str, dict[str, Any]] = {
    "runonce_preload": {"runonce": True, "preload": True},
    "next_preload": {"runonce": False, "preload": True},
    "runonce_stream": {"runonce": True, "preload": False},
    "next_stream": {"runonce": False, "preload": False},
    "exactbars1": {"runonce": True, "preload": True, "exactbars": 1},
    "exactbars_minus1": {"runonce": True, "preload": True, "exactbars": -1},
}


class RecordingMlBasic(MlBasic):
    """``MlBasic`` that records every prediction value it sees and every order event."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[Any, ...]] = []
        self.order_events: list[tuple[Any, ...]] = []
        self.next_calls = 0
        self.final_value = math.nan

    def _record(self) -> None:
        for data, pred in self.predictions.items():
            values = tuple(float(getattr(pred.lines, name)[0]) for name in LINES)
            self.rows.append((data._name, bt.num2date(data.datetime[0]), *values))

    def prenext(self) -> None:
        self._record()

    def next(self) -> None:
        self.next_calls += 1
        self._record()
        super().next()

    def notify_order(self, order: bt.Order) -> None:
        super().notify_order(order)
        if order.status in (order.Submitted, order.Accepted):
            return
        self.order_events.append(
            (
                bt.num2date(order.data.datetime[0]),  # 0 bar
                order.ordtypename(),  # 1 side
                order.getstatusname(),  # 2 status
                order.created.size,  # 3 size
                order.getordername(),  # 4 exectype
                order.executed.price,  # 5 executed price
                order.executed.size,  # 6 executed size
                order.info.get("role"),  # 7 role
                order.info.get("model_key"),  # 8 model key
                order.info.get("predicted_return"),  # 9 prediction behind the order
                order.info.get("bar"),  # 10 bar of the decision
            )
        )

    def stop(self) -> None:
        self.final_value = self.broker.getvalue()


def run_backtest(
    frame: pd.DataFrame,
    registry: Path,
    *,
    runonce: bool,
    preload: bool,
    exactbars: int = 0,
    **strategy_params: Any,
) -> RecordingMlBasic:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(make_feed(frame, timeframe="1h", name="BTCUSDT"))
    cerebro.addstrategy(RecordingMlBasic, registry=str(registry), **strategy_params)
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.setcommission(commission=0.001)
    (strategy,) = cerebro.run(runonce=runonce, preload=preload, exactbars=exactbars)
    return strategy


def prediction_frame(strategy: RecordingMlBasic) -> pd.DataFrame:
    return pd.DataFrame(strategy.rows, columns=["symbol", "bar", *LINES])


def assert_same_backtest(a: RecordingMlBasic, b: RecordingMlBasic) -> None:
    pa, pb = prediction_frame(a), prediction_frame(b)
    assert list(pa["bar"]) == list(pb["bar"])
    for name in LINES:
        # NaN at the same (warm-up) bars, identical values everywhere else
        np.testing.assert_array_equal(pa[name].to_numpy(), pb[name].to_numpy(), err_msg=name)
    assert a.order_events == b.order_events
    assert a.trade_records == b.trade_records
    assert a.final_value == b.final_value


def decisions_of(strategy: RecordingMlBasic) -> list[tuple[Any, ...]]:
    """Order events without the float fields: bar, side, status, exectype, role."""
    return [(e[0], e[1], e[2], e[4], e[7]) for e in strategy.order_events]


# ---------------------------------------------------------------- synthetic data, tiny model


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_ohlcv(BARS, timeframe="1h", seed=1)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one tiny log-return model over every feature family (module scope).

    scale 0.0002 / seed 2: about half of the bars predict above +0.002 and half below -0.002
    on ``frame``, so the strategy enters long and short many times; every predicted log return
    stays within +-1.6 (a larger scale predicts tenfold moves, which are no prediction, see
    ``inference.decode``).
    """
    root = tmp_path_factory.mktemp("fast_path") / "models"
    meta = BundleMetadata(
        symbol="BTCUSDT",
        model_type="basic",
        timeframe="1h",
        version="2026-01-01_1h_v1",
        input=InputSpec("features", "float32", SEQ, len(RICH_FEATURES)),
        output=OutputSpec("log_return", 1, "prediction", {}, None),
        model_sha256=None,
        created_at="2026-01-01T00:00:00+00:00",
        framework="onnx-test",
    )
    model = linear_onnx(SEQ, len(RICH_FEATURES), seed=2, scale=0.0002)
    write_bundle(root, meta, FeatureSchema(SEQ, RICH_FEATURES), model, promote=True)
    return root


@pytest.fixture(scope="module")
def runs(frame: pd.DataFrame, registry: Path) -> dict[str, RecordingMlBasic]:
    return {
        name: run_backtest(frame, registry, allow_shorts=True, **mode)
        for name, mode in MODES.items()
    }


@pytest.mark.slow
def test_backtest_with_every_run_mode_trades_long_and_short(runs) -> None:
    for name, strategy in runs.items():
        completed = [e for e in strategy.order_events if e[2] == "Completed"]
        entries = [e for e in completed if e[7] == "entry"]
        assert len(entries) >= 5, name
        assert {e[1] for e in entries} == {"Buy", "Sell"}, name
        assert len(strategy.trade_records) >= 5, name
        assert {"stop_loss", "take_profit", "exit"} & {e[7] for e in completed}, name


def test_prediction_lines_with_every_run_mode_are_nan_exactly_during_warm_up(runs) -> None:
    for name, strategy in runs.items():
        pred = next(iter(strategy.predictions.values()))
        frame = prediction_frame(strategy)
        warm = pred.bundle.pipeline.min_bars - 1
        assert len(frame) == BARS, name
        assert frame["predicted_return"].iloc[:warm].isna().all(), name
        assert frame["predicted_return"].iloc[warm:].notna().all(), name
        assert strategy.next_calls == BARS - warm, name


@pytest.mark.parametrize("mode", [m for m in MODES if m != "runonce_preload"])
def test_backtest_with_run_mode_equals_runonce_preload(runs, mode: str) -> None:
    assert_same_backtest(runs["runonce_preload"], runs[mode])


def test_batch_predictions_with_truncated_candles_equal_engine_predict(
    runs, frame: pd.DataFrame, registry: Path
) -> None:
    batch = prediction_frame(runs["runonce_preload"]).set_index("bar")
    engine = PredictionEngine(PredictionConfig(model_registry_path=registry))
    for t in (100, 517, BARS - 1):
        pred = engine.predict(frame.iloc[: t + 1])
        row = batch.loc[frame.index[t] + pd.Timedelta(hours=1)]  # feeds stamp bar close times
        assert pred.model_key == TINY_KEY
        assert pred.predicted_return == pytest.approx(row["predicted_return"], rel=1e-9, abs=1e-12)
        assert pred.price == pytest.approx(row["predicted_price"], rel=1e-9)
        assert pred.confidence == pytest.approx(row["confidence"], rel=1e-9, abs=1e-12)
        assert pred.direction == row["direction"]


def test_batch_path_with_runonce_runs_every_window_in_one_batch(
    frame: pd.DataFrame, registry: Path, monkeypatch
) -> None:
    # backtrader calls once() for the first bar alone (oncestart), then for the rest: the
    # indicator must still predict every bar from one batch, never a batch of one window
    sizes: list[int] = []
    run_raw = OnnxRunner.run_raw

    def spy(self: OnnxRunner, x: np.ndarray) -> np.ndarray:
        sizes.append(x.shape[0])
        return run_raw(self, x)

    monkeypatch.setattr(OnnxRunner, "run_raw", spy)
    strategy = run_backtest(frame, registry, runonce=True, preload=True)
    pred = next(iter(strategy.predictions.values()))
    assert sizes == [BARS - pred.bundle.pipeline.min_bars + 1]
    assert pred.gap_bars == [] and pred.skipped_bars == 0


def test_order_info_with_streaming_run_carries_model_key_and_prediction(runs) -> None:
    strategy = runs["next_stream"]
    predicted = prediction_frame(strategy).set_index("bar")["predicted_return"]
    entries = [e for e in strategy.order_events if e[7] == "entry"]
    assert entries
    for event in strategy.order_events:
        assert event[8] == TINY_KEY
        assert event[7] in ("entry", "stop_loss", "take_profit", "exit")
        assert math.isfinite(event[9])
    for event in entries:
        # the prediction in order.info is the one the indicator showed at the decision bar
        decided = pd.Timestamp(event[10])
        assert decided < event[0]
        assert event[9] == predicted[decided]


# ---------------------------------------------------------------- real data, reference bundle


@pytest.fixture(scope="module")
def real_tail(real_candles: pd.DataFrame) -> pd.DataFrame:
    tail = real_candles.iloc[-REAL_BARS:]
    steps = np.diff(tail.index.asi8)
    assert (steps == steps[0]).all(), "the last real bars must be gap-free"
    return tail


@pytest.fixture(scope="module")
def real_runs(shared_dir: Path, real_tail: pd.DataFrame) -> dict[str, RecordingMlBasic]:
    models = shared_dir / "reference-bundles" / "models"
    params = {"version": REFERENCE_VERSION}
    return {
        "batch": run_backtest(real_tail, models, runonce=True, preload=True, **params),
        "next_preload": run_backtest(real_tail, models, runonce=False, preload=True, **params),
        "stream": run_backtest(real_tail, models, runonce=True, preload=False, **params),
    }


@pytest.mark.realdata
@pytest.mark.slow
def test_reference_bundle_with_real_candles_trades_in_both_paths(real_runs) -> None:
    for strategy in real_runs.values():
        assert len(strategy.trade_records) >= 5
        assert {e[8] for e in strategy.order_events} == {REFERENCE_KEY}


@pytest.mark.realdata
@pytest.mark.slow
def test_reference_bundle_with_real_candles_streaming_matches_batch_to_float32(
    real_runs,
) -> None:
    batch, stream = real_runs["batch"], real_runs["stream"]
    pa, pb = prediction_frame(batch), prediction_frame(stream)
    assert list(pa["bar"]) == list(pb["bar"])
    assert pa["predicted_return"].isna().sum() == 119  # 120-bar window
    # 1-2 float32 ulps of the raw output: ~1e-7 of the window's close range
    np.testing.assert_allclose(pa["predicted_price"], pb["predicted_price"], rtol=1e-7)
    np.testing.assert_allclose(pa["predicted_return"], pb["predicted_return"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(pa["confidence"], pb["confidence"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(pa["direction"], pb["direction"])
    assert decisions_of(batch) == decisions_of(stream)
    sizes_a = np.array([e[3] for e in batch.order_events])
    sizes_b = np.array([e[3] for e in stream.order_events])
    np.testing.assert_allclose(sizes_a, sizes_b, rtol=1e-5)
    assert batch.final_value == pytest.approx(stream.final_value, abs=0.01)  # a cent


@pytest.mark.realdata
@pytest.mark.slow
def test_reference_bundle_with_real_candles_streaming_equals_batch_exactly(real_runs) -> None:
    assert_same_backtest(real_runs["batch"], real_runs["stream"])


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["next_preload", "stream"])
def test_reference_bundle_with_real_candles_every_bar_from_the_first_equals_runonce_preload(
    real_runs, mode: str
) -> None:
    batch, other = prediction_frame(real_runs["batch"]), prediction_frame(real_runs[mode])
    assert list(batch["bar"]) == list(other["bar"])
    first = int(batch["predicted_price"].notna().to_numpy().argmax())
    assert first == 119  # the first bar with a complete 120-bar window
    for name in LINES:
        a, b = batch[name].to_numpy(), other[name].to_numpy()
        assert np.isnan(a[:first]).all() and np.isnan(b[:first]).all(), name
        assert np.isfinite(a[first:]).all(), name
        assert a[first] == b[first], name  # the bar that used to differ (batch of one)
        np.testing.assert_array_equal(a, b, err_msg=name)  # and every other bar, exactly


@pytest.mark.slow
@pytest.mark.realdata
def test_reference_runner_with_one_window_batch_equals_it_inside_the_full_batch(
    shared_dir: Path, real_tail: pd.DataFrame
) -> None:
    registry = ModelRegistry(shared_dir / "reference-bundles" / "models")
    bundle = registry.select_bundle("BTCUSDT", "basic", version=REFERENCE_VERSION)
    pipe, runner = bundle.pipeline, bundle.runner
    batch = pipe.batch_windows({c: real_tail[c].to_numpy(np.float64) for c in pipe.columns})
    windows = batch.windows.astype(np.float32)
    full = runner.predict_batch(windows, batch.context)
    # the first window is one whose batch-1 result differs from its batched one
    assert runner.run_raw(windows[:1])[0] != full.raw[0]
    alone = runner.predict_batch(windows[:1], batch.context_at(0))
    assert alone.raw[0] == full.raw[0] and alone.price[0] == full.price[0]
    assert runner.predict(windows[0], batch.context_at(0)).price == full.price[0]
    tail = runner.predict_batch(windows[: 2 * 1000 + 1], chunk_size=1000)
    np.testing.assert_array_equal(tail.raw, full.raw[: 2 * 1000 + 1])  # a last chunk of one


@pytest.mark.realdata
@pytest.mark.slow
def test_reference_predictions_with_truncated_real_candles_equal_engine_predict(
    shared_dir: Path, real_runs, real_tail: pd.DataFrame
) -> None:
    engine = PredictionEngine(
        PredictionConfig(model_registry_path=shared_dir / "reference-bundles" / "models")
    )
    batch = prediction_frame(real_runs["batch"]).set_index("bar")
    stream = prediction_frame(real_runs["stream"]).set_index("bar")
    assert math.isnan(batch["predicted_return"].iloc[118])
    for t in (119, 1000, len(real_tail) - 1):
        pred = engine.predict(real_tail.iloc[: t + 1], version=REFERENCE_VERSION)
        stamp = real_tail.index[t] + pd.Timedelta(hours=1)  # feeds stamp bar close times
        assert pred.model_key == REFERENCE_KEY
        assert pred.reference_close == real_tail["close"].iloc[t]
        assert pred.price == batch.loc[stamp, "predicted_price"]  # batch parity: exact
        assert pred.direction == batch.loc[stamp, "direction"]
        # the engine predicts one window at a time, exactly like the streaming path
        assert pred.price == stream.loc[stamp, "predicted_price"]
        assert pred.predicted_return == stream.loc[stamp, "predicted_return"]
