"""The drift guard in backtests: the same score in batch and bar by bar, and each action.

The market is synthetic with a volatility regime change at ``SHIFT``: from there on every
candle's high-low range is five times wider. The bundle's drift reference is fitted (and
calibrated) on bars before the shift only, as training would, so the ``range`` feature must
drift after it and nothing may fire well before it.
"""

from __future__ import annotations

import json
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data.feeds import make_feed
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.drift import METADATA_KEY, fit_reference
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.inference.bundle import ModelBundle  # noqa: F401  (type of pred.bundle)
from atb_strategies.registry.shared import clear_shared_registries
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.training.drift import calibrate
from tests.conftest import RICH_FEATURES, synthetic_candles

pytestmark = pytest.mark.slow  # runs backtests

SHIFT = 1500
WINDOW = 72
FEATURES = RICH_FEATURES[1:3]  # log_ret, range


def regime_change(n: int = 2200) -> pd.DataFrame:
    candles = synthetic_candles(n, seed=13)
    mid = (candles["high"] + candles["low"]) / 2
    half = (candles["high"] - candles["low"]) / 2
    late = np.arange(n) >= SHIFT
    wide = np.where(late, 5.0, 1.0)
    candles["high"] = np.maximum(mid + half * wide, candles[["open", "close"]].max(axis=1))
    candles["low"] = np.minimum(mid - half * wide, candles[["open", "close"]].min(axis=1))
    return candles


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return regime_change()


@pytest.fixture
def registry(make_bundle, market: pd.DataFrame) -> str:
    clear_shared_registries()
    directory = make_bundle(features=FEATURES, seed=3)
    schema_path = directory / "feature_schema.json"
    from atb_strategies.features.schema import FeatureSchema

    schema = FeatureSchema.from_dict(json.loads(schema_path.read_text()))
    train = market.iloc[:1000]
    series = FeaturePipeline(schema).series({c: train[c].to_numpy() for c in train.columns})
    reference = calibrate(fit_reference(series, schema.feature_names), series, None, WINDOW)
    meta_path = directory / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta[METADATA_KEY] = reference.to_dict()
    meta_path.write_text(json.dumps(meta))
    yield str(directory.parents[2])
    clear_shared_registries()


class Recorder(bt.Strategy):
    params = (("registry", None),)

    def __init__(self) -> None:
        self.pred = MlPrediction(self.data, registry=self.p.registry, drift_window=WINDOW)
        self.rows: list[tuple[float, float, str | None]] = []

    def next(self) -> None:
        self.rows.append(
            (float(self.pred.drift[0]), float(self.pred.drift_column[0]), self.pred.drift_reason())
        )


def _scores(market: pd.DataFrame, registry: str, preload: bool) -> pd.DataFrame:
    cerebro = bt.Cerebro(stdstats=False, preload=preload, runonce=preload)
    cerebro.adddata(make_feed(market, name="BTCUSDT"))
    cerebro.addstrategy(Recorder, registry=registry)
    return pd.DataFrame(cerebro.run()[0].rows, columns=["score", "column", "reason"])


def test_the_drift_score_is_the_same_in_batch_and_bar_by_bar_and_fires_after_the_shift(
    market, registry
):
    batch, stream = _scores(market, registry, True), _scores(market, registry, False)
    np.testing.assert_allclose(batch["score"], stream["score"], rtol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(batch["column"], stream["column"])
    offset = len(market) - len(batch)  # bars before the strategy's first next()
    fired = np.flatnonzero(batch["score"].to_numpy() > 1) + offset
    # never on the bars the reference was fitted on (by construction of the calibration), rarely
    # on later bars of the same regime (a week larger than any of training: a false alarm)
    assert not (fired < 1000).any()
    assert (fired < SHIFT).sum() <= 5, fired[fired < SHIFT]
    # from the regime change on: within one window (the calibrated threshold is the largest
    # week of training, 3.4 for 'range' here, so most of the window must be new), then always
    first = fired[fired >= SHIFT][0]
    assert first < SHIFT + WINDOW
    assert (batch["score"].iloc[SHIFT + WINDOW - offset :] > 1).all()
    reason = batch["reason"].iloc[first - offset]
    assert reason.startswith("inputs drifted: PSI of 'range'") and f"last {WINDOW} bars" in reason


def _run(market, registry, **params):
    return run_backtest(
        market,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=registry,
        long_threshold=-1.0,  # always long when flat: the guard is what stops entries
        exit_threshold=10.0,
        take_profit=0.005,
        stop_loss=0.005,
        **{"drift_window": WINDOW, **params},
    )


def _decisions(result) -> pd.DataFrame:
    frame = pd.DataFrame(result.strategy.decisions)
    frame["bar"] = pd.to_datetime(frame["bar"])
    return frame.set_index("bar")


def test_drift_action_warn_trades_on_and_gives_the_reason(market, registry, caplog):
    plain = _run(market, registry)
    warned = _run(market, registry, drift_action="warn")
    pd.testing.assert_series_equal(plain.equity["value"], warned.equity["value"])
    decisions = _decisions(warned)
    late = decisions[decisions.index >= market.index[SHIFT + WINDOW]]
    assert late["reason"].str.startswith("inputs drifted").all()
    assert (late["action"] == "enter_long").any()
    assert len([r for r in caplog.records if "inputs drifted" in r.getMessage()]) >= 1


def test_drift_action_no_entries_enters_nothing_while_drifted(market, registry):
    decisions = _decisions(_run(market, registry, drift_action="no_entries"))
    drifted = decisions["reason"].fillna("").str.startswith("inputs drifted")
    assert drifted.sum() > 500
    assert not (decisions.loc[drifted, "action"] == "enter_long").any()
    assert (decisions.loc[~drifted, "action"] == "enter_long").any()


def test_drift_action_flatten_closes_the_position_when_drift_starts(market, registry):
    decisions = _decisions(_run(market, registry, drift_action="flatten"))
    drifted = decisions["reason"].fillna("").str.startswith("inputs drifted")
    held = decisions.loc[drifted & (decisions["position"] != 0)]
    assert len(held) and (held["action"] == "exit").all()
    assert not (decisions.loc[drifted, "action"] == "enter_long").any()


def test_a_bundle_without_a_drift_reference_is_reported_once_and_never_fires(
    make_bundle, market, caplog
):
    clear_shared_registries()
    directory = make_bundle(features=FEATURES, seed=3)
    result = _run(market, str(directory.parents[2]), drift_action="no_entries")
    assert not _decisions(result)["reason"].fillna("").str.startswith("inputs").any()
    notes = [r for r in caplog.records if "has no drift reference" in r.getMessage()]
    assert len(notes) == 1


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"drift_action": "panic"}, "'drift_action' parameter of MlBasic"),
        ({"drift_action": "warn", "drift_window": 1}, "'drift_window' parameter"),
        ({"drift_action": "warn", "drift_threshold": -1}, "'drift_threshold' parameter"),
    ],
)
def test_bad_drift_params_raise_one_line(market, registry, params, match):
    with pytest.raises(ConfigurationError, match=match):
        _run(market, registry, **params)


def test_the_drift_reference_lives_in_metadata(registry):
    path = next(Path(registry).rglob("metadata.json"))
    assert METADATA_KEY in json.loads(path.read_text())
