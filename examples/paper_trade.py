"""Paper trading MlBasic on live candles, with backtrader's simulated broker.

By default this runs offline against the project's loopback exchange (a real HTTP server on
127.0.0.1 that speaks Binance's REST API, with a market clock running 3,600x fast: one hourly
candle per second), so it works anywhere. ``--exchange binance`` uses the real exchange's public
candles instead (no API keys; paper fills only):

    python3 examples/paper_trade.py                       # offline demo, ~30 live bars
    python3 examples/paper_trade.py --clock lockstep      # the same, one candle per poll
    python3 examples/paper_trade.py --exchange binance --bars 0   # real candles, until Ctrl-C

``--clock lockstep`` moves the loopback market clock to the next candle close each time the feed,
having seen every closed candle, waits for the next one (instead of by wall time): no candle is
ever skipped, however busy the machine, which is how the tests run it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging

import pandas as pd

from atb_strategies.data import generate_ohlcv
from atb_strategies.live.runner import build_live_cerebro, run_until_stopped
from atb_strategies.live.store import CcxtStore
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.testing.binance_server import BinanceServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchange", default=None, help="a ccxt id; default: loopback demo")
    parser.add_argument("--bars", type=int, default=30, help="live bars to run (0: forever)")
    parser.add_argument(
        "--clock",
        choices=("fast", "lockstep"),
        default="fast",
        help="loopback market clock: 3,600x wall speed (default) or in lockstep with the feed",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with contextlib.ExitStack() as stack:
        if args.exchange is None:
            candles = generate_ohlcv(1500, timeframe="1h", seed=5)
            start = int(candles.index[1000].value // 1_000_000)
            lockstep = args.clock == "lockstep"
            server = stack.enter_context(
                BinanceServer(
                    candles,
                    start_time_ms=start,
                    clock_speed=0 if lockstep else 3600,
                    lockstep=lockstep,
                )
            )
            store = CcxtStore(exchange="binance", config=server.ccxt_config(with_keys=False))
            feed_options = {"poll_grace": 0.0, "qcheck": 0.05, "clock_check": 0.05}
            print(f"loopback exchange at {server.url}, market clock {server.clock.now()}")
        else:
            store = CcxtStore(exchange=args.exchange)
            feed_options = {}
        cerebro = build_live_cerebro(
            MlBasic,
            store=store,
            symbol="BTCUSDT",
            timeframe="1h",
            paper=True,
            cash=10_000,
            journal=None,
            backfill_bars=500,
            max_bars=args.bars or None,
            kill_switch=None,
            on_stop="cancel",
            feed_options=feed_options,
            long_threshold=0.001,
        )
        strategy = run_until_stopped(cerebro)[0]
    print(
        f"paper value {cerebro.broker.getvalue():.2f} after {len(strategy.decisions)} live "
        f"bars, {len(strategy.trade_records)} closed trades "
        f"(at {pd.Timestamp.now(tz='UTC'):%H:%M:%S} UTC)"
    )


if __name__ == "__main__":
    main()
