"""Per-bar streaming cost of a portfolio on one model: 20 symbols against 1 (issue 20 item 3).

Each side is a ``preload=False`` cerebro (the streaming path, as in live trading) whose strategy
gives every feed an ``MlPrediction`` on the same bundle (the shipped ``BTCUSDT/basic`` LSTM by
default). The time per bar is measured inside the run, from the first bar on which every feed
predicts to the end, so loading the model and the warm-up do not count. Sides:

* ``1 symbol``: one feed;
* ``N symbols, batched``: N feeds, one ONNX call per bar for all (``batch_feeds=True``, the
  default);
* ``N symbols, one call per feed``: ``batch_feeds=False``, for comparison.

The sides alternate within each round (``--repeat`` rounds); the best time of each side is
kept and the ratios to ``1 symbol`` are printed (goal: N=20 batched <= 3x). This machine is
shared: compare ratios from one run, never absolute times.

A second table isolates the part batching changes, the model work per bar: one
``OnnxRunner.predict`` on one window against one ``predict_batch`` on N windows (what the
batcher runs), alternating bar by bar. ``--registry ../shared/reference-bundles/models`` runs
both on the reference LSTM, whose single call costs far more than the shipped model's
(there the model work dominates the bar).

Usage: ``python3 benchmarks/bench_portfolio.py [--symbols 20] [--bars 200] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd

from atb_strategies.data import generate_ohlcv, make_feed
from atb_strategies.features.pipeline import PriceContext
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.registry.shared import shared_registry

MODELS = Path(__file__).resolve().parents[1] / "models"


class Timed(bt.Strategy):
    """An ``MlPrediction`` per feed on one model; times the bars after the warm-up."""

    params = (("symbol", "BTCUSDT"), ("registry", None), ("batch_feeds", True))

    def __init__(self) -> None:
        self.preds = [
            MlPrediction(
                d, symbol=self.p.symbol, registry=self.p.registry, batch_feeds=self.p.batch_feeds
            )
            for d in self.datas
        ]
        self.t0: float | None = None
        self.bars = 0

    def next(self) -> None:  # every feed has a prediction from here on
        if self.t0 is None:
            self.t0 = time.perf_counter()
            return
        self.bars += 1

    def stop(self) -> None:
        self.seconds = time.perf_counter() - (self.t0 or time.perf_counter())


def per_bar(frames: list[pd.DataFrame], registry: str, symbol: str, batch_feeds: bool) -> float:
    """Seconds per bar of a streaming run over ``frames`` (after the warm-up)."""
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    for i, frame in enumerate(frames):
        cerebro.adddata(make_feed(frame, timeframe="1h", name=f"S{i:02d}"), name=f"S{i:02d}")
    cerebro.addstrategy(Timed, symbol=symbol, registry=registry, batch_feeds=batch_feeds)
    strat = cerebro.run()[0]
    return strat.seconds / max(strat.bars, 1)


def inference_per_bar(bundle, frames: list[pd.DataFrame], repeat: int) -> tuple[float, float]:
    """Best seconds per bar of one ``predict`` (one window) and of one ``predict_batch`` (a
    window of every frame at the same bar), alternating bar by bar."""
    pipe, runner = bundle.pipeline, bundle.runner
    batches = [pipe.batch_windows({c: f[c].to_numpy(float) for c in pipe.columns}) for f in frames]
    n = min(len(b.end_index) for b in batches)
    windows = np.stack([b.windows[:n] for b in batches], axis=1).astype(np.float32)
    ctx = [np.stack([getattr(b.context, k)[:n] for b in batches], axis=1) for k in _CTX]
    best_one = best_all = float("inf")
    for _ in range(repeat):
        one = every = 0.0
        for i in range(n):
            t0 = time.perf_counter()
            runner.predict(windows[i, 0], batches[0].context_at(i))
            t1 = time.perf_counter()
            runner.predict_batch(windows[i], PriceContext(*(c[i] for c in ctx)))
            t2 = time.perf_counter()
            one, every = one + t1 - t0, every + t2 - t1
        best_one, best_all = min(best_one, one / n), min(best_all, every / n)
    return best_one, best_all


_CTX = ("reference_close", "window_close_min", "window_close_max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=MODELS)
    parser.add_argument("--symbol", default="BTCUSDT", help="The model's registry symbol.")
    parser.add_argument("--symbols", type=int, default=20, help="Feeds on the portfolio side.")
    parser.add_argument("--bars", type=int, default=200, help="Timed bars after the warm-up.")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    registry = str(args.registry)
    bundle = shared_registry(registry).select_bundle(args.symbol, "basic", "1h", None)
    n = bundle.pipeline.min_bars + args.bars
    frames = [
        generate_ohlcv(n, timeframe="1h", seed=100 + i, start_price=100.0 * (i + 1))
        for i in range(args.symbols)
    ]
    sides = {
        "1 symbol": (frames[:1], True),
        f"{args.symbols} symbols, batched": (frames, True),
        f"{args.symbols} symbols, one call per feed": (frames, False),
    }
    best = dict.fromkeys(sides, float("inf"))
    print(f"model {bundle.key}, {args.bars} timed bars per run, {args.repeat} rounds")
    for r in range(args.repeat):
        # alternate the sides, and their order between rounds
        names = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in names:
            data, batched = sides[name]
            best[name] = min(best[name], per_bar(data, registry, args.symbol, batched))
    base = best["1 symbol"]
    for name, seconds in best.items():
        print(f"{name:<36} {seconds * 1000:8.2f} ms/bar   {seconds / base:6.2f}x one symbol")
    one, every = inference_per_bar(bundle, frames, args.repeat)
    print(f"model work per bar (predict of 1 window vs predict_batch of {args.symbols}):")
    print(f"{'1 symbol':<36} {one * 1000:8.3f} ms/bar   {1.0:6.2f}x one symbol")
    print(
        f"{f'{args.symbols} symbols, batched':<36} {every * 1000:8.3f} ms/bar   "
        f"{every / one:6.2f}x one symbol"
    )
    print("(a shared, loaded machine: compare the ratios of one run, not the times)")


if __name__ == "__main__":
    main()
