"""Reference bundles from the public project: golden parity and load-time outcomes.

Skipped cleanly when ``../shared`` is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atb_strategies.config import PredictionConfig
from atb_strategies.exceptions import BundleError
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.registry.registry import ModelRegistry

pytestmark = pytest.mark.realdata

VERSION = "2025-10-30_12h_v1"


@pytest.fixture(scope="module")
def registry(shared_dir: Path) -> ModelRegistry:
    return ModelRegistry(shared_dir / "reference-bundles" / "models")


@pytest.fixture(scope="module")
def golden(shared_dir: Path) -> pd.DataFrame:
    path = shared_dir / "reference-bundles" / "golden" / f"BTCUSDT_basic_{VERSION}.csv"
    return pd.read_csv(path, parse_dates=["window_first_ts", "window_last_ts"])


def test_latest_plain_file_pointer_selects_servable_basic(registry: ModelRegistry) -> None:
    bundle = registry.select_bundle(symbol="BTCUSDT", model_type="basic", timeframe="1h")
    assert bundle.key == f"BTCUSDT/basic@{VERSION}"
    assert bundle.metadata.origin == "legacy:price_only_rolling_minmax"
    assert bundle.metadata.output.target == "close_window_minmax"
    assert [f.transforms[0]["op"] for f in bundle.feature_schema.features] == [
        "window_expanding_minmax"
    ] * 5
    assert bundle.feature_schema.columns == ["close", "volume", "high", "low", "open"]


@pytest.mark.slow
def test_golden_predictions_match_every_row(
    registry: ModelRegistry, real_candles: pd.DataFrame, golden: pd.DataFrame
) -> None:
    engine = PredictionEngine(
        PredictionConfig(model_registry_path=registry.root), registry, gap_policy="allow"
    )
    series = engine.predict_series(real_candles)
    rows = series.loc[golden["window_last_ts"]]
    assert len(rows) == len(golden) == 500
    np.testing.assert_allclose(rows["close"], golden["window_last_close"], rtol=0, atol=0)
    raw_diff = np.abs(rows["raw"].to_numpy() - golden["raw_model_output"].to_numpy())
    rel_price = np.abs(rows["price"].to_numpy() / golden["predicted_price"].to_numpy() - 1)
    assert raw_diff.max() <= 1e-6
    assert rel_price.max() <= 1e-6
    # windows really span the golden first..last stamps (120 bars, oldest first)
    first = real_candles.index.get_indexer(golden["window_first_ts"])
    last = real_candles.index.get_indexer(golden["window_last_ts"])
    assert (last - first == 119).all()


@pytest.mark.slow
def test_golden_single_predictions_through_engine_and_stream(
    registry: ModelRegistry, real_candles: pd.DataFrame, golden: pd.DataFrame
) -> None:
    engine = PredictionEngine(PredictionConfig(model_registry_path=registry.root), registry)
    picks = golden.iloc[[0, 137, 499]]
    for _, g in picks.iterrows():
        pred = engine.predict(real_candles.loc[: g["window_last_ts"]])
        assert pred.raw == pytest.approx(g["raw_model_output"], abs=1e-6)
        assert pred.price == pytest.approx(g["predicted_price"], rel=1e-6)
    bundle = registry.select_bundle("BTCUSDT", "basic", "1h")
    stream = bundle.pipeline.stream()
    wanted = dict(zip(golden["window_last_ts"], golden["raw_model_output"], strict=True))
    seen = 0
    values = real_candles[bundle.pipeline.columns].to_numpy()
    for stamp, row in zip(real_candles.index, values, strict=True):
        stream.update(row, label=stamp)
        if stamp in wanted:
            window = stream.window().astype(np.float32)
            pred = bundle.runner.predict(window, stream.context())
            assert pred.raw == pytest.approx(wanted[stamp], abs=1e-6)
            seen += 1
    assert seen == 500


@pytest.mark.parametrize("tag", ["20241230T0500", "20250120T0000"])
def test_golden_input_tensors_match_elementwise(
    registry: ModelRegistry, real_candles: pd.DataFrame, shared_dir: Path, tag: str
) -> None:
    tensors = shared_dir / "reference-bundles" / "golden" / "tensors"
    base = tensors / f"BTCUSDT_basic_{VERSION}__{tag}"
    expected = np.load(f"{base}__input.npy")
    meta = json.loads(Path(f"{base}__meta.json").read_text())
    decision = meta["decision_bar_index"]
    bundle = registry.select_bundle("BTCUSDT", "basic", "1h")
    frame = real_candles.iloc[:decision]  # the reference fed bars [i-120, i-1]
    cols = {c: frame[c].to_numpy() for c in bundle.pipeline.columns}
    window = bundle.pipeline.batch_windows(cols, start=len(frame) - 1).windows[-1]
    got = window.astype(np.float32)[None]
    assert got.dtype == expected.dtype and got.shape == tuple(meta["input_shape"])
    np.testing.assert_array_equal(got, expected)
    ohlcv = pd.read_csv(f"{base}__ohlcv_window_plus_current.csv", parse_dates=["timestamp"])
    assert ohlcv["timestamp"].iloc[-2] == frame.index[-1]
    pred = bundle.runner.predict(
        got[0], bundle.pipeline.batch_windows(cols, start=len(frame) - 1).context_at(-1)
    )
    assert pred.raw == pytest.approx(meta["raw_model_output"], abs=1e-6)
    assert pred.price == pytest.approx(meta["predicted_price"], rel=1e-6)


def test_basic_without_price_normalization_is_refused_naming_field(
    registry: ModelRegistry,
) -> None:
    with pytest.raises(BundleError, match="price_normalization") as info:
        registry.select_bundle("BTCUSDT", "basic", "1h", version="2025-10-26_21h_v1")
    assert info.value.field == "price_normalization"
    assert info.value.path is not None and info.value.path.name == "metadata.json"
    assert "normalised close" in str(info.value)


@pytest.mark.parametrize("version", [None, "2025-12-23_20h_v2", "2026-01-06_14h_v3"])
def test_sentiment_bundles_are_refused_at_selection_naming_scalers(
    registry: ModelRegistry, version: str | None
) -> None:
    with pytest.raises(BundleError, match="scalers whose parameters were never saved") as info:
        registry.select_bundle("BTCUSDT", "sentiment", "1h", version=version)
    message = str(info.value)
    assert "sentiment_momentum_scaled" not in message or "..." in message
    assert "metadata.json" in message
    assert "atb train model" in message


def test_list_bundles_reads_reference_registry_including_infinity(
    registry: ModelRegistry,
) -> None:
    infos = {i.version: i for i in registry.list_bundles()}
    assert set(infos) == {"2025-10-26_21h_v1", VERSION, "2025-12-23_20h_v2", "2026-01-06_14h_v3"}
    assert infos[VERSION].is_latest and infos["2025-12-23_20h_v2"].is_latest
    assert infos["2025-12-23_20h_v2"].input_shape == (None, 30, 10)
    assert all(i.error is None for i in infos.values())
