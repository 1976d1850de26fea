"""``benchmarks/bench_portfolio.py``: the twins without ML time the same bars as the sides with
it, the table splits each bar into backtrader's cost and the ML cost, the profile covers the
timed bars only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import backtrader as bt
import pytest

from atb_strategies.data import generate_ohlcv, make_feed
from atb_strategies.registry.shared import shared_registry

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_portfolio.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_portfolio", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through it
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_table_splits_each_bar_into_backtrader_and_ml_cost(bench, capsys) -> None:
    best = {
        "1 symbol": 0.0010,
        "4 symbols, batched": 0.0030,
        "4 symbols, one call per feed": 0.0050,
        "1 symbol, no ML": 0.0004,
        "4 symbols, no ML": 0.0012,
    }
    bench.print_table(best, "4 symbols")
    rows = {
        line[:30].strip(): line[30:].split() for line in capsys.readouterr().out.splitlines()[1:]
    }
    whole, ratio, bare, bare_ratio, ml, ml_ratio = rows["4 symbols, batched"]
    assert float(whole) == pytest.approx(3.0) and ratio == "3.00x"
    assert float(bare) == pytest.approx(1.2) and bare_ratio == "3.00x"  # 1.2 / 0.4
    assert float(ml) == pytest.approx(1.8) and ml_ratio == "3.00x"  # (3 - 1.2) / (1 - 0.4)
    assert rows["4 symbols, one call per feed"][4:] == ["3.800", "6.33x"]
    # a twin's whole cost is compared with one symbol's twin, and has no split
    assert rows["4 symbols, no ML"] == ["1.200", "3.00x"]


def _bars_timed(bench, frames, registry: str, ml: bool, warmup: int) -> int:
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    for i, frame in enumerate(frames):
        cerebro.adddata(make_feed(frame, timeframe="1h", name=f"S{i}"), name=f"S{i}")
    cerebro.addstrategy(bench.Timed, registry=registry, ml=ml, warmup=warmup)
    return cerebro.run()[0].bars


def test_twin_without_ml_times_the_same_bars(bench) -> None:
    registry = str(bench.MODELS)
    warmup = shared_registry(registry).select_bundle("BTCUSDT", "basic", "1h", None)
    warmup = warmup.pipeline.min_bars
    frames = [generate_ohlcv(warmup + 6, timeframe="1h", seed=s) for s in (1, 2)]
    with_ml = _bars_timed(bench, frames, registry, True, warmup)
    without = _bars_timed(bench, frames, registry, False, warmup)
    # the first bar with every prediction starts the clock; the 6 after it are timed
    assert with_ml == without == 6


def test_profile_lists_the_timed_bars_of_the_batched_side(bench) -> None:
    registry = str(bench.MODELS)
    bundle = shared_registry(registry).select_bundle("BTCUSDT", "basic", "1h", None)
    warmup = bundle.pipeline.min_bars
    frames = [generate_ohlcv(warmup + 4, timeframe="1h", seed=s) for s in (1, 2, 3)]
    text = bench.profile(bench.Side(frames, ml=True), registry, "BTCUSDT", warmup, 200)
    assert "by cumulative time" in text and "by tottime time" in text
    assert "(_run_group)" in text and "(predict_batch)" in text
    # only the 4 timed bars (one batch each), not the warm-up: 4 calls of the batch
    line = next(row for row in text.splitlines() if "(_run_group)" in row)
    assert line.split()[0] == "4"
