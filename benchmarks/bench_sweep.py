"""Sweep speed: local cores vs serial, a cell vs a plain backtest, Ray vs local, Ray overhead.

Prints ratios measured side by side in one run (no asserts; this machine's speed varies):

1. **local vs serial**: the same 8-cell ``run_sweep`` (4 entry thresholds x 2 stop losses of
   ``ml_basic``) with ``executor="serial"`` and ``executor="local"`` on ``--workers`` processes
   (goal >= 1.8x on 2 cores). Each side computes the predictions once in this process
   (local: while its workers start) and starts from an empty prediction cache. The load
   average is printed with every round (``--repeat``): the machine is shared. Then the
   machine's own ceiling: 8 plain CPU loops of about a cell's length through the same executor
   (``machine_ceiling``: the cores, the workers' start and imports, no sweep data). Each
   round also says where the time went: the cells' own seconds side by side against alone
   (two processes contending for the caches and memory), and the local wall time beyond the
   busiest worker's cells (the workers' start and imports, hand-out, results).
2. **cell vs SMA cross**: one cell's backtest with its predictions handed in (``run_cell`` on a
   filled cache, as in a worker) over a plain backtrader SMA-cross backtest of the same bars
   and commission, on backtrader's own ``PandasData`` (goal: a typical cell <= 2x, an idle
   one <= 1.2x), and on the project's feed (the cost of the ML strategy and its orders
   alone); printed for a typical cell (thousands of bracket trades) and for an idle one (a
   threshold no prediction reaches: no trade), which isolates the cost of the ML machinery
   per bar from the cost of trading. The first cell's cost with inference
   (a cache miss) is printed too.
3. **Ray vs local**: the 8-cell sweep on a local Ray with ``--workers`` CPUs over the local
   executor (goal within 15 %); Ray's start (``ray.init``) is printed apart, and the first Ray
   sweep (cold workers, which import backtrader and pandas) apart from the next (warm).
4. **Ray per-task overhead**: ``run_tasks`` of 200 no-op tasks on that Ray, wall time per
   task, with a small ``shared`` and with the sweep's (the candles and their predictions;
   goal < 50 ms).

The sides of 1 and 3 alternate (``--repeat`` rounds; 1 prints every round, 3 keeps the best).

Usage: ``python3 benchmarks/bench_sweep.py [--bars 18000] [--repeat 1] [--workers 2]
[--registry models] [--no-ray] [--cell-only | --no-cell]``. Data:
``../shared/data/BTCUSDT_1h_2023-01-01_2025-01-20.csv``
(18,000 real hourly candles) when present, else the synthetic market; model: the registry's
``BTCUSDT/basic`` latest (default: the repository's ``models/``).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd

from atb_strategies.data.feeds import make_feed
from atb_strategies.executors import run_tasks
from atb_strategies.indicators.cache import prediction_cache
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.sweep import run_sweep
from atb_strategies.sweep.cells import Cell, run_cell
from atb_strategies.sweep.predictions import compute_predictions

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "BTCUSDT_1h_2023-01-01_2025-01-20.csv"
GRID = {"long_threshold": [0.0005, 0.001, 0.002, 0.004], "stop_loss": [0.01, 0.02]}
COMMISSION = 0.001


class SmaCross(bt.Strategy):
    """The plain backtrader reference: long while SMA(10) is above SMA(30)."""

    def __init__(self) -> None:
        self.cross = bt.ind.CrossOver(bt.ind.SMA(period=10), bt.ind.SMA(period=30))

    def next(self) -> None:
        if not self.position and self.cross[0] > 0:
            self.buy()
        elif self.position and self.cross[0] < 0:
            self.close()


def _noop(shared: Any, task: int) -> int:
    return task


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def candles(bars: int) -> tuple[pd.DataFrame, str]:
    if REAL.is_file():
        from atb_strategies.data.loaders import load_ohlcv

        frame = load_ohlcv(REAL, timeframe="1h")
        return frame.iloc[-bars:], f"{min(bars, len(frame))} real BTCUSDT 1h bars"
    from atb_strategies.data.synthetic import generate_ohlcv

    return generate_ohlcv(bars, timeframe="1h", seed=0), f"{bars} synthetic bars (no ../shared)"


def sma_backtest(frame: pd.DataFrame, feed: str = "plain") -> None:
    """The SMA cross over ``frame``: on backtrader's own ``PandasData`` (``"plain"``, the
    reference of the goal) or on the project's ``make_feed`` (``"project"``: the same feed as a
    cell, so that the ratio to it is the cost of the ML strategy and its orders alone)."""
    cerebro = bt.Cerebro(stdstats=False)
    if feed == "plain":
        shifted = frame.copy(deep=False)
        shifted.index = shifted.index + pd.Timedelta(hours=1)  # bar close times, like make_feed
        data = bt.feeds.PandasData(
            dataname=shifted, timeframe=bt.TimeFrame.Minutes, compression=60, openinterest=None
        )
    else:
        data = make_feed(frame, timeframe="1h", name="BTCUSDT")
    cerebro.adddata(data, name="BTCUSDT")
    cerebro.addstrategy(SmaCross)
    cerebro.broker.setcommission(commission=COMMISSION)
    cerebro.run()


def sweep(
    frame: pd.DataFrame,
    registry: str,
    executor: str,
    workers: int,
    workers_seen: list[dict] | None = None,
) -> pd.DataFrame:
    """The 8-cell sweep; each cell's ``worker`` record (pid, seconds) goes to ``workers_seen``."""
    prediction_cache.clear()  # every side computes its predictions once, from scratch
    return run_sweep(
        "ml_basic",
        frame,
        GRID,
        params={"registry": registry},
        commission=COMMISSION,
        executor=executor,
        workers=workers,
        on_cell=None if workers_seen is None else lambda r: workers_seen.append(r["worker"]),
    )


def where_the_time_went(serial: list[dict], local: list[dict], wall: float) -> str:
    """How far the local run is from half the serial one: the cells' own seconds side by side
    against alone (cores contending for cache and memory), and the local wall time beyond the
    busiest worker's cells (start-up, hand-out, results)."""
    alone = sum(w["seconds"] for w in serial)
    side_by_side = sum(w["seconds"] for w in local)
    busy: dict[int, float] = {}
    for w in local:
        busy[w["pid"]] = busy.get(w["pid"], 0.0) + w["seconds"]
    busiest = max(busy.values())
    return (
        f"cells {alone:.1f} s alone, {side_by_side:.1f} s side by side "
        f"({100 * (side_by_side / alone - 1):+.0f} %); busiest worker {busiest:.1f} s of "
        f"cells, {wall - busiest:.1f} s of the local wall beyond it"
    )


def alternate(repeat: int, sides: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Best wall time of each side over ``repeat`` rounds, the sides alternating."""
    best = dict.fromkeys(sides, float("inf"))
    for _ in range(repeat):
        for name, fn in sides.items():
            best[name] = min(best[name], timed(fn)[0])
    return best


def cell_vs_sma(frame: pd.DataFrame, registry: str, repeat: int) -> None:
    settings = {
        "timeframe": "1h",
        "cash": 10_000.0,
        "commission": COMMISSION,
        "slippage_bps": 0.0,
        "start": None,
        "end": None,
    }
    params = {"registry": registry}
    typical = _cell({**params, "long_threshold": 0.001}, settings)
    idle = _cell({**params, "long_threshold": 1.0}, settings)
    prediction_cache.clear()
    first, _ = timed(lambda: run_cell({"candles": {"BTCUSDT": frame}}, typical))
    entries = compute_predictions(frame, MlBasic, symbol="BTCUSDT", timeframe="1h", params=params)
    prediction_cache.clear()
    shared = {"candles": {"BTCUSDT": frame}, "predictions": entries}
    records = {}

    def run(cell: Cell, name: str) -> None:
        records[name] = run_cell(shared, cell)

    times = alternate(
        repeat + 1,
        {
            "sma": lambda: sma_backtest(frame),
            "sma_project": lambda: sma_backtest(frame, "project"),
            "typical": lambda: run(typical, "typical"),
            "idle": lambda: run(idle, "idle"),
        },
    )
    if records["typical"]["worker"]["misses"]:
        print("  NOTE: the cell ran the model: the handed-in predictions were not used")
    trades = records["typical"]["metrics"]["trades"]
    sma, own = times["sma"], times["sma_project"]
    print(f"  plain SMA-cross backtest (PandasData) {sma:6.2f} s")
    print(f"  SMA cross on the project's feed       {own:6.2f} s")
    print(f"  typical cell, inference included      {first:6.2f} s")
    print(
        f"  typical cell, predictions handed in   {times['typical']:6.2f} s   "
        f"ratio {times['typical'] / sma:.2f}x plain, {times['typical'] / own:.2f}x same feed  "
        f"({trades} trades; goal <= 2x plain)"
    )
    print(
        f"  idle cell (no trade), handed in       {times['idle']:6.2f} s   "
        f"ratio {times['idle'] / sma:.2f}x plain, {times['idle'] / own:.2f}x same feed  "
        "(goal <= 1.2x plain)"
    )


def _cell(params: dict, settings: dict) -> Cell:
    return Cell("ml_basic", "BTCUSDT", None, params, settings)


def ray_part(frame: pd.DataFrame, registry: str, workers: int, repeat: int) -> None:
    try:
        import ray
    except ImportError:
        print("  ray is not installed: pip install 'atb-strategies[distributed]'")
        return
    started, _ = timed(
        lambda: ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    )
    try:
        cold, _ = timed(lambda: sweep(frame, registry, "ray", workers))
        best = alternate(
            repeat,
            {
                "local": lambda: sweep(frame, registry, "local", workers),
                "ray": lambda: sweep(frame, registry, "ray", workers),
            },
        )
        print(f"  ray.init ({workers} CPUs)                {started:7.2f} s (once per session)")
        print(f"  ray, cold workers                  {cold:7.2f} s")
        print(f"  ray, warm workers                  {best['ray']:7.2f} s")
        print(f"  local executor                     {best['local']:7.2f} s")
        print(
            f"  ray warm / local {best['ray'] / best['local']:.2f}x, ray cold / local "
            f"{cold / best['local']:.2f}x (goal: within 15 %)"
        )
        entries = compute_predictions(
            frame, MlBasic, symbol="BTCUSDT", timeframe="1h", params={"registry": registry}
        )
        big = {"candles": {"BTCUSDT": frame}, "predictions": entries}
        n = 200
        for label, shared in (("small shared", {"x": 1}), ("the sweep's shared", big)):
            runs = [
                timed(lambda s=shared: list(run_tasks(_noop, range(n), shared=s, executor="ray")))
                for _ in range(3)
            ]
            per_task = statistics.median(t for t, _ in runs) / n
            print(f"  ray per-task overhead, {label:<18} {1000 * per_task:6.2f} ms (goal < 50 ms)")
    finally:
        ray.shutdown()


def burn(shared: Any, loops: int) -> int:
    """A pure-Python CPU loop (no data, no imports): the task of the machine's own ceiling."""
    total = 0
    for i in range(loops):
        total += i % 7
    return total


def machine_ceiling(workers: int, seconds: float = 3.0) -> None:
    """8 tasks of a plain CPU loop, each about ``seconds`` long, on the local executor against
    serially: the speed-up this machine gives 8 equal CPU-bound tasks through the same pool (its
    cores, the workers' start and import), the ceiling of the sweep's 8 cells."""
    loops = 200_000
    while (took := timed(functools.partial(burn, None, loops))[0]) < 0.2:
        loops *= 4
    loops = int(loops * seconds / took)
    tasks = [loops] * 8
    serial, _ = timed(lambda: list(run_tasks(burn, tasks, executor="serial")))
    local, _ = timed(lambda: list(run_tasks(burn, tasks, executor="local", workers=workers)))
    print(
        f"  ceiling: 8 plain CPU loops of ~{serial / 8:.1f} s, local vs serial "
        f"{serial / local:.2f}x (serial {serial:.1f} s, local {local:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=18_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--registry", default=str(REPO / "models"))
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--cell-only", action="store_true", help="Only part 2 (cell vs SMA).")
    parser.add_argument("--no-cell", action="store_true", help="Skip part 2 (cell vs SMA).")
    args = parser.parse_args()
    frame, what = candles(args.bars)
    print(f"data: {what}; model: {args.registry} BTCUSDT/basic latest")
    print(f"load average: {os.getloadavg()[0]:.2f} (2 cores shared)")

    if not args.no_cell:
        print("cell vs plain backtrader (one process):")
        cell_vs_sma(frame, args.registry, args.repeat)
    if args.cell_only:
        return

    print(f"8 cells, local ({args.workers} workers) vs serial:")
    results = {}

    seen: dict[str, list[dict]] = {}

    def side(executor: str) -> Callable[[], None]:
        def run() -> None:
            seen[executor] = []
            results[executor] = sweep(frame, args.registry, executor, args.workers, seen[executor])

        return run

    ratios = []
    for k in range(args.repeat):  # every round printed: the goal is the speed-up of every run
        load = os.getloadavg()[0]
        sides = {"serial": side("serial"), "local": side("local")}
        if k % 2:  # the other order every second round: a shared machine's load drifts
            sides = dict(reversed(sides.items()))
        t = alternate(1, sides)
        ratios.append(t["serial"] / t["local"])
        print(
            f"  round {k + 1}: serial {t['serial']:6.2f} s, local {t['local']:6.2f} s, "
            f"speed-up {ratios[-1]:.2f}x (load average {load:.2f})"
        )
        print(f"    {where_the_time_went(seen['serial'], seen['local'], t['local'])}")
    same = results["serial"].equals(results["local"])
    print(
        f"  speed-up {min(ratios):.2f}x .. {max(ratios):.2f}x over {len(ratios)} round(s) "
        f"(goal >= 1.8x every run; same results: {same})"
    )
    machine_ceiling(args.workers)

    if not args.no_ray:
        print(f"8 cells, Ray local ({args.workers} CPUs) vs local executor:")
        ray_part(frame, args.registry, args.workers, args.repeat)


if __name__ == "__main__":
    main()
