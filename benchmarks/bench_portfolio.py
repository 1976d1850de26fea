"""Per-bar streaming cost of a portfolio on one model: 20 symbols against 1 (issue 20 item 3).

Each side is a ``preload=False`` cerebro (the streaming path, as in live trading) whose strategy
gives every feed an ``MlPrediction`` on the same bundle (the shipped ``BTCUSDT/basic`` MLP by
default). The time per bar is measured inside the run, from the first bar on which every feed
predicts to the end, so loading the model and the warm-up do not count. Sides:

* ``1 symbol``: one feed;
* ``N symbols, batched``: N feeds, one ONNX call per bar for all (``batch_feeds=True``, the
  default);
* ``N symbols, one call per feed``: ``batch_feeds=False``, for comparison;
* ``1 symbol, no ML`` and ``N symbols, no ML``: twins that run the same cerebro and feeds with a
  strategy that does nothing (no ``MlPrediction``), timed over the same bars: backtrader's own
  cost per bar (its pandas feeds, clock and strategy stepping).

The sides alternate within each round (``--repeat`` rounds); the best time of each side is
kept. The table prints per bar the whole cost and its ratio to ``1 symbol`` (goal: N=20
batched <= 3x), backtrader's own cost (the twin without ML) and the ML cost (with - without)
with its ratio to one symbol's ML cost. This machine is shared: compare ratios from one run,
never absolute times.

``--profile`` runs the N-symbol batched side once more under cProfile (its timed bars only)
and prints the top functions by cumulative and by own time (where ``MlPrediction``'s per-bar
time goes).

A second table isolates the part batching changes, the model work per bar: one
``OnnxRunner.predict`` on one window against one ``predict_batch`` on N windows (what the
batcher runs), alternating bar by bar. ``--registry ../shared/reference-bundles/models`` runs
both on the reference LSTM, whose single call costs far more than the shipped model's
(there the model work dominates the bar).

Usage: ``python3 benchmarks/bench_portfolio.py [--symbols 20] [--bars 200] [--repeat 3]
[--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from dataclasses import dataclass
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
    """An ``MlPrediction`` per feed on one model (none with ``ml=False``); times the bars from
    the first one at which every feed has a prediction (``warmup`` bars) on."""

    params = (
        ("symbol", "BTCUSDT"),
        ("registry", None),
        ("batch_feeds", True),
        ("ml", True),
        ("warmup", 1),
        ("profiler", None),  # a cProfile.Profile enabled over the timed bars only
    )

    def __init__(self) -> None:
        self.preds = [
            MlPrediction(
                d, symbol=self.p.symbol, registry=self.p.registry, batch_feeds=self.p.batch_feeds
            )
            for d in self.datas
            if self.p.ml
        ]
        self.t0: float | None = None
        self.bars = 0

    def next(self) -> None:  # with ML: every feed has a prediction from here on
        if len(self.data0) < self.p.warmup:
            return  # the twin without ML: the same bars are timed
        if self.t0 is None:
            self.t0 = time.perf_counter()
            if self.p.profiler is not None:
                self.p.profiler.enable()
            return
        self.bars += 1

    def stop(self) -> None:
        if self.p.profiler is not None:
            self.p.profiler.disable()
        self.seconds = time.perf_counter() - (self.t0 or time.perf_counter())


@dataclass(frozen=True)
class Side:
    """One row of the table: ``frames`` with ``MlPrediction`` (``ml``) or without."""

    frames: list[pd.DataFrame]
    ml: bool
    batch_feeds: bool = True


def per_bar(
    side: Side, registry: str, symbol: str, warmup: int, profiler: cProfile.Profile | None = None
) -> float:
    """Seconds per bar of a streaming run of ``side`` (after the warm-up); ``profiler``: profile
    the timed bars."""
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    for i, frame in enumerate(side.frames):
        cerebro.adddata(make_feed(frame, timeframe="1h", name=f"S{i:02d}"), name=f"S{i:02d}")
    cerebro.addstrategy(
        Timed,
        symbol=symbol,
        registry=registry,
        batch_feeds=side.batch_feeds,
        ml=side.ml,
        warmup=warmup,
        profiler=profiler,
    )
    strat = cerebro.run()[0]
    return strat.seconds / max(strat.bars, 1)


def profile(side: Side, registry: str, symbol: str, warmup: int, top: int) -> str:
    """cProfile of the timed bars of one run of ``side``: the ``top`` functions by cumulative
    and by own time."""
    profiler = cProfile.Profile()
    per_bar(side, registry, symbol, warmup, profiler)
    out = io.StringIO()
    for order in ("cumulative", "tottime"):
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order)
        out.write(f"--- by {order} time ---\n")
        stats.print_stats(top)
    return out.getvalue()


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
    parser.add_argument(
        "--profile", action="store_true", help="Profile the N-symbol batched side (cProfile)."
    )
    parser.add_argument("--top", type=int, default=30, help="Functions listed per profile.")
    args = parser.parse_args()

    registry = str(args.registry)
    bundle = shared_registry(registry).select_bundle(args.symbol, "basic", "1h", None)
    warmup = bundle.pipeline.min_bars
    n = warmup + args.bars
    frames = [
        generate_ohlcv(n, timeframe="1h", seed=100 + i, start_price=100.0 * (i + 1))
        for i in range(args.symbols)
    ]
    many = f"{args.symbols} symbols"
    sides = {
        "1 symbol": Side(frames[:1], ml=True),
        f"{many}, batched": Side(frames, ml=True),
        f"{many}, one call per feed": Side(frames, ml=True, batch_feeds=False),
        "1 symbol, no ML": Side(frames[:1], ml=False),
        f"{many}, no ML": Side(frames, ml=False),
    }
    best = dict.fromkeys(sides, float("inf"))
    print(f"model {bundle.key}, {args.bars} timed bars per run, best of {args.repeat} rounds")
    for r in range(args.repeat):
        # alternate the sides, and their order between rounds
        names = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in names:
            best[name] = min(best[name], per_bar(sides[name], registry, args.symbol, warmup))
    print_table(best, many)
    one, every = inference_per_bar(bundle, frames, args.repeat)
    print(f"model work per bar (predict of 1 window vs predict_batch of {args.symbols}):")
    print(f"{'1 symbol':<36} {one * 1000:8.3f} ms/bar   {1.0:6.2f}x one symbol")
    print(
        f"{f'{args.symbols} symbols, batched':<36} {every * 1000:8.3f} ms/bar   "
        f"{every / one:6.2f}x one symbol"
    )
    print("(a shared, loaded machine: compare the ratios of one run, not the times)")
    if args.profile:
        side = sides[f"{many}, batched"]
        print(f"\nprofile of one run of {many}, batched:")
        print(profile(side, registry, args.symbol, warmup, args.top))


def print_table(best: dict[str, float], many: str) -> None:
    """Per bar: the whole cost, backtrader's own (the twin without ML) and the ML cost (with -
    without), each with its ratio to one symbol (a twin's whole cost: to one symbol's twin)."""
    bare = {"1 symbol": best["1 symbol, no ML"]}
    bare |= {name: best[f"{many}, no ML"] for name in best if name.startswith(f"{many},")}
    ml = {name: best[name] - bare[name] for name in bare if not name.endswith("no ML")}
    print(
        f"{'per bar':<30} {'whole ms':>9} {'x 1 sym':>8}   {'backtrader ms':>13} {'x 1 sym':>8}"
        f"   {'ML ms':>7} {'x 1 sym':>8}"
    )
    for name, seconds in best.items():
        base = best["1 symbol"] if name in ml else best["1 symbol, no ML"]
        line = f"{name:<30} {seconds * 1e3:9.3f} {seconds / base:7.2f}x"
        if name in ml:
            line += (
                f"   {bare[name] * 1e3:13.3f} {bare[name] / bare['1 symbol']:7.2f}x"
                f"   {ml[name] * 1e3:7.3f} {ml[name] / ml['1 symbol']:7.2f}x"
            )
        print(line)


if __name__ == "__main__":
    main()
