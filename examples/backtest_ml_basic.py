"""Backtest MlBasic with the shipped BTCUSDT/basic model on a generated market (offline).

This is the README's main job: no network, no API keys, under a minute on 2 cores.

    python3 examples/backtest_ml_basic.py [--bars 4000] [--seed 7] [--out out/example_basic]

The model was trained on real BTCUSDT hourly candles (see its metadata.json); the candles here
come from the seeded synthetic generator, so the numbers show the machinery, not an edge.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from atb_strategies.backtest.report import format_summary, plot_backtest, write_trades
from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data import generate_ohlcv
from atb_strategies.strategies.ml_basic import MlBasic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("out/example_basic"))
    args = parser.parse_args()

    # The synthetic market starts after the shipped model's training period (its lineage ends
    # 2024-09-29), so the in-sample guard has nothing to flag: the model never saw these bars.
    candles = generate_ohlcv(args.bars, timeframe="1h", seed=args.seed, start="2025-01-01")
    result = run_backtest(
        candles,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        cash=10_000,
        commission=0.001,
        progress=True,
        long_threshold=0.001,
        log_decisions=False,
    )
    key = result.strategy.predictions[result.strategy.datas[0]].model_key
    print(format_summary(result.summary, f"MlBasic on synthetic BTCUSDT 1h ({key})"))
    paths = write_trades(result, args.out)
    chart = plot_backtest(
        result,
        candles,
        args.out / "chart.png",
        predictions=result.predictions["predicted_price"],
        title=f"MlBasic - {key} - synthetic market seed {args.seed}",
    )
    print(f"chart:  {chart}\ntrades: {paths['trades_csv']}")


if __name__ == "__main__":
    main()
