"""Shared fixtures: tiny real ONNX models, bundle factories, synthetic and real candles.

Tests that need ``../shared`` (real data, reference bundles) use the ``shared_dir`` fixture and
are skipped cleanly when it is absent; everything else needs nothing outside the repository.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from atb_strategies.bundle.format import (
    BundleMetadata,
    FeatureSchema,
    FeatureSpec,
    InputSpec,
    OutputSpec,
)
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.registry.writer import write_bundle

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_CSV = SHARED / "data" / "BTCUSDT_1h_2023-01-01_2025-01-20.csv"
REFERENCE_MODELS = SHARED / "reference-bundles" / "models"
GOLDEN = SHARED / "reference-bundles" / "golden"


def linear_onnx(
    sequence_length: int,
    n_features: int,
    *,
    outputs: int = 1,
    seed: int = 0,
    scale: float = 0.01,
    softmax: bool = False,
    input_name: str = "features",
    output_name: str = "prediction",
) -> bytes:
    """A real ONNX model: flatten the window, multiply by fixed random weights, add a bias.

    Every input element moves the output, so look-ahead and window-alignment mistakes show.
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((sequence_length * n_features, outputs)) * scale).astype(np.float32)
    b = (rng.standard_normal(outputs) * scale).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["y" if not softmax else "logits"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], axis=1))
    nodes[0].input[0] = input_name
    nodes[-1].output[0] = output_name
    graph = helper.make_graph(
        nodes,
        "linear",
        [
            helper.make_tensor_value_info(
                input_name, TensorProto.FLOAT, ["batch", sequence_length, n_features]
            )
        ],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", outputs])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


#: A schema using every transform family: series chains, multi-column ops, window ops.
RICH_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("close_wexp", ("close",), ({"op": "window_expanding_minmax"},)),
    FeatureSpec("log_ret", ("close",), ({"op": "log_return", "period": 1},)),
    FeatureSpec("range", ("high", "low", "close"), ({"op": "spread_ratio"},)),
    FeatureSpec("rsi14", ("close",), ({"op": "rsi", "period": 14}, {"op": "window_minmax"})),
    FeatureSpec("ema20_rel", ("close",), ({"op": "ema", "period": 20}, {"op": "window_relative"})),
    FeatureSpec("vol_z", ("volume",), ({"op": "rolling_zscore", "period": 24},)),
    FeatureSpec("sma7_z", ("close",), ({"op": "sma", "period": 7}, {"op": "window_zscore"})),
    FeatureSpec(
        "logvol_scaled", ("volume",), ({"op": "log"}, {"op": "zscore", "mean": 5.0, "std": 2.0})
    ),
    FeatureSpec("close_mm", ("close",), ({"op": "minmax_scale", "min": 10000.0, "max": 120000.0},)),
    FeatureSpec("pct4", ("close",), ({"op": "pct_change", "period": 4},)),
    FeatureSpec("vol_diff3", ("volume",), ({"op": "diff", "period": 3},)),
    FeatureSpec("vol_per_close", ("volume", "close"), ({"op": "ratio"},)),
    FeatureSpec(
        "realized_vol", ("close",), ({"op": "log_return"}, {"op": "rolling_std", "period": 20})
    ),
)


BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path) -> BundleFactory:
    """Write a native bundle into ``tmp_path / 'models'`` (or ``root``); returns its directory."""

    def factory(
        *,
        root: Path | None = None,
        symbol: str = "BTCUSDT",
        model_type: str = "basic",
        version: str = "2026-01-01_1h_v1",
        timeframe: str = "1h",
        features: Sequence[FeatureSpec] = RICH_FEATURES[:3],
        sequence_length: int = 16,
        target: str = "log_return",
        params: dict[str, Any] | None = None,
        classes: tuple[str, ...] | None = None,
        seed: int = 0,
        promote: bool = True,
        model_bytes: bytes | None = None,
    ) -> Path:
        root = root or tmp_path / "models"
        schema = FeatureSchema(sequence_length, tuple(features))
        outputs = len(classes) if classes else 1
        data = model_bytes or linear_onnx(
            sequence_length, len(features), outputs=outputs, seed=seed, softmax=bool(classes)
        )
        meta = BundleMetadata(
            symbol=symbol,
            model_type=model_type,
            timeframe=timeframe,
            version=version,
            input=InputSpec("features", "float32", sequence_length, len(features)),
            output=OutputSpec(target, 1, "prediction", params or {}, classes),
            model_sha256=None,
            created_at="2026-01-01T00:00:00+00:00",
            framework="onnx-test",
        )
        return write_bundle(root, meta, schema, data, promote=promote)

    return factory


def synthetic_candles(
    n: int = 600, seed: int = 7, freq: str = "1h", start: str = "2024-01-01"
) -> pd.DataFrame:
    """Seeded OHLCV candles from the project's generator, with the bar size as pandas spells it.

    A thin wrapper over :func:`atb_strategies.data.generate_ohlcv`: ``freq`` (``"1h"``,
    ``"15min"``, ``"4h"``...) becomes its ``timeframe``.
    """
    minutes = pd.Timedelta(freq) // pd.Timedelta(minutes=1)
    if minutes % 1440 == 0:
        timeframe = f"{minutes // 1440}d"
    elif minutes % 60 == 0:
        timeframe = f"{minutes // 60}h"
    else:
        timeframe = f"{minutes}m"
    return generate_ohlcv(n, timeframe=timeframe, seed=seed, start=start)


@pytest.fixture
def candles() -> pd.DataFrame:
    return synthetic_candles()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not REAL_CSV.is_file() or not REFERENCE_MODELS.is_dir():
        pytest.skip("../shared (real data and reference bundles) is not present")
    return SHARED


@pytest.fixture(scope="session")
def real_candles(shared_dir: Path) -> pd.DataFrame:
    """The 18,000 real BTCUSDT hourly candles, indexed by timestamp."""
    return pd.read_csv(REAL_CSV, parse_dates=["timestamp"], index_col="timestamp")


@contextmanager
def loopback_exchange(candles: pd.DataFrame | None = None, **kwargs: Any) -> Iterator[Any]:
    """The loopback Binance server on 127.0.0.1 (``atb_strategies.testing.binance``), started
    for the ``with`` block and stopped after it; on a clean exit it asserts that the server
    raised no internal error (a bug in the server would otherwise pass as an exchange error).
    ``candles`` and ``kwargs`` go to ``BinanceServer``; live sessions pass ``lockstep=True`` so
    the market clock moves with what the client has seen, never with wall time."""
    from atb_strategies.testing.binance import BinanceServer

    args = () if candles is None else (candles,)
    with BinanceServer(*args, **kwargs) as server:
        yield server
        assert server.internal_errors == []


# ------------------------------------------------------------------ portfolio sessions (issue 20)

#: The symbols of the 3-symbol portfolio tests: a market, a coin and a model each.
PORTFOLIO_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
PORTFOLIO_BASES = {"BTCUSDT": "BTC", "ETHUSDT": "ETH", "SOLUSDT": "SOL"}
PORTFOLIO_PRICES = {"BTCUSDT": 30_000.0, "ETHUSDT": 2_000.0, "SOLUSDT": 100.0}
#: The version of each symbol's bundle in ``portfolio_registry`` (promoted ``latest``).
PORTFOLIO_VERSION = "2026-01-01_1h_v1"
#: Live bar 1 of ``portfolio_exchange`` is this candle (the clock starts half-way through it).
PORTFOLIO_NOW_ROW = 120


@pytest.fixture
def portfolio_registry(make_bundle: BundleFactory, tmp_path: Path) -> Path:
    """``tmp_path / "models"`` with a ``basic`` bundle per portfolio symbol (seeds 0, 1, 2)."""
    for seed, symbol in enumerate(PORTFOLIO_SYMBOLS):
        make_bundle(symbol=symbol, seed=seed, version=PORTFOLIO_VERSION)
    return tmp_path / "models"


def portfolio_frames(crash_from: int | None = None) -> dict[str, pd.DataFrame]:
    """200 seeded hourly candles per portfolio symbol (seeds 11, 12, 13) from 2024-01-01; with
    ``crash_from``, every price of every symbol falls 40 % from that row on."""
    frames = {}
    for seed, symbol in enumerate(PORTFOLIO_SYMBOLS, start=11):
        frame = generate_ohlcv(200, seed=seed, start_price=PORTFOLIO_PRICES[symbol])
        if crash_from is not None:
            cols = [frame.columns.get_loc(c) for c in ("open", "high", "low", "close")]
            frame.iloc[crash_from:, cols] *= 0.6
        frames[symbol] = frame
    return frames


def portfolio_exchange(
    frames: dict[str, pd.DataFrame] | None = None,
    now_row: int = PORTFOLIO_NOW_ROW,
    **kwargs: Any,
) -> Any:
    """``loopback_exchange`` serving the portfolio symbols' ``frames`` (default
    ``portfolio_frames()``) in lockstep, the clock half-way through candle ``now_row``, an
    account of 10,000 USDT and no coins; ``kwargs`` go to ``BinanceServer``."""
    frames = frames if frames is not None else portfolio_frames()
    first = frames[PORTFOLIO_SYMBOLS[0]]
    start = int(first.index[now_row].value // 1_000_000) + 1_800_000
    balances = {"USDT": 10_000, **dict.fromkeys(PORTFOLIO_BASES.values(), 0)}
    return loopback_exchange(
        first,
        markets={s: frames[s] for s in PORTFOLIO_SYMBOLS[1:]},
        start_time_ms=start,
        lockstep=True,
        balances=balances,
        **kwargs,
    )


def run_atb(args: Sequence[str], cwd: Path, *, script: bool = False) -> Any:
    """``atb ARGS`` in a new process on this checkout (``python -m atb_strategies.cli.main``,
    or with ``script`` the installed ``atb`` entry point), in ``cwd``, with a bare environment
    (no keys) and matplotlib's Agg backend; returns the ``subprocess.CompletedProcess``."""
    import os
    import subprocess
    import sys

    command = (
        [str(Path(sys.executable).with_name("atb"))]
        if script
        else [sys.executable, "-m", "atb_strategies.cli.main"]
    )
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "MPLBACKEND": "Agg",
        },
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hang only
    )
