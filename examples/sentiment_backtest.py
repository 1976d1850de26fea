"""MlSentiment with sentiment read from a CSV file and aligned as of each bar's close.

The CSV (``timestamp``, ``value``; publication times in UTC) is written here from the synthetic
demo index so the example runs offline; point ``--sentiment`` at your own file (for example one
saved from ``FearGreedClient().fetch()``) to use real data.

    python3 examples/sentiment_backtest.py [--sentiment FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from atb_strategies.backtest.report import format_summary
from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data import generate_ohlcv
from atb_strategies.sentiment import align_sentiment, generate_sentiment, read_sentiment_csv
from atb_strategies.strategies.ml_sentiment import MlSentiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentiment", type=Path, default=None)
    args = parser.parse_args()

    candles = generate_ohlcv(3000, timeframe="1h", seed=21, start_price=2_000.0)
    path = args.sentiment
    if path is None:
        path = Path(tempfile.mkdtemp()) / "sentiment.csv"
        demo = generate_sentiment(candles, seed=21)
        demo.rename("value").rename_axis("timestamp").to_csv(path)
    sentiment = read_sentiment_csv(path)
    frame = align_sentiment(candles.loc[sentiment.index[0] :], sentiment, "1h")
    result = run_backtest(
        frame, MlSentiment, symbol="ETHUSDT", timeframe="1h", long_threshold=0.001
    )
    key = result.strategy.predictions[result.strategy.datas[0]].model_key
    print(f"sentiment: {path} ({len(sentiment)} values)")
    print(format_summary(result.summary, f"MlSentiment on synthetic ETHUSDT 1h ({key})"))


if __name__ == "__main__":
    main()
