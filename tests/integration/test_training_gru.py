"""The sequence-model family (PyTorch GRU), run whenever the ``torch`` extra is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from atb_strategies.config import PredictionConfig
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.training.trainer import TrainingConfig, train_model

pytestmark = pytest.mark.slow


def _config(registry: Path, seed: int = 0) -> TrainingConfig:
    return TrainingConfig(
        symbol="BTCUSDT",
        registry=registry,
        architecture="gru",
        sequence_length=24,
        epochs=2,
        seed=seed,
        backtest=False,
        force_promote=True,
    )


def test_gru_training_registers_servable_bundle_with_parity_and_reproducible(
    tmp_path: Path,
) -> None:
    candles = generate_ohlcv(2500, seed=5)
    first = train_model(_config(tmp_path / "a"), candles)
    second = train_model(_config(tmp_path / "b"), candles)
    meta_parity = first.metrics["export_parity_max_abs_diff"]
    assert meta_parity <= 1e-4
    assert second.metrics["export_parity_max_abs_diff"] == meta_parity
    assert (first.path / "model.pt").stat().st_size > 1000
    preds = []
    for root in (tmp_path / "a", tmp_path / "b"):
        engine = PredictionEngine(PredictionConfig(model_registry_path=root))
        series = engine.predict_series(candles.iloc[-400:])
        preds.append(series["raw"].to_numpy())
        assert engine.select().metadata.framework.startswith("torch ")
    assert np.max(np.abs(preds[0] - preds[1])) <= 1e-6
    other = train_model(_config(tmp_path / "c", seed=1), candles)
    engine = PredictionEngine(PredictionConfig(model_registry_path=tmp_path / "c"))
    assert not np.allclose(engine.predict_series(candles.iloc[-400:])["raw"], preds[0])
    assert other.version == first.version  # separate registries each start at v1
