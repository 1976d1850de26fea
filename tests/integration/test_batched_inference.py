"""Batched streaming inference across feeds (issue 20 item 3): the streaming ``MlPrediction``
indicators of one strategy that serve one model run one ONNX call per bar, with exactly the
numbers of one call per feed and of the preloaded batch path, on feeds that start and end at
different times and miss a bar."""

from __future__ import annotations

from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.data import make_feed
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.inference.runner import OnnxRunner
from atb_strategies.registry.shared import shared_registry
from tests.conftest import RICH_FEATURES, synthetic_candles

LINES = ("predicted_price", "predicted_return", "confidence", "direction", "version_index")
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


class Probe(bt.Strategy):
    """One ``MlPrediction`` per feed; ``models`` maps a feed's name to its registry symbol."""

    params = (("models", None), ("registry", None), ("batch_feeds", True))

    def __init__(self) -> None:
        self.preds = {
            d._name: MlPrediction(
                d,
                symbol=self.p.models[d._name],
                registry=self.p.registry,
                batch_feeds=self.p.batch_feeds,
            )
            for d in self.datas
        }


@pytest.fixture
def session_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch size of every real ``session.run`` made through ``OnnxRunner.run_raw``."""
    calls: list[int] = []
    real = OnnxRunner.run_raw

    def counted(self: OnnxRunner, x: np.ndarray) -> np.ndarray:
        calls.append(int(x.shape[0]))
        return real(self, x)

    monkeypatch.setattr(OnnxRunner, "run_raw", counted)
    return calls


def _feeds(n: int = 420) -> dict[str, pd.DataFrame]:
    """Four markets over one clock: A full, B starts 37 bars later, C ends 60 bars earlier,
    D misses one candle in the middle."""
    a = synthetic_candles(n, seed=1)
    b = synthetic_candles(n, seed=2).iloc[37:]
    c = synthetic_candles(n, seed=3).iloc[:-60]
    d = synthetic_candles(n, seed=4)
    d = d.drop(d.index[250])
    return {"A": a, "B": b, "C": c, "D": d}


def _run(
    feeds: dict[str, pd.DataFrame],
    models: dict[str, str],
    registry: Path,
    *,
    preload: bool,
    batch_feeds: bool = True,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray], Probe]:
    cerebro = bt.Cerebro(stdstats=False, preload=preload, runonce=preload)
    for name, frame in feeds.items():
        cerebro.adddata(make_feed(frame, timeframe="1h", name=name), name=name)
    cerebro.addstrategy(Probe, models=models, registry=str(registry), batch_feeds=batch_feeds)
    strat = cerebro.run()[0]
    lines = {
        name: {k: np.asarray(getattr(p.lines, k).array, dtype=np.float64) for k in LINES}
        for name, p in strat.preds.items()
    }
    stamps = {
        name: np.asarray(p.data.datetime.array[: len(lines[name]["direction"])])
        for name, p in strat.preds.items()
    }
    return lines, stamps, strat


def _assert_same(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for name in left:
        for k in LINES:
            np.testing.assert_array_equal(left[name][k], right[name][k], err_msg=f"{name} {k}")


def _expected_calls(lines: dict, stamps: dict, models: dict[str, str]) -> tuple[int, int]:
    """(model calls when batched: one per model and bar time with a prediction, windows run)."""
    times: dict[str, set[float]] = {}
    windows = 0
    for name, values in lines.items():
        made = np.isfinite(values["predicted_return"])
        windows += int(made.sum())
        times.setdefault(models[name], set()).update(stamps[name][made].tolist())
    return sum(len(t) for t in times.values()), windows


def test_one_onnx_call_per_bar_with_the_numbers_of_one_call_per_feed(
    make_bundle, tmp_path, session_calls
):
    make_bundle(symbol="BTCUSDT", features=RICH_FEATURES[:3], seed=3)
    make_bundle(symbol="ETHUSDT", features=RICH_FEATURES[:3], seed=5)
    registry = tmp_path / "models"
    feeds = _feeds()
    models = {"A": "BTCUSDT", "B": "BTCUSDT", "C": "BTCUSDT", "D": "ETHUSDT"}

    # first the preloaded batch path (it also loads the bundles, whose checks run the model)
    preloaded, _, _ = _run(feeds, models, registry, preload=True)
    session_calls.clear()
    batched, stamps, strat = _run(feeds, models, registry, preload=False)
    batched_calls = list(session_calls)
    session_calls.clear()
    single, _, _ = _run(feeds, models, registry, preload=False, batch_feeds=False)
    single_calls = list(session_calls)

    # the same numbers three ways: batched, one call per feed, and the preloaded batch path
    _assert_same(batched, single)
    _assert_same(batched, preloaded)
    # every feed predicted, and the gap in D made no prediction from rows that span it
    for name in feeds:
        assert np.isfinite(batched[name]["predicted_return"]).sum() > 50, name
    assert strat.preds["D"].skipped_bars > 0
    assert len(strat.preds["D"].gap_bars) == 1

    calls, windows = _expected_calls(batched, stamps, models)
    assert len(batched_calls) == calls  # one call per model and bar
    assert len(single_calls) == windows  # one call per feed and bar
    assert calls < windows
    assert max(batched_calls) == 3  # A, B and C share a call where all three predict
    # the strategy's batcher saw every window
    batcher = strat._atb_feed_batcher
    assert batcher.calls == calls and batcher.windows == windows


@pytest.mark.parametrize(
    "which", ["shipped", pytest.param("reference", marks=pytest.mark.realdata)]
)
def test_a_lone_window_and_a_batch_of_many_agree_on_real_models(which, session_calls, request):
    """Three feeds on the shipped model (an MLP) or on the reference project's LSTM (ONNX
    ``Loop`` nodes, where batch-1 kernels differ by up to 1.8e-7): batched streaming equals
    one call per feed and the preloaded batch, from a lone window (one feed started) on."""
    if which == "reference":
        models = request.getfixturevalue("shared_dir") / "reference-bundles" / "models"
    else:
        models = REPO_MODELS
    bundle = shared_registry(str(models)).select_bundle("BTCUSDT", "basic", "1h", None)
    n = bundle.pipeline.min_bars + 40
    feeds = {
        "X": synthetic_candles(n, seed=11),
        "Y": synthetic_candles(n, seed=12).iloc[15:],  # later: X alone at first
        "Z": synthetic_candles(n, seed=13),
    }
    names = dict.fromkeys(feeds, "BTCUSDT")
    preloaded, _, _ = _run(feeds, names, models, preload=True)
    session_calls.clear()
    batched, stamps, _ = _run(feeds, names, models, preload=False)
    calls = len(session_calls)
    single, _, _ = _run(feeds, names, models, preload=False, batch_feeds=False)
    _assert_same(batched, single)
    _assert_same(batched, preloaded)
    expected, windows = _expected_calls(batched, stamps, names)
    assert calls == expected < windows


def test_indicators_outside_a_batch_still_predict(make_bundle, tmp_path, session_calls):
    """A feed whose model no other feed serves runs alone (a batch of one: two rows with
    batch parity), and the results equal the preloaded ones."""
    make_bundle(symbol="BTCUSDT", features=RICH_FEATURES[:3], seed=3)
    make_bundle(symbol="ETHUSDT", features=RICH_FEATURES[:3], seed=5)
    feeds = {"A": synthetic_candles(200, seed=1), "B": synthetic_candles(200, seed=2)}
    models = {"A": "BTCUSDT", "B": "ETHUSDT"}
    registry = tmp_path / "models"
    preloaded, _, _ = _run(feeds, models, registry, preload=True)
    session_calls.clear()
    batched, stamps, _ = _run(feeds, models, registry, preload=False)
    assert set(session_calls) == {2}  # every call: one window run as a batch of two
    assert len(session_calls) == _expected_calls(batched, stamps, models)[1]
    _assert_same(batched, preloaded)
