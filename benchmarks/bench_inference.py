"""Inference overhead over raw ONNX Runtime, single-threaded, on real data.

Prints the ratios of our paths to bare ONNX Runtime calls on the same windows:

* streaming: per bar, ``FeatureStream.update`` + ``window()`` + ``OnnxRunner.predict`` with its
  checks and decoding, over a bare batch-1 ``session.run`` on the same, precomputed windows;
  printed for ``batch_parity`` off (batch-1 call) and on (the default: a batch of two, which
  makes streaming bit-identical to batched inference and costs ~1.5x on the reference LSTM);
* batch: per window, ``FeaturePipeline.batch_windows`` + float32 cast + ``predict_batch``, over
  a bare batched ``session.run`` on the same precomputed windows in the same chunks;
* engine: per call, ``PredictionEngine.predict(candles)`` (select the bundle following
  ``latest``, validate the rows used, compute the window, run, decode) on a frame of the
  ``--engine-rows`` newest candles, over a bare batch-1 ``session.run`` on the same window
  (goal <= 1.25 with ``batch_parity`` off; printed for on too).

Batch: raw and ours are timed alternately, ``--repeat`` rounds each, best of each side kept.
Streaming and engine: raw and ours alternate *per bar* (same window, same moment), and the best
ratio of ``--repeat`` rounds is reported, so the machine's slow phases hit both sides alike. The
script also prints the streaming overhead alone (features, checks and decoding without
``session.run``), which is steadier.

Usage: ``python3 benchmarks/bench_inference.py [--bars 3000] [--engine-calls 1000] [--repeat 3]``;
needs ``../shared`` (the reference bundle and the real BTCUSDT candles) or
``--registry``/``--data``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from atb_strategies.config import PredictionConfig
from atb_strategies.inference.decode import decode
from atb_strategies.inference.engine import PredictionEngine
from atb_strategies.inference.runner import DEFAULT_CHUNK
from atb_strategies.registry.registry import ModelRegistry

SHARED = Path(__file__).resolve().parents[2] / "shared"


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=SHARED / "reference-bundles" / "models")
    parser.add_argument(
        "--data", type=Path, default=SHARED / "data" / "BTCUSDT_1h_2023-01-01_2025-01-20.csv"
    )
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--model-type", default="basic")
    parser.add_argument("--bars", type=int, default=3000, help="bars timed on the streaming path")
    parser.add_argument("--engine-calls", type=int, default=1000, help="engine calls timed")
    parser.add_argument(
        "--engine-rows", type=int, default=500, help="candles in each frame given to the engine"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--batch-parity",
        choices=["on", "off", "both"],
        default="both",
        help="streaming predict as a batch of two (exact parity with batches) or of one",
    )
    args = parser.parse_args()

    registry = ModelRegistry(args.registry, {"intra_op_num_threads": 1})
    bundle = registry.select_bundle(args.symbol, args.model_type)
    pipe, runner = bundle.pipeline, bundle.runner
    session = runner.session
    input_name = session.get_inputs()[0].name
    frame = pd.read_csv(args.data, parse_dates=["timestamp"], index_col="timestamp")
    columns = {c: frame[c].to_numpy(dtype=np.float64) for c in pipe.columns}
    values = frame[pipe.columns].to_numpy()
    print(f"model {bundle.key}: input {bundle.metadata.input.shape}, {len(frame)} bars")

    # ---------------------------------------------------------------- batch path
    batch = pipe.batch_windows(columns)
    windows32 = np.ascontiguousarray(batch.windows.astype(np.float32))
    n = len(windows32)

    def raw_batch() -> None:
        for i in range(0, n, DEFAULT_CHUNK):
            session.run(None, {input_name: windows32[i : i + DEFAULT_CHUNK]})

    def our_batch() -> None:
        b = pipe.batch_windows(columns)
        runner.predict_batch(b.windows.astype(np.float32), b.context)

    raw_batch()  # warm up
    t_raw_b = t_our_b = float("inf")
    for _ in range(args.repeat):
        t_raw_b = min(t_raw_b, best_of(1, raw_batch))
        t_our_b = min(t_our_b, best_of(1, our_batch))
    t_feat_b = best_of(args.repeat, lambda: pipe.batch_windows(columns))

    # ---------------------------------------------------------------- streaming path
    bars = min(args.bars, n)
    start = len(values) - bars
    single = [windows32[i][None] for i in range(n - bars, n)]

    def raw_stream() -> None:
        for w in single:
            session.run(None, {input_name: w})

    def overhead_only() -> None:
        stream = pipe.stream()
        for row in values[:start]:
            stream.update(row)
        raw_out = np.zeros((1,), dtype=np.float32)
        t0 = time.perf_counter()
        for row in values[start:]:
            stream.update(row)
            w = stream.window().astype(np.float32)
            runner._check(w, batched=False)
            decode(runner.output_spec, raw_out, stream.context(), runner.direction_threshold)
        overhead_only.elapsed = time.perf_counter() - t0  # type: ignore[attr-defined]

    modes = {"on": [True], "off": [False], "both": [False, True]}[args.batch_parity]

    def interleaved(parity: bool) -> tuple[float, float]:
        """Per bar: a raw batch-1 run of the precomputed window, then our update + predict on
        the same bar; alternating per bar, so slow phases of the machine hit both alike."""
        runner.batch_parity = parity
        stream = pipe.stream()
        for row in values[:start]:
            stream.update(row)
        raw_total = ours_total = 0.0
        for w, row in zip(single, values[start:], strict=True):
            t0 = time.perf_counter()
            session.run(None, {input_name: w})
            t1 = time.perf_counter()
            stream.update(row)
            runner.predict(stream.window().astype(np.float32), stream.context())
            t2 = time.perf_counter()
            raw_total += t1 - t0
            ours_total += t2 - t1
        return raw_total, ours_total

    # ---------------------------------------------------------------- engine
    engine = PredictionEngine(
        PredictionConfig(
            model_registry_path=args.registry,
            default_symbol=args.symbol,
            default_model_type=args.model_type,
        ),
        registry,
    )
    calls = min(args.engine_calls, n)
    rows = max(args.engine_rows, pipe.min_bars)
    frames = [frame.iloc[max(0, e + 1 - rows) : e + 1] for e in batch.end_index[n - calls :]]
    engine_windows = single[-calls:] if calls <= bars else [w[None] for w in windows32[-calls:]]

    def engine_interleaved(parity: bool) -> tuple[float, float]:
        """Per call: a raw batch-1 run of the precomputed window, then ``engine.predict`` on
        the frame ending at the same bar, alternating per call."""
        runner.batch_parity = parity
        raw_total = ours_total = 0.0
        for w, candles in zip(engine_windows, frames, strict=True):
            t0 = time.perf_counter()
            session.run(None, {input_name: w})
            t1 = time.perf_counter()
            engine.predict(candles)
            t2 = time.perf_counter()
            raw_total += t1 - t0
            ours_total += t2 - t1
        return raw_total, ours_total

    # the engine serves the same bundle and computes the same window as the precomputed one
    assert engine.select() is bundle
    runner.batch_parity = False
    check = engine.predict(frames[-1])
    assert check.raw == float(session.run(None, {input_name: engine_windows[-1]})[0].ravel()[0])

    raw_stream()
    t_raw_s = t_over = float("inf")
    t_our: dict[bool, float] = dict.fromkeys(modes, float("inf"))
    ratios: dict[bool, float] = dict.fromkeys(modes, float("inf"))
    for _ in range(args.repeat):
        for parity in modes:
            raw_t, ours_t = interleaved(parity)
            t_raw_s = min(t_raw_s, raw_t)
            t_our[parity] = min(t_our[parity], ours_t)
            ratios[parity] = min(ratios[parity], ours_t / raw_t)
        overhead_only()
        t_over = min(t_over, overhead_only.elapsed)  # type: ignore[attr-defined]
    t_our_s = t_our[modes[0]]

    t_raw_e = float("inf")
    t_eng: dict[bool, float] = dict.fromkeys(modes, float("inf"))
    eng_ratios: dict[bool, float] = dict.fromkeys(modes, float("inf"))
    for _ in range(args.repeat):
        for parity in modes:
            raw_t, ours_t = engine_interleaved(parity)
            t_raw_e = min(t_raw_e, raw_t)
            t_eng[parity] = min(t_eng[parity], ours_t)
            eng_ratios[parity] = min(eng_ratios[parity], ours_t / raw_t)

    print(
        f"batch:     {n} windows, raw session.run {t_raw_b:.3f}s "
        f"({t_raw_b / n * 1e6:.1f} us/window), ours {t_our_b:.3f}s "
        f"(features alone {t_feat_b:.3f}s)"
    )
    print(
        f"streaming: {bars} bars, raw batch-1 session.run {t_raw_s:.3f}s "
        f"({t_raw_s / bars * 1e6:.0f} us/bar), ours {t_our_s:.3f}s "
        f"({t_our_s / bars * 1e6:.0f} us/bar, batch_parity={modes[0]})"
    )
    print(
        f"streaming overhead alone (update + window + checks + decode): "
        f"{t_over / bars * 1e6:.0f} us/bar = {t_over / t_raw_s:.3f} of a raw run"
    )
    for parity in t_our:
        label = "batch_parity=on (default) " if parity else "batch_parity=off          "
        print(
            f"ratio streaming (update + predict) / raw batch-1 run, {label}: "
            f"{ratios[parity]:.3f}   goal <= 1.10"
        )
    print(
        f"ratio batch per window / raw batched run:            {t_our_b / t_raw_b:.3f}"
        "   goal <= 1.10"
    )
    print(
        f"engine: {calls} calls on {rows}-row frames, raw batch-1 session.run "
        f"{t_raw_e / calls * 1e6:.0f} us/call, engine.predict "
        + ", ".join(f"{t_eng[p] / calls * 1e6:.0f} us/call (batch_parity={p})" for p in t_eng)
    )
    for parity in t_eng:
        label = "batch_parity=on (default) " if parity else "batch_parity=off          "
        goal = "n/a (a batch of two)" if parity else "goal <= 1.25"
        print(
            f"ratio engine.predict / raw batch-1 run, {label}:    {eng_ratios[parity]:.3f}   {goal}"
        )


if __name__ == "__main__":
    main()
