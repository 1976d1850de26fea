"""On the 18,000 real candles: streaming == batch for every transform; causality of features and
predictions. Skipped cleanly when ``../shared`` is absent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.config import PredictionConfig
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.registry.registry import ModelRegistry
from tests.conftest import RICH_FEATURES

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _cols(frame: pd.DataFrame, pipe: FeaturePipeline) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(dtype=np.float64) for c in pipe.columns}


def test_streaming_equals_batch_for_every_transform_on_real_data(
    real_candles: pd.DataFrame,
) -> None:
    # The real data holds a zero-volume bar; log(volume) there is -inf and must raise, so the
    # log-volume feature is checked separately below.
    features = tuple(f for f in RICH_FEATURES if f.name != "logvol_scaled")
    pipe = FeaturePipeline(FeatureSchema(120, features))
    batch = pipe.batch_windows(_cols(real_candles, pipe))
    assert len(batch.end_index) == len(real_candles) - pipe.min_bars + 1
    stream = pipe.stream()
    worst = np.zeros(len(features))
    first = int(batch.end_index[0])
    for i, row in enumerate(real_candles[pipe.columns].to_numpy()):
        stream.update(row)
        if i >= first:
            diff = np.abs(stream.window() - batch.windows[i - first]).max(axis=0)
            worst = np.maximum(worst, diff)
    assert worst.max() <= 1e-9, dict(zip(pipe.schema.feature_names, worst, strict=True))


def test_log_volume_feature_on_real_zero_volume_bar_raises_naming_it(
    real_candles: pd.DataFrame,
) -> None:
    feature = next(f for f in RICH_FEATURES if f.name == "logvol_scaled")
    pipe = FeaturePipeline(FeatureSchema(120, (feature,)))
    with pytest.raises(ValueError, match="'logvol_scaled' is -inf at bar 1980"):
        pipe.batch_windows(_cols(real_candles, pipe))


@pytest.mark.parametrize("cut", [500, 1981, 9000, 17998])
def test_truncating_real_series_never_changes_earlier_features(
    real_candles: pd.DataFrame, cut: int
) -> None:
    features = tuple(f for f in RICH_FEATURES if f.name != "logvol_scaled")
    pipe = FeaturePipeline(FeatureSchema(120, features))
    full = pipe.batch_windows(_cols(real_candles, pipe))
    part = pipe.batch_windows(_cols(real_candles.iloc[: cut + 1], pipe))
    np.testing.assert_array_equal(part.windows, full.windows[: len(part.end_index)])


def test_truncating_real_series_never_changes_earlier_predictions(
    shared_dir, real_candles: pd.DataFrame
) -> None:
    registry = ModelRegistry(shared_dir / "reference-bundles" / "models")
    engine = PredictionEngine(
        PredictionConfig(model_registry_path=registry.root), registry, gap_policy="allow"
    )
    tail = real_candles.iloc[-1500:]
    full = engine.predict_series(tail)
    cut = tail.index[900]
    part = engine.predict_series(tail.loc[:cut])
    pd.testing.assert_frame_equal(full.loc[part.index], part)
    assert part.index[-1] == cut
