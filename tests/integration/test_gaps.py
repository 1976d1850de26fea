"""Missing bars: one rule (``features.candles``) for the engine and ``MlPrediction``.

Under ``gap_policy="skip"`` (the default for historical feeds) exactly the predictions whose own
rows (warm-up + window) span a gap are NaN, in every backtrader mode and in the engine alike;
``"raise"`` names the bar after the gap; ``"warn"`` predicts everywhere.
"""

from __future__ import annotations

from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.config import PredictionConfig
from atb_strategies.data.feeds import make_feed
from atb_strategies.exceptions import CandleDataError, ConfigurationError
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.prediction.engine import PredictionEngine
from tests.conftest import BundleFactory, synthetic_candles

GAP_AT = 300  # the candle at this position is removed


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    make_bundle()
    return str(tmp_path / "models")


@pytest.fixture
def gapped() -> pd.DataFrame:
    frame = synthetic_candles(600)
    return frame.drop(frame.index[GAP_AT])


class _Record(bt.Strategy):
    params = (("registry", None), ("gap_policy", None))

    def __init__(self) -> None:
        self.pred = MlPrediction(self.data, registry=self.p.registry, gap_policy=self.p.gap_policy)
        self.rows: list[tuple[float, float]] = []

    def next(self) -> None:
        self.rows.append((self.data.datetime[0], self.pred.predicted_return[0]))


def _run(candles: pd.DataFrame, registry: str, gap_policy=None, **kwargs) -> tuple:
    cerebro = bt.Cerebro(stdstats=False, **kwargs)
    cerebro.adddata(make_feed(candles, timeframe="1h"), name="BTCUSDT")
    cerebro.addstrategy(_Record, registry=registry, gap_policy=gap_policy)
    strat = cerebro.run()[0]
    return np.array([r[1] for r in strat.rows]), strat.pred


def _engine(registry: str, gap_policy: str) -> PredictionEngine:
    config = PredictionConfig(model_registry_path=Path(registry))
    return PredictionEngine(config, gap_policy=gap_policy)


@pytest.mark.parametrize(
    "mode",
    [{}, {"runonce": False}, {"preload": False}, {"exactbars": 1}],
    ids=["runonce", "next", "streaming", "exactbars"],
)
def test_ml_prediction_with_gap_and_default_policy_skips_exactly_windows_spanning_it(
    registry, gapped, mode
):
    values, pred = _run(gapped, registry, **mode)
    min_bars = pred.bundle.pipeline.min_bars
    # rows of the backtest start at bar min_bars - 1; bar GAP_AT follows the gap
    positions = np.arange(min_bars - 1, len(gapped))
    spans = (positions - min_bars + 1 < GAP_AT) & (positions >= GAP_AT)
    assert np.isnan(values[spans]).all()
    assert np.isfinite(values[~spans]).all()
    assert pred.skipped_bars == int(spans.sum()) == min_bars - 1
    assert pred.gap_bars == [gapped.index[GAP_AT] + pd.Timedelta("1h")]  # bars carry close time


def test_ml_prediction_with_gap_matches_engine_series_bar_for_bar(registry, gapped):
    values, _ = _run(gapped, registry)
    series = _engine(registry, "skip").predict_series(gapped)
    expected = series["predicted_return"].to_numpy()
    np.testing.assert_array_equal(values, expected)


def test_ml_prediction_with_gap_and_raise_policy_names_the_bar_after_it(registry, gapped):
    match = r"gap before the bar closing at 2024-01-13 14:00:00.*1 missing"
    with pytest.raises(CandleDataError, match=match):
        _run(gapped, registry, gap_policy="raise")


def test_ml_prediction_with_gap_and_warn_policy_predicts_every_bar_and_logs(
    registry, gapped, caplog
):
    values, pred = _run(gapped, registry, gap_policy="warn")
    assert np.isfinite(values).all()
    assert pred.skipped_bars == 0
    assert "treated as consecutive" in caplog.text


def test_ml_prediction_with_unknown_gap_policy_raises_configuration_error(registry, candles):
    with pytest.raises(ConfigurationError, match="'gap_policy' parameter of MlPrediction.*'fill'"):
        _run(candles, registry, gap_policy="fill")


def test_ml_prediction_with_bars_closer_than_timeframe_raises_naming_bar(registry):
    frame = synthetic_candles(400, freq="30min")
    cerebro = bt.Cerebro(stdstats=False)
    feed = make_feed(frame, timeframe="1h")
    cerebro.adddata(feed, name="BTCUSDT")
    cerebro.addstrategy(_Record, registry=registry)
    with pytest.raises(CandleDataError, match="not a multiple of the model's timeframe 1h"):
        cerebro.run()


def test_engine_predict_with_skip_policy_and_gap_in_its_rows_raises(registry, gapped):
    with pytest.raises(CandleDataError, match="gap before"):
        _engine(registry, "skip").predict(gapped.iloc[: GAP_AT + 5])
    assert _engine(registry, "skip").predict(gapped).price is not None  # gap far back
