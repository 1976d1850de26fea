"""``version="asof"``: every bar is served by the newest version trained before it, switching
at exactly the right bars, in every backtrader mode; orders carry the version that made them."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.bundle.jsonio import read_json
from atb_strategies.bundle.lineage import training_period
from atb_strategies.data.feeds import make_feed
from atb_strategies.evaluation.walkforward import WalkForwardConfig, run_walk_forward
from atb_strategies.exceptions import ModelNotFoundError
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.strategies.ml_basic import MlBasic
from tests.integration.test_walk_forward import ar_market

pytestmark = pytest.mark.slow
HOUR = pd.Timedelta("1h")


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    registry = tmp_path_factory.mktemp("asof") / "models"
    market = ar_market(2600, phi=0.3, seed=5)
    config = WalkForwardConfig(
        symbol="BTCUSDT",
        train_bars=1000,
        test_bars=400,
        sequence_length=16,
        epochs=2,
        registry=registry,
        bootstrap_reps=200,
    )
    result = run_walk_forward(market, config, executor="serial")
    return market, str(registry), result


class _Record(bt.Strategy):
    params = (("registry", None),)

    def __init__(self) -> None:
        self.pred = MlPrediction(self.data, registry=self.p.registry, version="asof")
        self.rows: list[tuple[pd.Timestamp, float, str]] = []

    def next(self) -> None:
        opened = bt.num2date(self.data.datetime[0]) - HOUR
        self.rows.append((opened, self.pred.predicted_return[0], self.pred.model_key))


def _run(market, registry, **kwargs) -> pd.DataFrame:
    cerebro = bt.Cerebro(stdstats=False, **kwargs)
    cerebro.adddata(make_feed(market, timeframe="1h"), name="BTCUSDT")
    cerebro.addstrategy(_Record, registry=registry)
    rows = cerebro.run()[0].rows
    return pd.DataFrame(rows, columns=["time", "ret", "key"]).set_index("time")


def test_asof_switches_versions_exactly_at_each_fold_test_start(folds):
    market, registry, result = folds
    served = _run(market, registry)
    first_test = market.index[result.folds[0].test_start]
    assert served.loc[: first_test - HOUR, "ret"].isna().all()  # nothing trained before
    for r in result.results:
        start = market.index[r.fold.test_start]
        assert served.loc[start, "key"] == f"BTCUSDT/basic@{r.version}"
        assert served.loc[start - HOUR, "key"] != f"BTCUSDT/basic@{r.version}"
    layout = RegistryLayout(registry)
    for opened, key in served.loc[first_test:, "key"].items():
        vdir = layout.version_dir("BTCUSDT", "basic", key.split("@")[1])
        period = training_period(read_json(vdir / "metadata.json"))
        assert period.seen_until < opened and period.available_from <= opened


def test_asof_predictions_equal_the_walk_forward_test_predictions(folds):
    market, registry, result = folds
    served = _run(market, registry)
    pooled = result.predictions
    np.testing.assert_allclose(
        np.log1p(served.loc[pooled.index, "ret"]), pooled["predicted"], rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("mode", [{"runonce": False}, {"preload": False}], ids=["next", "stream"])
def test_asof_in_every_backtrader_mode_equals_the_batch(folds, mode):
    market, registry, _ = folds
    batch = _run(market, registry)
    other = _run(market, registry, **mode)
    pd.testing.assert_series_equal(batch["key"], other["key"])
    np.testing.assert_allclose(batch["ret"], other["ret"], rtol=1e-6, atol=1e-9)


def test_asof_backtest_orders_carry_the_version_that_made_them(folds):
    market, registry, _ = folds
    run = run_backtest(
        market,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=registry,
        version="asof",
        long_threshold=0.0,
    )
    entries = [o for o in run.orders if o["role"] == "entry"]
    assert entries
    schedule = run.strategy.predictions[run.strategy.datas[0]].schedule
    for order in entries:
        decided = pd.Timestamp(order["time"]) - 2 * HOUR  # filled at the next bar's open
        assert order["model_key"] == f"BTCUSDT/basic@{schedule.at(decided)}"
    assert len({o["model_key"] for o in entries}) > 1
    assert run.summary["in_sample"]["in_sample_bars"] == 0


def test_asof_without_versions_of_known_period_says_so(shared_dir):
    frame = ar_market(400, phi=0.0)
    registry = str(shared_dir / "reference-bundles" / "models")
    with pytest.raises(ModelNotFoundError, match="version='asof' needs versions"):
        _run(frame, registry)


def test_asof_with_run_filter_replays_only_that_walk_forward(folds, tmp_path):
    import shutil

    from atb_strategies.registry.asof import asof_schedule

    market, registry, result = folds
    copy = tmp_path / "models"
    shutil.copytree(registry, copy, symlinks=True)
    config = WalkForwardConfig(
        symbol="BTCUSDT",
        train_bars=1200,
        test_bars=300,
        sequence_length=16,
        epochs=1,
        registry=copy,
        bootstrap_reps=200,
    )
    other = run_walk_forward(market, config, executor="serial")
    layout = RegistryLayout(copy)
    mixed = asof_schedule(layout, "BTCUSDT", "basic", "1h")
    own = asof_schedule(layout, "BTCUSDT", "basic", "1h", run=result.walk_forward_id)
    assert len(mixed.versions) == len(result.results) + len(other.results)
    assert set(own.versions) == {r.version for r in result.results}
