"""Prediction engine: defaults from config, candle validation, single == series, causality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atb_strategies.config import PredictionConfig
from atb_strategies.exceptions import CandleDataError, ModelNotFoundError
from atb_strategies.prediction.engine import PredictionEngine
from tests.conftest import RICH_FEATURES, BundleFactory, synthetic_candles


@pytest.fixture
def engine(make_bundle: BundleFactory, tmp_path) -> PredictionEngine:
    make_bundle(features=RICH_FEATURES, sequence_length=24)
    return PredictionEngine(PredictionConfig(model_registry_path=tmp_path / "models"))


def test_predict_uses_config_defaults_and_returns_price(engine, candles) -> None:
    pred = engine.predict(candles)
    assert pred.model_key == "BTCUSDT/basic@2026-01-01_1h_v1"
    assert pred.reference_close == candles["close"].iloc[-1]
    assert pred.price == pytest.approx(pred.reference_close * np.exp(pred.raw), rel=1e-9)
    assert 0.0 <= pred.confidence <= 1.0
    assert pred.direction == int(np.sign(pred.predicted_return))


def test_predict_equals_last_row_of_predict_series(engine, candles) -> None:
    series = engine.predict_series(candles)
    for cut in (len(candles) - 1, 400, 200):
        pred = engine.predict(candles.iloc[: cut + 1])
        row = series.loc[candles.index[cut]]
        assert pred.raw == pytest.approx(row["raw"], abs=1e-7)
        assert pred.price == pytest.approx(row["price"], rel=1e-7)


def test_predict_series_rows_never_change_when_future_is_truncated(engine, candles) -> None:
    full = engine.predict_series(candles)
    part = engine.predict_series(candles.iloc[:350])
    pd.testing.assert_frame_equal(full.loc[part.index], part)


def test_predict_with_timestamp_column_instead_of_index(engine, candles) -> None:
    as_column = candles.reset_index()
    assert engine.predict(as_column).raw == engine.predict(candles).raw


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda f: f.__setitem__("close", f["close"].where(f.index != f.index[-3])),
            r"column 'close' is nan at row \d+ \(2024-01-25 21:00:00\)",
        ),
        (
            lambda f: f.__setitem__("low", f["low"].where(f.index != f.index[-2], -1.0)),
            "must be > 0",
        ),
        (
            lambda f: f.__setitem__("high", f["high"].where(f.index != f.index[-2], 1.0)),
            "high 1.0 < low",
        ),
    ],
)
def test_predict_with_bad_candle_names_row(engine, candles, mutate, message) -> None:
    frame = candles.copy()
    mutate(frame)
    with pytest.raises(CandleDataError, match=message):
        engine.predict(frame)


def test_predict_with_duplicate_and_unsorted_stamps_raises(engine, candles) -> None:
    dup = pd.concat([candles, candles.iloc[[-1]]])
    with pytest.raises(CandleDataError, match="duplicate timestamp"):
        engine.predict(dup)
    n = len(candles)
    swapped = candles.iloc[[*range(n - 2), n - 1, n - 2]]
    with pytest.raises(CandleDataError, match="not sorted"):
        engine.predict(swapped)


def test_predict_with_too_few_rows_says_how_many(engine, candles) -> None:
    with pytest.raises(CandleDataError, match=r"needs at least 47 \(23 warm-up \+ 24 window\)"):
        engine.predict(candles.iloc[:46])


def test_predict_with_candles_of_other_timeframe_raises(engine) -> None:
    four_hourly = synthetic_candles(300, freq="4h")
    with pytest.raises(CandleDataError, match="gap before"):
        engine.predict(four_hourly)
    half_hourly = synthetic_candles(300, freq="30min")
    with pytest.raises(CandleDataError, match="not a multiple of the model's timeframe 1h"):
        engine.predict(half_hourly)


def test_predict_with_gap_inside_window_raises_unless_allowed(engine, candles, tmp_path) -> None:
    gapped = candles.drop(candles.index[-5])
    with pytest.raises(CandleDataError, match=r"gap before .* \(1 missing 1h bar"):
        engine.predict(gapped)
    lenient = PredictionEngine(engine.config, engine.registry, gap_policy="allow")
    assert lenient.predict(gapped).price is not None
    # a gap older than the rows a prediction uses does not matter for fixed look-back features
    old_gap = candles.drop(candles.index[5])
    assert engine.predict(old_gap).price is not None


def test_predict_with_unknown_model_lists_what_exists(engine, candles) -> None:
    with pytest.raises(ModelNotFoundError, match="Types present for BTCUSDT: basic"):
        engine.predict(candles, model_type="sentiment")
