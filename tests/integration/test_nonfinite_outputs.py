"""Non-finite and implausible model outputs are no prediction, on every path alike.

Real ONNX models (``linear_onnx`` plus a switch): a window whose newest log return exceeds
``THRESHOLD`` outputs a fixed bad value (NaN, inf, a log return of 700, NaN or non-distribution
class probabilities), every other window a normal prediction. The bad bars are found
independently, from the bundle's own feature pipeline, and must be NaN (direction too) in
``MlPrediction`` in every backtrader mode, rejected with the same reason by the engine, counted
in the backtest summary, never traded on, and refused by hot reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import helper, numpy_helper

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.bundle.format import OutputSpec
from atb_strategies.config import PredictionConfig
from atb_strategies.data.feeds import make_feed
from atb_strategies.features.pipeline import PriceContext
from atb_strategies.indicators.cache import prediction_cache
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.inference.certificate import CERTIFICATE_FILE, certificate_bytes
from atb_strategies.inference.decode import MAX_ABS_LOG_MOVE, REJECTED_OUTPUT_REASONS, decode
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import promote
from atb_strategies.registry.shared import clear_shared_registries, shared_registry
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.strategies.shadow import SHADOW_COLUMNS
from tests.conftest import RICH_FEATURES, BundleFactory, linear_onnx, synthetic_candles

SEQ = 16
FEATURES = RICH_FEATURES[:3]  # make_bundle's default: close_wexp, log_ret, range
SWITCH_FEATURE = 1  # log_ret
THRESHOLD = 0.004  # windows whose newest log return exceeds it output the bad value
CLASSES = ("down", "flat", "up")
NAN, INF = float("nan"), float("inf")

#: name -> (target, bad output, reason)
CASES: dict[str, tuple[str, list[float], str]] = {
    "nan": ("log_return", [NAN], "non_finite_output"),
    "inf": ("log_return", [INF], "non_finite_output"),
    "minus_inf": ("log_return", [-INF], "non_finite_output"),
    "log_return_700": ("log_return", [700.0], "implausible_output"),
    "class_nan": ("class_probabilities", [NAN, NAN, NAN], "non_finite_output"),
    "class_not_a_distribution": ("class_probabilities", [0.9, 0.9, 0.9], "implausible_output"),
}
RETURN_CASES = [name for name, case in CASES.items() if case[0] == "log_return"]

MODES: dict[str, dict[str, Any]] = {
    "runonce": {},
    "next": {"runonce": False},
    "streaming": {"preload": False},
    "exactbars": {"exactbars": 1},
}
LINES = ("predicted_price", "predicted_return", "confidence", "direction")


def switched_onnx(
    bad: list[float], *, classes: bool, threshold: float = THRESHOLD, seed: int = 0
) -> bytes:
    """``linear_onnx``'s model (softmax for classes), except that a window whose newest value of
    feature ``SWITCH_FEATURE`` exceeds ``threshold`` outputs ``bad``."""
    outputs = len(bad)
    model = onnx.load_from_string(
        linear_onnx(SEQ, len(FEATURES), outputs=outputs, seed=seed, softmax=classes)
    )
    graph = model.graph
    graph.node[-1].output[0] = "normal"
    f = SWITCH_FEATURE
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([SEQ - 1, f], dtype=np.int64), "starts"),
            numpy_helper.from_array(np.array([SEQ, f + 1], dtype=np.int64), "ends"),
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "column"),
            numpy_helper.from_array(np.array(threshold, dtype=np.float32), "threshold"),
            numpy_helper.from_array(np.array([bad], dtype=np.float32), "bad"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Slice", ["features", "starts", "ends", "axes"], ["newest"]),
            helper.make_node("Reshape", ["newest", "column"], ["newest2"]),
            helper.make_node("Greater", ["newest2", "threshold"], ["switch"]),
            helper.make_node("Where", ["switch", "bad", "normal"], ["prediction"]),
        ]
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _make(make_bundle: BundleFactory, case: str, **kwargs: Any) -> Path:
    target, bad, _ = CASES[case]
    classes = CLASSES if target == "class_probabilities" else None
    return make_bundle(
        features=FEATURES,
        sequence_length=SEQ,
        target=target,
        classes=classes,
        model_bytes=switched_onnx(bad, classes=classes is not None),
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _fresh_registries() -> Any:
    clear_shared_registries()
    yield
    clear_shared_registries()


@pytest.fixture
def candles() -> pd.DataFrame:
    return synthetic_candles(500, seed=11)


def bad_bars(registry: Path, candles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the bars that have a window, whether each one's output is the bad value),
    from the bundle's own feature pipeline, not from any prediction path."""
    bundle = shared_registry(str(registry)).select_bundle("BTCUSDT", "basic", "1h")
    pipe = bundle.pipeline
    batch = pipe.batch_windows({c: candles[c].to_numpy(dtype=np.float64) for c in pipe.columns})
    newest = batch.windows[:, -1, SWITCH_FEATURE].astype(np.float32)
    return batch.end_index, newest > np.float32(THRESHOLD)


def _engine(registry: Path) -> PredictionEngine:
    return PredictionEngine(PredictionConfig(model_registry_path=registry))


# ---------------------------------------------------------------- the rule (inference.decode)


@pytest.mark.parametrize(
    ("spec", "raw", "ctx", "reason"),
    [
        (OutputSpec("log_return"), [MAX_ABS_LOG_MOVE * 0.99], None, None),
        (OutputSpec("log_return"), [MAX_ABS_LOG_MOVE * 1.01], None, "implausible_output"),
        (OutputSpec("log_return"), [-MAX_ABS_LOG_MOVE * 1.01], None, "implausible_output"),
        (OutputSpec("simple_return"), [8.9], None, None),
        (OutputSpec("simple_return"), [-1.0], None, "implausible_output"),
        (OutputSpec("simple_return"), [NAN], None, "non_finite_output"),
        (OutputSpec("close"), [1050.0], PriceContext(100.0, 90.0, 110.0), "implausible_output"),
        (OutputSpec("close"), [950.0], PriceContext(100.0, 90.0, 110.0), None),
        (OutputSpec("close"), [-5.0], None, "implausible_output"),
        (OutputSpec("close"), [INF], None, "non_finite_output"),
        (OutputSpec("close_window_minmax"), [0.5], None, None),
        (OutputSpec("close_window_minmax"), [NAN], None, "non_finite_output"),
        (
            OutputSpec("close_window_minmax"),
            [50.0],
            PriceContext(100, 90, 110),
            "implausible_output",
        ),
        (OutputSpec("class_probabilities", classes=CLASSES), [[0.2, 0.3, 0.5]], None, None),
        (
            OutputSpec("class_probabilities", classes=CLASSES),
            [[0.6, 0.6, -0.2]],
            None,
            "implausible_output",
        ),
        (
            OutputSpec("class_probabilities", classes=CLASSES),
            [[0.2, 0.3, 0.4]],
            None,
            "implausible_output",
        ),
        (
            OutputSpec("class_probabilities", classes=CLASSES),
            [[0.2, NAN, 0.8]],
            None,
            "non_finite_output",
        ),
    ],
)
def test_decode_rejects_non_finite_and_absurd_outputs_with_one_rule(spec, raw, ctx, reason):
    d = decode(spec, np.array(raw, dtype=np.float64), ctx)
    assert d.reason[0] == reason
    assert bool(d.rejected[0]) is (reason is not None)
    if reason is not None:
        assert np.isnan(d.price[0]) and np.isnan(d.predicted_return[0])
        assert np.isnan(d.confidence[0]) and d.direction[0] == 0


def test_decode_of_a_batch_rejects_only_the_bad_windows():
    ctx = PriceContext(np.full(4, 100.0), np.full(4, 90.0), np.full(4, 110.0))
    d = decode(OutputSpec("log_return"), np.array([0.01, NAN, 700.0, -0.02]), ctx)
    assert list(d.reason) == [None, "non_finite_output", "implausible_output", None]
    np.testing.assert_allclose(d.price[[0, 3]], 100.0 * np.exp([0.01, -0.02]))
    np.testing.assert_array_equal(d.direction, [1, 0, 0, -1])


# ---------------------------------------------------------------- engine


@pytest.mark.parametrize("case", list(CASES))
def test_engine_series_and_single_predictions_have_no_prediction_at_bad_bars(
    make_bundle, tmp_path, candles, case
):
    _make(make_bundle, case)
    registry = tmp_path / "models"
    positions, bad = bad_bars(registry, candles)
    assert 0 < bad.sum() < len(bad) / 2  # some bars bad, most not
    reason = CASES[case][2]
    engine = _engine(registry)
    series = engine.predict_series(candles)
    assert (series.index == candles.index[positions]).all()
    assert list(series["no_prediction"]) == [reason if b else None for b in bad]
    for column in ("price", "predicted_return", "confidence"):
        assert series[column][bad].isna().all()
    assert (series["direction"][bad] == 0).all()
    assert series["confidence"][~bad].notna().all()
    if CASES[case][0] == "log_return":
        assert series["predicted_return"][~bad].notna().all()
    else:  # class models: the decoded direction of a good window is its most probable class
        assert set(series["direction"][~bad]) <= {-1, 0, 1}

    first_bad, first_good = positions[bad][0], positions[~bad][-1]
    rejected = engine.predict(candles.iloc[: first_bad + 1])
    assert rejected.no_prediction == reason and not rejected.ok
    assert rejected.price is None and rejected.predicted_return is None
    assert np.isnan(rejected.confidence) and rejected.direction == 0
    good = engine.predict(candles.iloc[: first_good + 1])
    assert good.ok and good.no_prediction is None
    row = series.loc[candles.index[first_good]]
    assert good.confidence == pytest.approx(row["confidence"], abs=1e-6)
    assert good.direction == row["direction"]


# ---------------------------------------------------------------- MlPrediction, every mode


class _Record(bt.Strategy):
    params = (("registry", None),)

    def __init__(self) -> None:
        self.pred = MlPrediction(self.data, registry=self.p.registry)
        self.rows: list[list[float]] = []

    def next(self) -> None:
        self.rows.append([float(getattr(self.pred, name)[0]) for name in LINES])


def _record(candles: pd.DataFrame, registry: Path, **mode: Any) -> _Record:
    cerebro = bt.Cerebro(stdstats=False, **mode)
    cerebro.adddata(make_feed(candles, timeframe="1h"), name="BTCUSDT")
    cerebro.addstrategy(_Record, registry=str(registry))
    return cerebro.run()[0]


@pytest.mark.parametrize("case", list(CASES))
def test_ml_prediction_lines_are_nan_at_bad_bars_and_counted_in_every_mode(
    make_bundle, tmp_path, candles, case
):
    _make(make_bundle, case)
    registry = tmp_path / "models"
    positions, bad = bad_bars(registry, candles)
    reason = CASES[case][2]
    runs = {name: _record(candles, registry, **mode) for name, mode in MODES.items()}
    reference = np.array(runs["runonce"].rows)
    assert len(reference) == len(positions)  # next() runs from the first bar with a window
    for name, strat in runs.items():
        rows = np.array(strat.rows)
        np.testing.assert_array_equal(rows, reference, err_msg=name)  # the paths agree
        assert np.isnan(rows[bad]).all(), name  # every line, direction too
        assert np.isfinite(rows[~bad][:, 2:]).all(), name  # confidence, direction
        assert strat.pred.rejected_outputs == {reason: int(bad.sum())}, name
        assert strat.pred.skipped_bars == 0, name
        closes = candles.index[positions[bad]] + pd.Timedelta("1h")  # bars carry close times
        assert [t for t, _ in strat.pred.rejected_bars] == list(closes), name


# ---------------------------------------------------------------- backtests


@pytest.mark.parametrize("case", RETURN_CASES)
def test_backtest_counts_bad_bars_in_no_prediction_and_never_trades_on_them(
    make_bundle, tmp_path, candles, case
):
    _make(make_bundle, case)
    registry = tmp_path / "models"
    positions, bad = bad_bars(registry, candles)
    reason = CASES[case][2]
    result = run_backtest(
        candles, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=str(registry)
    )
    summary = result.summary
    assert summary["no_prediction"][reason] == {
        "bars": int(bad.sum()),
        "why": REJECTED_OUTPUT_REASONS[reason],
    }
    assert result.no_prediction is not None
    assert set(result.no_prediction[result.no_prediction == reason].index) == set(
        candles.index[positions[bad]]
    )
    bad_closes = {(t + pd.Timedelta("1h")).isoformat() for t in candles.index[positions[bad]]}
    decisions = {d["bar"]: d for d in result.decisions}
    for bar in bad_closes:
        assert decisions[bar]["action"] == "skip"
        assert decisions[bar]["reason"] == f"no prediction: {REJECTED_OUTPUT_REASONS[reason]}"
    entries = [d for d in result.decisions if d["action"].startswith("enter_")]
    assert entries  # the good bars do trade
    assert not {d["bar"] for d in entries} & bad_closes
    # every order is placed on a bar with a prediction: it fills at the next bar's open
    assert all(
        np.isfinite(d["predicted_return"]) for d in result.decisions if d["action"] != "skip"
    )


@pytest.mark.parametrize("case", ["nan", "log_return_700"])
def test_backtest_decisions_at_bad_bars_are_the_same_in_every_mode(
    make_bundle, tmp_path, candles, case
):
    _make(make_bundle, case)
    registry = tmp_path / "models"

    def decisions(**mode: Any) -> list[tuple[str, str, str | None]]:
        cerebro = bt.Cerebro(stdstats=False, **mode)
        cerebro.adddata(make_feed(candles, timeframe="1h"), name="BTCUSDT")
        cerebro.addstrategy(MlBasic, registry=str(registry))
        strat = cerebro.run()[0]
        return [(d["bar"], d["action"], d["reason"]) for d in strat.decisions]

    reference = decisions()
    why = f"no prediction: {REJECTED_OUTPUT_REASONS[CASES[case][2]]}"
    assert why in {r for *_, r in reference}
    for name, mode in MODES.items():
        assert decisions(**mode) == reference, name


def test_a_sweep_cache_hit_reports_the_same_bad_bars(make_bundle, tmp_path, candles):
    _make(make_bundle, "inf")
    registry = tmp_path / "models"

    def run() -> dict[str, Any]:
        result = run_backtest(
            candles, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=str(registry)
        )
        return result.summary["no_prediction"]

    prediction_cache.clear()
    try:
        with prediction_cache.active():
            first = run()
            assert prediction_cache.counters()["misses"] == 1
            second = run()
            assert prediction_cache.counters()["hits"] == 1
    finally:
        prediction_cache.clear()
    assert first == second
    assert first["non_finite_output"]["bars"] > 0


# ---------------------------------------------------------------- shadows and hot reload

V1, V3 = "2026-01-01_1h_v1", "2026-03-01_1h_v3"
PROMOTE_AT = 150


def test_a_shadow_whose_model_outputs_nan_skips_exactly_those_bars(make_bundle, tmp_path, candles):
    make_bundle(version=V1, features=FEATURES, sequence_length=SEQ, seed=1)
    _make(make_bundle, "nan", version=V3, promote=False)
    registry = tmp_path / "models"
    positions, bad = bad_bars(registry, candles)  # v1 and v3 read the same windows
    result = run_backtest(
        candles,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=str(registry),
        long_threshold=0.0,
        shadows=[V3],
    )
    rows = pd.DataFrame(result.strategy.shadow.rows, columns=SHADOW_COLUMNS)
    shadow = rows[rows.role == "shadow"].set_index("time")
    assert len(shadow) == len(positions)
    skipped = shadow["action"] == "skip"
    assert list(skipped) == list(bad)
    assert shadow["predicted_return"][skipped].isna().all()
    assert shadow["action"][~skipped].str.startswith("enter_").any()  # it trades elsewhere
    champion = rows[rows.role == "champion"]
    assert (champion["action"] != "skip").all()  # v1's outputs are all predictions


class _Promoting(bt.Strategy):
    params = (("registry", None),)

    def __init__(self) -> None:
        self.pred = MlPrediction(self.data, registry=self.p.registry, follow_latest=True)
        self.keys: list[str] = []

    def next(self) -> None:
        self.keys.append(self.pred.model_key)
        if len(self) == PROMOTE_AT:
            promote(RegistryLayout(self.p.registry), "BTCUSDT", "basic", V3)


def _always_bad(bad: list[float]) -> bytes:
    return switched_onnx(bad, classes=False, threshold=-1e30)  # every window is "bad"


def _nan_certificate(directory: Path) -> None:
    """A certificate that recorded NaN outputs: the certificate's own checks refuse it before it
    runs (bundle/safe reading), so the promoted version never serves."""
    windows = np.zeros((2, SEQ, len(FEATURES)), dtype=np.float32)
    (directory / CERTIFICATE_FILE).write_bytes(certificate_bytes(windows, np.full((2, 1), NAN)))


@pytest.mark.parametrize(
    ("bad", "certificate", "words"),
    [
        ([NAN], True, "it holds NaN or infinite values"),
        ([NAN], False, "first prediction on the bars seen is none"),
        ([700.0], False, "implausible"),
    ],
    ids=["nan_certificate", "nan_first_prediction", "implausible_first_prediction"],
)
def test_hot_reload_refuses_a_version_whose_outputs_are_no_predictions(
    make_bundle, tmp_path, candles, caplog, bad, certificate, words
):
    make_bundle(version=V1, features=FEATURES, sequence_length=SEQ, seed=1)
    v3 = make_bundle(
        version=V3,
        features=FEATURES,
        sequence_length=SEQ,
        promote=False,
        model_bytes=_always_bad(bad),
    )
    if certificate:
        _nan_certificate(v3)
    registry = tmp_path / "models"
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.adddata(make_feed(candles, timeframe="1h"), name="BTCUSDT")
    cerebro.addstrategy(_Promoting, registry=str(registry))
    strat = cerebro.run()[0]
    assert set(strat.keys) == {f"BTCUSDT/basic@{V1}"}
    (event,) = strat.pred.model_events  # refused once though latest keeps naming it
    assert event.kind == "refused" and event.to_key == f"BTCUSDT/basic@{V3}"
    assert words in event.reason
    assert strat.pred.rejected_outputs == {}  # v1 kept serving, with finite outputs
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
