"""What operating a live model costs per bar: hot reload checks, the drift guard, shadows.

Runs ``MlBasic`` bar by bar (``preload=False``, the live path) over the newest ``--bars`` real
BTCUSDT candles, on a temporary copy of the shipped ``BTCUSDT/basic`` v1 bundle given a drift
reference fitted on the bars before them, and prints the time per bar of:

* ``pinned``: a pinned version (the baseline);
* ``follow``: following ``latest`` (the pointer is checked every bar: two ``stat`` calls while
  it does not move; a pointer changed within ``RACY_SECONDS`` is re-read in full, so the
  benchmark waits that long after writing the registry);
* ``drift``: ``drift_action="warn"`` (a 168-bar PSI per feature every bar);
* ``shadow``: one shadow challenger (a second model and a virtual book every bar);
* ``all``: the three together;

and each one's ratio to ``pinned``. Best of ``--repeat`` rounds, rounds interleaved.

Usage: ``python3 benchmarks/bench_live_ops.py [--bars 2000] [--repeat 3]``; needs ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import backtrader as bt
import pandas as pd

from atb_strategies.data.feeds import make_feed
from atb_strategies.features.drift import METADATA_KEY, fit_reference
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.features.schema import FeatureSchema
from atb_strategies.registry.layout import RACY_SECONDS
from atb_strategies.registry.shared import clear_shared_registries
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.training.drift import calibrate

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "BTCUSDT_1h_2023-01-01_2025-01-20.csv"
V1, V2 = "2026-11-26_1h_v1", "2026-11-29_1h_v2"


def registry_with_drift(candles: pd.DataFrame, until: int, root: Path) -> Path:
    """The shipped registry copied to ``root``, v1 and v2 given a drift reference."""
    shutil.copytree(REPO / "models", root, symlinks=True)
    for version in (V1, V2):
        directory = root / "BTCUSDT" / "basic" / version
        schema_path = next(directory.glob("*schema*.json"))
        schema = FeatureSchema.from_dict(json.loads(schema_path.read_text()))
        past = candles.iloc[:until]
        series = FeaturePipeline(schema).series({c: past[c].to_numpy() for c in past.columns})
        reference = calibrate(fit_reference(series, schema.feature_names), series, None)
        meta = json.loads((directory / "metadata.json").read_text())
        meta[METADATA_KEY] = reference.to_dict()
        (directory / "metadata.json").write_text(json.dumps(meta))
    return root


def per_bar(candles: pd.DataFrame, registry: Path, **params: object) -> float:
    clear_shared_registries()
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.adddata(make_feed(candles, name="BTCUSDT"))
    cerebro.addstrategy(MlBasic, registry=str(registry), **params)
    start = time.perf_counter()
    cerebro.run()
    return (time.perf_counter() - start) / len(candles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    candles = pd.read_csv(DATA, parse_dates=["timestamp"], index_col="timestamp")
    candles.attrs["timeframe"] = "1h"
    first = len(candles) - args.bars
    cases = {
        "pinned": {"version": V1},
        "follow": {"follow_latest": True},
        "drift": {"version": V1, "drift_action": "warn"},
        "shadow": {"version": V1, "shadows": [V2]},
        "all": {"follow_latest": True, "drift_action": "warn", "shadows": [V2]},
    }
    best = {name: float("inf") for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        registry = registry_with_drift(candles, first, Path(tmp) / "models")
        time.sleep(RACY_SECONDS + 0.5)  # a pointer written this recently is re-read every call
        window = candles.iloc[first - 300 :]  # 300 bars of warm-up, then the measured ones
        for _ in range(args.repeat):
            for name, params in cases.items():
                best[name] = min(best[name], per_bar(window, registry, **params))
    base = best["pinned"]
    print(f"{args.bars} bars (+300 warm-up), best of {args.repeat}, per bar:")
    for name, seconds in best.items():
        print(f"  {name:<7} {seconds * 1e3:7.3f} ms   ratio to pinned {seconds / base:5.2f}")


if __name__ == "__main__":
    main()
