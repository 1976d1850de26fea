"""Sweep pre-screen speed and agreement: 10,000 ``ml_basic`` cells screened over 18,000 bars,
the best 20 verified by backtrader (goal: < 60 s on 2 cores, Spearman >= 0.9).

Prints (no asserts; this machine's speed varies, so the load average is printed too):

* the model's predictions (computed once, batched; not part of the screen's time);
* numba's compilation (first call; cached on disk afterwards);
* ``run_sweep(screen=True, verify=20)`` on the local executor: the screen's simulation time
  and cells/s, the whole sweep's wall time (planning and hashing 10,000 cells, the screen, 20
  backtests on ``--workers`` processes, the overfitting statistics), and the screen's agreement
  with backtrader on the 20 verified cells (Spearman of ``--rank-by`` and of the total return,
  largest return difference).

Usage: ``python3 benchmarks/bench_screen.py [--bars 18000] [--workers 2] [--verify 20]
[--registry models]``. Data: ``../shared/data/BTCUSDT_1h_2023-01-01_2025-01-20.csv`` when
present, else the synthetic market; model: the registry's ``BTCUSDT/basic`` latest.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.sweep import run_sweep
from atb_strategies.sweep.predictions import compute_predictions
from atb_strategies.sweep.screen import ENGINE
from atb_strategies.sweep.screen_kernel import simulate_cells

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "BTCUSDT_1h_2023-01-01_2025-01-20.csv"


def candles(bars: int):
    if REAL.is_file():
        from atb_strategies.data.loaders import load_ohlcv

        frame = load_ohlcv(REAL, timeframe="1h")
        return frame.iloc[-bars:], f"{min(bars, len(frame))} real BTCUSDT 1h bars"
    from atb_strategies.data.synthetic import generate_ohlcv

    return generate_ohlcv(bars, timeframe="1h", seed=0), f"{bars} synthetic bars (no ../shared)"


def grid_for(ret: np.ndarray) -> dict[str, list]:
    """10 x 5 x 5 x 5 x 4 x 2 = 10,000 cells; entry thresholds at quantiles of the model's
    predicted returns (so that every cell can trade)."""
    finite = ret[np.isfinite(ret)]
    qs = np.linspace(0.30, 0.95, 10)
    return {
        "long_threshold": sorted({round(float(np.quantile(finite, q)), 7) for q in qs}),
        "exit_threshold": [0.0, 0.0002, 0.0005, 0.001, 0.002],
        "stop_loss": [0.0, 0.005, 0.01, 0.02, 0.04],
        "take_profit": [0.0, 0.01, 0.02, 0.04, 0.08],
        "position_size": [0.1, 0.25, 0.5, 1.0],
        "allow_shorts": [False, True],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=18_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--verify", type=int, default=20)
    parser.add_argument("--rank-by", default="sharpe")
    parser.add_argument("--registry", default=str(REPO / "models"))
    args = parser.parse_args()
    frame, what = candles(args.bars)
    print(f"data: {what}; model: {args.registry} BTCUSDT/basic latest; engine: {ENGINE}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores shared)")
    params = {"registry": args.registry}
    t0 = time.perf_counter()
    entries = compute_predictions(frame, MlBasic, symbol="BTCUSDT", timeframe="1h", params=params)
    ret = np.asarray(next(iter(entries.values())).lines["predicted_return"])
    print(f"predictions (batched inference, once): {time.perf_counter() - t0:.2f} s")

    t0 = time.perf_counter()
    tiny = np.ones((3, 4))
    simulate_cells(tiny, np.zeros(3), np.ones(3), 0, np.zeros((1, 9)), 1.0, 0.0, 0.0)
    print(f"numba compile or load from cache: {time.perf_counter() - t0:.2f} s")

    grid = grid_for(ret)
    n = int(np.prod([len(v) for v in grid.values()]))
    t0 = time.perf_counter()
    results = run_sweep(
        "ml_basic",
        frame,
        grid,
        params=params,
        commission=0.001,
        executor="local",
        workers=args.workers,
        screen=True,
        verify=args.verify,
        rank_by=args.rank_by,
    )
    wall = time.perf_counter() - t0
    block = results.attrs["screen"]
    print(
        f"screen: {n} cells x {len(frame)} bars simulated in {block['seconds']:.2f} s "
        f"({n / block['seconds']:,.0f} cells/s); reading the cached predictions "
        f"{block['prediction_seconds']:.2f} s"
    )
    print(
        f"whole sweep (plan + screen + {block['verified']} backtests on {args.workers} workers "
        f"+ statistics): {wall:.1f} s (goal < 60 s)"
    )
    print(
        f"agreement on the {block['verified']} verified cells: Spearman {block['spearman']} "
        f"({args.rank_by}), {block['spearman_return']} (total return); largest return "
        f"difference {block['max_abs_return_difference']:.2e}, mean "
        f"{block['mean_abs_return_difference']:.2e} (goal Spearman >= 0.9)"
    )
    trades = [r["backtest_trades"] for r in block["per_cell"]]
    print(f"verified cells' trades: {min(trades):.0f} .. {max(trades):.0f}")
    stats = results.attrs["overfitting"] or {}
    print(f"overfitting: {stats.get('verdict') or stats.get('error')}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
