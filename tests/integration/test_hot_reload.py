"""Hot reload of ``latest`` (``MlPrediction(follow_latest=True)``) on a streaming feed.

Real bundles (linear ONNX models) in a temporary registry; the pointer is moved with the
registry's own ``promote`` while cerebro runs, from inside a strategy, exactly between two bars.
After a switch the new version's predictions must equal those of a run pinned to it from the
start (its features are warmed from every row seen), and a version that fails validation must
never serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.data.feeds import make_feed
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.inference.certificate import CERTIFICATE_FILE, certificate_bytes
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import promote
from atb_strategies.registry.shared import clear_shared_registries
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import RICH_FEATURES, synthetic_candles

V1, V2, V3 = "2026-01-01_1h_v1", "2026-02-01_1h_v2", "2026-03-01_1h_v3"
FEATURES = RICH_FEATURES[:6]  # recursive (EMA, RSI) and window transforms: warm-up matters
PROMOTE_AT = 150  # bars seen when the pointer moves (after the strategy's decision there)


@pytest.fixture(autouse=True)
def _fresh_registries() -> Any:
    clear_shared_registries()
    yield
    clear_shared_registries()


@pytest.fixture
def registry(make_bundle, tmp_path: Path) -> Path:
    make_bundle(version=V1, features=FEATURES, seed=1)
    make_bundle(version=V2, features=FEATURES, seed=2, promote=False)
    return tmp_path / "models"


class Recorder(bt.Strategy):
    """Records (bar, model key, predicted return) and moves ``latest`` at a chosen bar."""

    params = (("registry", None), ("version", None), ("follow", None), ("promote", None))

    def __init__(self) -> None:
        self.pred = MlPrediction(
            self.data,
            registry=self.p.registry,
            version=self.p.version,
            follow_latest=self.p.follow,
        )
        self.rows: list[tuple[str, str, float]] = []

    def next(self) -> None:
        stamp = bt.num2date(self.data.datetime[0]).isoformat()
        self.rows.append((stamp, self.pred.model_key, float(self.pred.predicted_return[0])))
        if self.p.promote and len(self) == PROMOTE_AT:
            promote(RegistryLayout(self.p.registry), "BTCUSDT", "basic", self.p.promote)


def _run(registry: Path, **params: Any) -> Recorder:
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.adddata(make_feed(synthetic_candles(400, seed=5), name="BTCUSDT"))
    cerebro.addstrategy(Recorder, registry=str(registry), **params)
    return cerebro.run()[0]


def _frame(strat: Recorder) -> pd.DataFrame:
    return pd.DataFrame(strat.rows, columns=["bar", "key", "ret"]).set_index("bar")


def test_promotion_switches_at_the_next_bar_and_predicts_like_a_session_started_on_it(registry):
    followed = _run(registry, follow=True, promote=V2)
    pinned_v1 = _frame(_run(registry, version=V1))
    pinned_v2 = _frame(_run(registry, version=V2))
    got = _frame(followed)
    keys = got["key"].to_numpy()
    switch = int(np.argmax(keys == f"BTCUSDT/basic@{V2}"))
    # promoted after the decision at the PROMOTE_AT-th bar: the next bar is served by v2
    first_next = len(followed) - len(got)  # bars before the strategy's first next()
    assert switch == PROMOTE_AT - first_next
    assert set(keys[:switch]) == {f"BTCUSDT/basic@{V1}"}
    assert set(keys[switch:]) == {f"BTCUSDT/basic@{V2}"}
    np.testing.assert_array_equal(got["ret"][:switch], pinned_v1["ret"][:switch])
    # warmed from every row seen: bit-identical to a run pinned to v2 from the first bar
    np.testing.assert_array_equal(got["ret"][switch:], pinned_v2["ret"][switch:])
    assert not np.allclose(pinned_v1["ret"][switch:], pinned_v2["ret"][switch:])
    (event,) = followed.pred.model_events
    assert (event.kind, event.from_key, event.to_key) == (
        "switch",
        f"BTCUSDT/basic@{V1}",
        f"BTCUSDT/basic@{V2}",
    )
    assert event.bar == got.index[switch]


def test_a_pinned_version_never_moves(registry):
    strat = _run(registry, version=V1, follow=True, promote=V2)
    assert set(_frame(strat)["key"]) == {f"BTCUSDT/basic@{V1}"}
    assert strat.pred.model_events == []


def test_follow_latest_is_off_for_historical_feeds_by_default(registry):
    strat = _run(registry, promote=V2)
    assert set(_frame(strat)["key"]) == {f"BTCUSDT/basic@{V1}"}


def _corrupt(directory: Path) -> str:
    (directory / "model.onnx").write_bytes(b"not an onnx model")
    return "sha256"


def _wrong_certificate(directory: Path) -> str:
    windows = np.zeros((2, 16, len(FEATURES)), dtype=np.float32)
    (directory / CERTIFICATE_FILE).write_bytes(certificate_bytes(windows, np.ones((2, 1))))
    return "parity certificate"


def _other_columns(directory: Path) -> str:
    return "candle columns"


@pytest.mark.parametrize("spoil", [_corrupt, _wrong_certificate, _other_columns])
def test_a_promoted_version_that_fails_validation_is_refused_once_and_the_old_keeps_serving(
    make_bundle, tmp_path, caplog, spoil
):
    make_bundle(version=V1, features=FEATURES, seed=1)
    # _other_columns: a model of the close alone, where v1 reads high, low and close
    features = (RICH_FEATURES[1],) if spoil is _other_columns else FEATURES
    bad = make_bundle(version=V3, features=features, seed=3, promote=False)
    words = spoil(bad)
    registry = tmp_path / "models"
    strat = _run(registry, follow=True, promote=V3)
    assert set(_frame(strat)["key"]) == {f"BTCUSDT/basic@{V1}"}
    (event,) = strat.pred.model_events  # refused once, though latest keeps naming it
    assert event.kind == "refused" and event.to_key == f"BTCUSDT/basic@{V3}"
    assert words in event.reason
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
    pinned = _frame(_run(registry, version=V1))
    np.testing.assert_array_equal(_frame(strat)["ret"], pinned["ret"])


def test_follow_latest_with_a_bad_value_raises_one_line(registry):
    with pytest.raises(ConfigurationError, match="'follow_latest' parameter of MlPrediction"):
        _run(registry, follow="yes")


class PromotingMlBasic(MlBasic):
    """MlBasic that moves ``latest`` after its decision at bar ``PROMOTE_AT`` and records the
    protective legs alive then and at the next bar (the first served by the new version)."""

    params = (("promote_to", None),)

    def __init__(self) -> None:
        super().__init__()
        self.legs_at: dict[str, list[int]] = {}

    def _alive_legs(self) -> list[int]:
        return sorted(leg.ref for leg in self._legs[self.datas[0]] if leg.alive())

    def next(self) -> None:
        if len(self) == PROMOTE_AT + 1:
            self.legs_at["after"] = self._alive_legs()  # before this bar's decision
        super().next()
        if len(self) == PROMOTE_AT:
            self.legs_at["before"] = self._alive_legs()
            promote(RegistryLayout(self.p.registry), "BTCUSDT", "basic", self.p.promote_to)


def test_an_open_position_keeps_its_stop_loss_and_take_profit_across_the_switch(registry):
    # enter on the bar before the switch, with legs far enough not to fill on the next bar
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.adddata(make_feed(synthetic_candles(400, seed=5), name="BTCUSDT"))
    cerebro.addstrategy(
        PromotingMlBasic,
        registry=str(registry),
        follow_latest=True,
        promote_to=V2,
        long_threshold=-1.0,
        exit_threshold=10.0,
        stop_loss=0.2,
        take_profit=0.2,
    )
    strat = cerebro.run()[0]
    assert strat.getposition(strat.datas[0]).size > 0
    assert len(strat.legs_at["before"]) == 2  # the bracket's stop-loss and take-profit
    assert strat.legs_at["after"] == strat.legs_at["before"]  # the same orders, still alive
    keys = [d["model_key"] for d in strat.decisions]
    assert keys[-1] == f"BTCUSDT/basic@{V2}" and keys[0] == f"BTCUSDT/basic@{V1}"


def test_a_promoted_version_with_another_window_than_the_strategy_requires_is_refused(
    make_bundle, tmp_path
):
    make_bundle(version=V1, features=FEATURES, seed=1, sequence_length=16)
    make_bundle(version=V2, features=FEATURES, seed=2, sequence_length=24, promote=False)
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.adddata(make_feed(synthetic_candles(400, seed=5), name="BTCUSDT"))
    cerebro.addstrategy(
        PromotingMlBasic,
        registry=str(tmp_path / "models"),
        follow_latest=True,
        promote_to=V2,
        sequence_length=16,
    )
    strat = cerebro.run()[0]
    pred = strat.predictions[strat.datas[0]]
    (event,) = pred.model_events
    assert event.kind == "refused" and "configured with sequence_length=16" in event.reason
    assert {d["model_key"] for d in strat.decisions} == {f"BTCUSDT/basic@{V1}"}
