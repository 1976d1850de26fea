"""``train_model`` end to end on a small synthetic slice, into temporary registries.

Everything is real: scikit-learn fits, skl2onnx exports, onnxruntime serves, backtrader trades,
and the interrupted runs are real processes killed with real signals. Numbers in the bundle
(z-score parameters, metrics, baselines, buy-and-hold) are recomputed here from the candles with
plain numpy, not with the package's own helpers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.metadata as md
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.bundle.jsonio import read_json
from atb_strategies.config import PredictionConfig
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.drift import (
    DEFAULT_BINS,
    PREDICTION,
    bin_fractions,
    drift_reference,
    psi,
)
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.features.psi import rolling_psi
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import LEDGER
from atb_strategies.registry.registry import ModelRegistry
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.training.dataset import BarSplit, build_parts
from atb_strategies.training.gates import causality_check
from atb_strategies.training.recipes import fit_schema, recipe_for
from atb_strategies.training.trainer import TrainingConfig, TrainingError, train_model

pytestmark = pytest.mark.slow  # trains, runs the examples or runs live sessions

SYMBOL = "ETHUSDT"
TYPE = "basic"
START, END = "2024-01-05", "2024-05-10"  # the slice trained on, inside 3400 candles
SEQ = 24
# These tests are about registration; the baseline gate (a synthetic market has no edge) is
# tested on its own below, so they force the promotion the gate would refuse.
# The price recipe: the z-score and drift tests below recompute its features with numpy.
BASE = {
    "symbol": SYMBOL,
    "sequence_length": SEQ,
    "epochs": 3,
    "seed": 0,
    "force_promote": True,
    "recipe": "price",
}
VERSION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})_1h_v(\d+)$")
ATB = Path(sys.executable).with_name("atb")


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No ATB_* variables, ./atb.toml or ./models influence training or its quick backtest."""
    work = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith("ATB_"):
                mp.delenv(var)
        mp.chdir(work)
        yield work


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return generate_ohlcv(3400, seed=11)


@pytest.fixture(scope="module")
def frame(candles: pd.DataFrame) -> pd.DataFrame:
    """The slice ``[START, END]`` (END's whole day), cut here independently of the trainer."""
    return candles.loc[pd.Timestamp(START) : pd.Timestamp(END) + pd.Timedelta(hours=23)]


@dataclasses.dataclass
class Trained:
    registry: Path
    version: str
    path: Path
    result: Any
    metadata: dict
    schema: dict
    metrics: dict


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, candles: pd.DataFrame) -> Trained:
    """The light model trained once on the slice into a fresh registry (and made latest)."""
    registry = tmp_path_factory.mktemp("registry")
    config = TrainingConfig(registry=registry, start_date=START, end_date=END, **BASE)
    result = train_model(config, candles)
    return Trained(
        registry,
        result.version,
        result.path,
        result,
        read_json(result.path / "metadata.json"),
        read_json(result.path / "feature_schema.json"),
        read_json(result.path / "metrics.json"),
    )


@pytest.fixture
def registry_copy(trained: Trained, tmp_path: Path) -> Path:
    """A private copy of the trained registry (v1 latest), for tests that change it."""
    dst = tmp_path / "registry"
    shutil.copytree(trained.registry, dst, symlinks=True)
    return dst


def _snapshot(registry: Path) -> dict[str, Any]:
    """Everything a reader or a later trainer could observe in a registry."""
    layout = RegistryLayout(registry)
    tdir = layout.type_dir(SYMBOL, TYPE)
    return {
        "tree": sorted(str(p.relative_to(registry)) for p in registry.rglob("*")),
        "latest": layout.read_latest(SYMBOL, TYPE),
        "ledger": (tdir / LEDGER).read_text() if (tdir / LEDGER).exists() else "",
        "bundles": [
            (i.symbol, i.model_type, i.version, i.is_latest, i.timeframe, i.created_at, i.error)
            for i in ModelRegistry(registry).list_bundles()
        ],
    }


def _ledger(registry: Path) -> list[str]:
    path = RegistryLayout(registry).type_dir(SYMBOL, TYPE) / LEDGER
    return path.read_text().split() if path.exists() else []


def _n(version: str) -> int:
    m = VERSION_RE.match(version)
    assert m is not None, version
    return int(m.group(2))


def _staging(registry: Path) -> list[str]:
    return sorted(p.name for p in registry.iterdir() if p.name.startswith(".staging-"))


def _position(frame: pd.DataFrame, stamp: str) -> int:
    return int(frame.index.get_loc(pd.Timestamp(stamp)))


def _wilder_rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """RSI with Wilder smoothing, seeded with the mean of the first ``period`` changes."""
    change = np.diff(close)
    gain, loss = np.clip(change, 0, None), np.clip(-change, 0, None)
    avg_gain, avg_loss = gain[:period].mean(), loss[:period].mean()
    out = []
    for k in range(period, len(change) + 1):
        if k > period:
            avg_gain = (avg_gain * (period - 1) + gain[k - 1]) / period
            avg_loss = (avg_loss * (period - 1) + loss[k - 1]) / period
        out.append(100.0 if avg_loss == 0 else 100.0 - 100.0 / (1.0 + avg_gain / avg_loss))
    return np.array(out)


def _raw_features(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The basic recipe's standardised features before z-scoring, computed with numpy."""
    o, h, lo, c = (frame[k].to_numpy(np.float64) for k in ("open", "high", "low", "close"))
    return {
        "log_return": np.log(c[1:] / c[:-1]),
        "range": (h - lo) / c,
        "body": (c - o) / c,
        "rsi": _wilder_rsi(c),
    }


def _zscore_step(schema: dict, name: str) -> dict | None:
    [feature] = [f for f in schema["features"] if f["name"] == name]
    steps = [t for t in feature["transforms"] if t["op"] == "zscore"]
    return steps[-1] if steps else None


def _walk_numbers(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_numbers(v, f"{path}[{i}]")
    else:
        yield path, value


def _onnx_outputs(model_path: Path, windows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: windows.astype(np.float32)})[0].reshape(-1)


def _served_raw(registry: Path, frame: pd.DataFrame, version: str | None = None) -> pd.Series:
    engine = PredictionEngine(PredictionConfig(model_registry_path=registry))
    series = engine.predict_series(frame, SYMBOL, TYPE, "1h", version)
    return series["raw"]


# ---------------------------------------------------------------- end to end


def test_train_model_with_small_slice_registers_servable_latest_version(
    trained: Trained,
) -> None:
    m = VERSION_RE.match(trained.version)
    assert m is not None, trained.version
    assert m.group(1) in {
        (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=d)).isoformat() for d in (0, 1)
    }
    assert m.group(2) == "1"
    assert trained.path == trained.registry / SYMBOL / TYPE / trained.version
    assert trained.result.promoted is True

    registry = ModelRegistry(trained.registry)
    bundle = registry.select_bundle(SYMBOL, TYPE, "1h")
    assert bundle.version == trained.version
    assert bundle.key == f"{SYMBOL}/{TYPE}@{trained.version}"
    assert bundle.sequence_length == SEQ
    infos = registry.list_bundles()
    assert [(i.version, i.is_latest, i.error) for i in infos] == [(trained.version, True, None)]
    assert sorted(p.name for p in trained.path.iterdir()) == [
        "feature_schema.json",
        "metadata.json",
        "metrics.json",
        "model.onnx",
        "model.pkl",
        "parity_certificate.npz",
    ]
    assert _staging(trained.registry) == []


def test_prediction_engine_with_trained_version_serves_onnx_output_as_log_return(
    trained: Trained, frame: pd.DataFrame
) -> None:
    engine = PredictionEngine(PredictionConfig(model_registry_path=trained.registry))
    pred = engine.predict(frame, SYMBOL, TYPE, "1h")

    bundle = ModelRegistry(trained.registry).select_bundle(SYMBOL, TYPE)
    cols = {c: frame[c].to_numpy(np.float64) for c in bundle.pipeline.columns}
    window = bundle.pipeline.batch_windows(cols, start=len(frame) - 1).windows[-1:]
    raw = float(_onnx_outputs(trained.path / "model.onnx", window)[0])
    close = float(frame["close"].iloc[-1])

    assert pred.model_key == f"{SYMBOL}/{TYPE}@{trained.version}"
    assert pred.raw == pytest.approx(raw, rel=1e-6, abs=1e-12)
    assert pred.price == pytest.approx(close * math.exp(raw), rel=1e-9)
    assert pred.reference_close == pytest.approx(close)
    assert pred.direction == (1 if raw > 0 else -1 if raw < 0 else 0)
    series = engine.predict_series(frame, SYMBOL, TYPE, "1h")
    assert series["price"].iloc[-1] == pytest.approx(pred.price, rel=1e-12)


def test_run_backtest_with_trained_model_trades_and_reproduces_quick_backtest(
    trained: Trained, frame: pd.DataFrame
) -> None:
    test_start = pd.Timestamp(trained.metrics["test_period"][0])

    result = run_backtest(
        frame,
        MlBasic,
        symbol=SYMBOL,
        timeframe="1h",
        start=test_start,
        registry=str(trained.registry),
        gap_policy="skip",  # as the quick backtest
        record_decisions=False,
    )

    pred = result.strategy.predictions[result.strategy.datas[0]]
    assert pred.model_key == f"{SYMBOL}/{TYPE}@{trained.version}"
    assert result.summary["start"] == str(test_start)
    assert result.summary["end"] == str(frame.index[-1])
    # The registered model, served from the registry, trades exactly as during registration.
    assert result.summary == trained.metrics["backtest"]


def test_metadata_with_trained_version_records_checksum_target_parity_and_lineage(
    trained: Trained, frame: pd.DataFrame
) -> None:
    meta = trained.metadata
    training = meta["training"]

    digest = hashlib.sha256((trained.path / "model.onnx").read_bytes()).hexdigest()
    assert meta["model_sha256"] == digest
    assert meta["output"]["target"] == "log_return"
    assert meta["output"]["horizon"] == 1
    assert meta["input"]["shape"] == [None, SEQ, 5]
    assert (meta["symbol"], meta["model_type"], meta["timeframe"], meta["version"]) == (
        SYMBOL,
        TYPE,
        "1h",
        trained.version,
    )
    parity = training["export_parity_max_abs_diff"]
    assert 0 <= parity <= TrainingConfig(symbol=SYMBOL).parity_tolerance
    assert parity == trained.metrics["export_parity_max_abs_diff"]
    assert training["data"]["first_bar"] == str(frame.index[0])
    assert training["data"]["last_bar"] == str(frame.index[-1])
    assert training["data"]["rows"] == len(frame)
    assert training["config"]["start_date"] == START
    assert training["config"]["end_date"] == END
    assert training["seed"] == training["config"]["seed"] == 0
    assert training["architecture"] == "mlp"
    libraries = training["libraries"]
    for name in ("numpy", "pandas", "onnxruntime", "onnx", "scikit-learn", "skl2onnx"):
        assert libraries[name] == md.version(name), name
    assert libraries["python"] == ".".join(map(str, sys.version_info[:3]))


def test_feature_schema_with_trained_version_fits_zscore_on_train_bars_only(
    trained: Trained, frame: pd.DataFrame
) -> None:
    train_end = int(0.7 * len(frame))
    on_train = _raw_features(frame.iloc[:train_end])
    on_all = _raw_features(frame)

    assert trained.schema["sequence_length"] == SEQ
    for name, values in on_train.items():
        step = _zscore_step(trained.schema, name)
        assert step is not None, name
        assert step["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-15), name
        assert step["std"] == pytest.approx(values.std(), rel=1e-9), name
        everything = on_all[name]
        leaked = math.isclose(step["mean"], everything.mean(), rel_tol=1e-6) and math.isclose(
            step["std"], everything.std(), rel_tol=1e-6
        )
        assert not leaked, f"{name} z-score equals the all-rows statistics"
    # volume_z is a causal rolling z-score: nothing fitted, nothing stored.
    assert _zscore_step(trained.schema, "volume_z") is None


def test_metadata_with_trained_version_holds_train_part_drift_reference(
    trained: Trained, frame: pd.DataFrame
) -> None:
    reference = drift_reference(trained.metadata)
    assert reference is not None
    assert reference.names == [f["name"] for f in trained.schema["features"]]
    assert reference.bins == DEFAULT_BINS

    # Recomputed here from the train bars with the registered schema, independently of training.
    train_end = int(0.7 * len(frame))
    pipe = FeaturePipeline(FeatureSchema.from_dict(trained.schema))
    cols = {c: frame[c].to_numpy(np.float64)[:train_end] for c in pipe.columns}
    series = pipe.series(cols)
    series = series[np.isfinite(series).all(axis=1)]
    assert reference.rows == len(series)
    # The train part against itself: PSI 0 as one window, and for each feature.
    whole = rolling_psi(series, reference, reference.names, window=len(series))[-1]
    assert np.all(np.abs(whole) < 1e-12), whole
    for j, name in enumerate(reference.names):
        edges, expected = reference.bins_of(name)
        assert psi(expected, bin_fractions(series[:, j], edges)) < 1e-12, name
    # The later parts are not what was measured: their rows would change the fractions.
    everything = pipe.series({c: frame[c].to_numpy(np.float64) for c in pipe.columns})
    assert reference.rows < int(np.isfinite(everything).all(axis=1).sum())

    # The model's output on the training windows (as served by onnxruntime).
    split = BarSplit.by_fraction(len(frame))
    train_x = build_parts(frame, pipe.schema, split, 1)["train"].X
    outputs = _onnx_outputs(trained.path / "model.onnx", train_x).astype(np.float64)
    edges, expected = reference.bins_of(PREDICTION)
    assert psi(expected, bin_fractions(outputs, edges)) < 1e-3


def test_metrics_with_trained_version_match_recomputation_from_candles(
    trained: Trained, frame: pd.DataFrame
) -> None:
    metrics = trained.metrics
    samples = trained.metadata["training"]["samples"]
    close = frame["close"].to_numpy(np.float64)
    t0, t1 = _position(frame, samples["test"]["first"]), _position(frame, samples["test"]["last"])
    e = np.arange(t0, t1 + 1)
    actual = np.log(close[e + 1] / close[e])
    raw = _served_raw(trained.registry, frame).loc[frame.index[e]].to_numpy(np.float64)
    r0, r1 = _position(frame, samples["train"]["first"]), _position(frame, samples["train"]["last"])
    tr = np.arange(r0, r1 + 1)
    mu = float(np.mean(np.log(close[tr + 1] / close[tr])))

    def rmse(price: np.ndarray) -> float:
        return float(np.sqrt(np.mean((price - close[e + 1]) ** 2)))

    def mae(price: np.ndarray) -> float:
        return float(np.mean(np.abs(price - close[e + 1])))

    moved = actual != 0
    test = metrics["test"]
    assert metrics["target"] == "log_return"
    assert metrics["test_period"] == [samples["test"]["first"], samples["test"]["last"]]
    assert test["samples"] == len(e) == samples["test"]["count"]
    model_price = close[e] * np.exp(raw)
    assert test["model"]["rmse"] == pytest.approx(rmse(model_price), rel=1e-9)
    assert test["model"]["mae"] == pytest.approx(mae(model_price), rel=1e-9)
    assert test["model"]["directional_accuracy"] == pytest.approx(
        np.mean(np.sign(raw[moved]) == np.sign(actual[moved]))
    )
    assert test["baseline_last_close"]["rmse"] == pytest.approx(rmse(close[e]), rel=1e-12)
    assert test["baseline_last_close"]["mae"] == pytest.approx(mae(close[e]), rel=1e-12)
    assert test["baseline_drift"]["drift_per_bar"] == pytest.approx(mu, rel=1e-9)
    assert test["baseline_drift"]["rmse"] == pytest.approx(rmse(close[e] * np.exp(mu)), rel=1e-9)
    assert test["baseline_drift"]["directional_accuracy"] == pytest.approx(
        np.mean(np.sign(mu) == np.sign(actual[moved]))
    )
    # Price units: errors are a fraction of the price level, not of a normalised target.
    assert 0 < test["model"]["mae"] < 0.1 * close[e].mean()
    assert metrics["causality_checks"] == 8

    backtest = metrics["backtest"]
    assert backtest["start"] == samples["test"]["first"]
    assert backtest["buy_and_hold_return"] == pytest.approx(close[-1] / close[t0] - 1, rel=1e-12)
    for key in ("total_return", "max_drawdown", "trades", "exposure", "fees_paid"):
        assert backtest[key] is not None, key
    for path, value in _walk_numbers(metrics):
        if isinstance(value, float):
            assert math.isfinite(value), path


# ---------------------------------------------------------------- split


def test_trained_version_with_recorded_samples_keeps_full_window_between_parts(
    trained: Trained, frame: pd.DataFrame
) -> None:
    samples = trained.metadata["training"]["samples"]
    min_bars = trained.schema["warmup_bars"] + trained.schema["sequence_length"]
    n = len(frame)
    a, b = int(0.7 * n), int(0.85 * n)
    bounds = {"train": (0, a), "val": (a, b), "test": (b, n)}
    pos = {
        k: (_position(frame, s["first"]), _position(frame, s["last"])) for k, s in samples.items()
    }

    for name, (lo, hi) in bounds.items():
        first, last = pos[name]
        assert first - (min_bars - 1) >= lo, name  # window and warm-up inside the part
        assert last + 1 < hi, name  # target inside the part
        assert samples[name]["count"] == last - first + 1, name  # no holes (no gaps here)
    for before, after in (("train", "val"), ("val", "test")):
        last_target = pos[before][1] + 1
        first_window_start = pos[after][0] - (min_bars - 1)
        assert last_target < first_window_start, (before, after)
        assert pos[after][0] - last_target >= SEQ, (before, after)


@pytest.mark.parametrize("horizon", [1, 3])
def test_build_parts_with_chronological_split_never_shares_a_bar(
    frame: pd.DataFrame, horizon: int
) -> None:
    cols = {c: frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume")}
    split = BarSplit.by_fraction(len(frame))
    schema = fit_schema(recipe_for(TYPE), SEQ, cols, split.train_end)
    parts = build_parts(frame, schema, split, horizon)
    min_bars = FeaturePipeline(schema).min_bars

    spans = {
        name: (int(p.end_index.min()) - (min_bars - 1), int(p.end_index.max()) + horizon)
        for name, p in parts.items()
    }
    assert spans["train"][1] < spans["val"][0]
    assert spans["val"][1] < spans["test"][0]
    assert spans["train"][1] < split.train_end <= spans["val"][0]
    assert spans["val"][1] < split.val_end <= spans["test"][0]
    for name, p in parts.items():
        assert (np.diff(p.stamps.asi8) > 0).all(), name
        expected = np.log(cols["close"][p.end_index + horizon] / cols["close"][p.end_index])
        np.testing.assert_array_equal(p.y, expected)
        assert p.X.dtype == np.float32 and p.X.shape[1:] == (SEQ, 5)
    assert parts["train"].stamps[-1] < parts["val"].stamps[0] < parts["test"].stamps[0]


# ---------------------------------------------------------------- gates


@pytest.mark.parametrize("tolerance", [0.0, 1e-12])
def test_train_model_with_tolerance_below_export_error_refuses_registration(
    registry_copy: Path, candles: pd.DataFrame, tolerance: float
) -> None:
    before = _snapshot(registry_copy)
    config = TrainingConfig(
        registry=registry_copy,
        start_date=START,
        end_date=END,
        parity_tolerance=tolerance,
        **BASE,
    )

    with pytest.raises(TrainingError, match="not registered"):
        train_model(config, candles)

    assert _snapshot(registry_copy) == before
    assert _staging(registry_copy) == []


def test_causality_check_with_look_ahead_predictions_raises_training_error(
    trained: Trained, frame: pd.DataFrame
) -> None:
    bundle = ModelRegistry(trained.registry).select_bundle(SYMBOL, TYPE)
    model_bytes = (trained.path / "model.onnx").read_bytes()
    cols = {c: frame[c].to_numpy(np.float64) for c in bundle.pipeline.columns}
    batch = bundle.pipeline.batch_windows(cols)
    outputs = _onnx_outputs(trained.path / "model.onnx", batch.windows).astype(np.float64)
    ends = batch.end_index[-300:-1]
    honest = outputs[-300:-1]
    # What a feature reading one bar ahead would produce: the window ending at e + 1 at bar e.
    leaky = outputs[-299:]

    checked = causality_check(frame, bundle.feature_schema, model_bytes, ends, honest)
    assert checked == 8
    with pytest.raises(TrainingError, match="Causality check failed"):
        causality_check(frame, bundle.feature_schema, model_bytes, ends, leaky)


@pytest.mark.parametrize(
    "change", [{"epochs": 0}, {"horizon": 0}, {"sequence_length": 0}], ids=lambda c: str(c)
)
def test_train_model_with_nonpositive_setting_raises_configuration_error_before_training(
    tmp_path: Path, candles: pd.DataFrame, change: dict[str, int]
) -> None:
    registry = tmp_path / "registry"
    settings = {**BASE, "backtest": False, **change}
    with pytest.raises(ConfigurationError, match=next(iter(change))):
        config = TrainingConfig(registry=registry, start_date=START, end_date=END, **settings)
        train_model(config, candles)
    assert _ledger(registry) == []


def test_train_model_with_gaps_in_candles_drops_samples_spanning_them(
    tmp_path: Path, candles: pd.DataFrame
) -> None:
    gapped = candles.drop(candles.index[1000:1010]).drop(candles.index[3000:3005])
    config = TrainingConfig(registry=tmp_path / "registry", **BASE)

    result = train_model(config, gapped)

    schema = read_json(result.path / "feature_schema.json")
    min_bars = schema["warmup_bars"] + schema["sequence_length"]
    n = len(gapped)
    step = pd.Timedelta(hours=1).value
    gap_after = np.flatnonzero(np.diff(gapped.index.as_unit("ns").asi8) > step)
    assert len(gap_after) == 2
    ends = np.arange(int(0.85 * n) + min_bars - 1, n - 1)
    lo, hi = ends - (min_bars - 1), ends + 1
    clean = ends[[not ((lo[i] <= gap_after) & (gap_after < hi[i])).any() for i in range(len(ends))]]
    assert len(clean) < len(ends)  # the test part does contain a gap
    test = result.metrics["test"]
    assert test["samples"] == len(clean)
    assert result.metrics["test_period"] == [
        str(gapped.index[clean[0]]),
        str(gapped.index[clean[-1]]),
    ]
    meta = read_json(result.path / "metadata.json")
    assert meta["training"]["data"]["gaps"] == 2


# ---------------------------------------------------------------- latest, promote=False


def test_train_model_with_promote_false_then_true_switches_latest_atomically(
    registry_copy: Path, candles: pd.DataFrame
) -> None:
    layout = RegistryLayout(registry_copy)
    v1 = layout.read_latest(SYMBOL, TYPE)
    stop = threading.Event()
    seen: set[str | None] = set()
    errors: list[BaseException] = []

    def reader() -> None:
        registry = ModelRegistry(registry_copy)
        while not stop.is_set():
            try:
                seen.add(layout.read_latest(SYMBOL, TYPE))
                seen.add(registry.select_bundle(SYMBOL, TYPE).version)
            except BaseException as e:
                errors.append(e)
                return
            time.sleep(0.001)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        config = TrainingConfig(
            registry=registry_copy, start_date=START, end_date=END, backtest=False, **BASE
        )
        kept = train_model(dataclasses.replace(config, promote=False), candles)
        latest_after_kept = layout.read_latest(SYMBOL, TYPE)
        seen_before_switch = set(seen)
        moved = train_model(dataclasses.replace(config, seed=1), candles)
    finally:
        stop.set()
        thread.join(timeout=60)

    assert errors == []
    assert kept.promoted is False and latest_after_kept == v1
    assert (_n(kept.version), _n(moved.version)) == (2, 3)
    assert kept.path.is_dir()
    assert seen_before_switch == {v1}
    assert seen <= {v1, moved.version}
    assert moved.promoted is True
    assert layout.read_latest(SYMBOL, TYPE) == moved.version
    pointer = layout.type_dir(SYMBOL, TYPE) / "latest"
    assert pointer.is_symlink() and os.readlink(pointer) == moved.version
    leftovers = [p.name for p in layout.type_dir(SYMBOL, TYPE).iterdir() if p.name[0] == "."]
    assert sorted(leftovers) == [".latest-history", ".lock", ".versions"]
    assert _staging(registry_copy) == []


# ---------------------------------------------------------------- reproducibility


def test_train_model_with_same_seed_gives_bit_identical_model_and_predictions(
    tmp_path: Path, candles: pd.DataFrame, frame: pd.DataFrame
) -> None:
    def train(name: str, seed: int) -> tuple[bytes, np.ndarray, Path]:
        config = TrainingConfig(
            registry=tmp_path / name,
            start_date=START,
            end_date=END,
            backtest=False,
            **{**BASE, "seed": seed},
        )
        result = train_model(config, candles)
        raw = _served_raw(tmp_path / name, frame).to_numpy(np.float64)
        return (result.path / "model.onnx").read_bytes(), raw, result.path

    model_a, raw_a, path_a = train("a", 5)
    model_b, raw_b, path_b = train("b", 5)
    model_c, raw_c, _ = train("c", 6)

    assert model_a == model_b
    np.testing.assert_array_equal(raw_a, raw_b)
    assert read_json(path_a / "metrics.json")["test"] == read_json(path_b / "metrics.json")["test"]
    assert read_json(path_a / "feature_schema.json") == read_json(path_b / "feature_schema.json")
    assert model_a != model_c
    assert not np.array_equal(raw_a, raw_c)


# ---------------------------------------------------------------- concurrent trainers


def test_train_model_with_two_concurrent_trainers_registers_two_versions(
    registry_copy: Path, candles: pd.DataFrame
) -> None:
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(seed: int) -> None:
        config = TrainingConfig(
            registry=registry_copy,
            start_date=START,
            end_date=END,
            backtest=False,
            **{**BASE, "seed": seed},
        )
        try:
            barrier.wait()
            results[seed] = train_model(config, candles)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    versions = sorted((r.version for r in results.values()), key=_n)
    assert [_n(v) for v in versions] == [2, 3]
    layout = RegistryLayout(registry_copy)
    assert layout.versions(SYMBOL, TYPE)[1:] == versions
    assert layout.read_latest(SYMBOL, TYPE) in versions
    registry = ModelRegistry(registry_copy)
    for v in versions:
        assert registry.select_bundle(SYMBOL, TYPE, version=v).version == v
    assert _ledger(registry_copy)[1:] == versions
    assert _staging(registry_copy) == []


# ---------------------------------------------------------------- interrupted training


class _Process:
    """A child process whose output is read by two threads, so tests can wait on stderr lines.

    Each pipe has exactly one reader: the threads own stdout and stderr until they hit EOF.
    (``communicate()`` would read stderr too, racing the stderr thread for lines and closing
    the pipe under it.)
    """

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATB_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._stdout: list[str] = []
        self.stdout = ""
        self._readers = [
            threading.Thread(target=self._pump_stderr, daemon=True),
            threading.Thread(target=self._pump_stdout, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump_stderr(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def _pump_stdout(self) -> None:
        assert self.popen.stdout is not None
        self._stdout.extend(self.popen.stdout)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
                continue
            if re.search(pattern, line):
                return line
        self.popen.kill()
        self.finish()
        pytest.fail(f"never saw {pattern!r}; stderr:\n{''.join(self.stderr)[-3000:]}")

    def finish(self) -> int:
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        for reader in self._readers:
            reader.join(timeout=10)
            assert not reader.is_alive(), "child output still open 10 s after it exited"
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()
        self.stdout = "".join(self._stdout)
        return self.popen.returncode


def _cli_training(
    registry: Path, cwd: Path, bars: int, epochs: int, no_backtest: bool = False
) -> _Process:
    args = [str(ATB), "train", "model", SYMBOL, "--synthetic", "--bars", str(bars)]
    args += ["--sequence-length", str(SEQ), "--epochs", str(epochs), "--registry", str(registry)]
    return _Process([*args, "--no-backtest"] if no_backtest else args, cwd)


_SLOW_REGISTRATION = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    from atb_strategies.data.synthetic import generate_ohlcv
    from atb_strategies.training.trainer import TrainingConfig, train_model
    # A long test part makes the quick backtest (inside the staged registration) take seconds.
    config = TrainingConfig(symbol="ETHUSDT", sequence_length=24, epochs=2,
                            registry=Path(sys.argv[1]), train_fraction=0.3, val_fraction=0.1,
                            force_promote=True)
    result = train_model(config, generate_ohlcv(8000, seed=3))
    print("finished", result.version, flush=True)
    """
)


def _follow_up(registry: Path, candles: pd.DataFrame) -> str:
    config = TrainingConfig(
        registry=registry, start_date=START, end_date=END, backtest=False, **BASE
    )
    return train_model(config, candles).version


def test_atb_train_with_sigkill_during_fit_leaves_registry_unchanged(
    registry_copy: Path, candles: pd.DataFrame, tmp_path: Path
) -> None:
    assert ATB.is_file(), f"console script not installed at {ATB}"
    before = _snapshot(registry_copy)
    child = _cli_training(registry_copy, tmp_path, bars=8000, epochs=500)

    child.wait_for(r"epoch 1/500")
    child.popen.kill()
    code = child.finish()

    assert code == -signal.SIGKILL
    assert "registered" not in "".join(child.stderr) + child.stdout
    assert _snapshot(registry_copy) == before
    assert _staging(registry_copy) == []

    fresh = _follow_up(registry_copy, candles)
    assert _n(fresh) == max(_n(v) for v in _ledger(registry_copy)[:-1]) + 1
    assert ModelRegistry(registry_copy).select_bundle(SYMBOL, TYPE).version == fresh


def test_atb_train_with_sigint_during_epoch_aborts_and_leaves_registry_unchanged(
    registry_copy: Path, tmp_path: Path
) -> None:
    assert ATB.is_file(), f"console script not installed at {ATB}"
    # Each epoch fits for tens of milliseconds; a Ctrl-C 8 ms after "epoch 1" is logged lands
    # inside epoch 2's fit. Several runs, so timing luck cannot decide the outcome.
    for _ in range(4):
        before = _snapshot(registry_copy)
        child = _cli_training(registry_copy, tmp_path, bars=12000, epochs=4, no_backtest=True)
        child.wait_for(r"epoch 1/4")
        time.sleep(0.008)
        child.popen.send_signal(signal.SIGINT)
        code = child.finish()

        output = "".join(child.stderr) + child.stdout
        assert code != 0, output[-1500:]
        assert "registered" not in output
        assert _snapshot(registry_copy) == before


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_training_with_signal_during_registration_leaves_no_version_and_burns_its_id(
    registry_copy: Path, candles: pd.DataFrame, tmp_path: Path, sig: signal.Signals
) -> None:
    before = _snapshot(registry_copy)
    old_ledger = _ledger(registry_copy)
    child = _Process([sys.executable, "-c", _SLOW_REGISTRATION, str(registry_copy)], tmp_path)

    child.wait_for(r"causality check")
    # Wait for the staging directory: the id is issued and the staged registration has begun.
    deadline = time.monotonic() + 30
    while not _staging(registry_copy) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert _staging(registry_copy), "the child never reached the staged registration"
    child.popen.send_signal(sig)
    code = child.finish()

    output = "".join(child.stderr) + child.stdout
    assert "finished" not in child.stdout, output[-2000:]
    assert code == -sig, output[-2000:]  # an uncaught KeyboardInterrupt exits by SIGINT
    burned = _ledger(registry_copy)
    assert burned[: len(old_ledger)] == old_ledger and len(burned) == len(old_ledger) + 1
    after = _snapshot(registry_copy)
    assert after["latest"] == before["latest"]
    assert after["bundles"] == before["bundles"]
    assert RegistryLayout(registry_copy).versions(SYMBOL, TYPE) == [b[2] for b in before["bundles"]]
    if sig == signal.SIGINT:
        assert _staging(registry_copy) == []  # cleaned up on the way out

    fresh = _follow_up(registry_copy, candles)
    assert _n(fresh) == _n(burned[-1]) + 1  # the interrupted run's N is never reissued
    assert ModelRegistry(registry_copy).select_bundle(SYMBOL, TYPE).version == fresh


# ---------------------------------------------------------------- the baseline gate


def test_train_model_on_a_random_walk_registers_but_does_not_move_latest(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 3000)))
    walk = pd.DataFrame(
        {
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": np.full(3000, 5.0),
        },
        index=pd.date_range("2024-01-01", periods=3000, freq="h", name="timestamp"),
    )
    config = TrainingConfig(
        registry=tmp_path / "reg",
        symbol=SYMBOL,
        sequence_length=SEQ,
        epochs=3,
        backtest=False,
        bootstrap_reps=200,
    )
    first = train_model(config, walk)
    metrics = read_json(first.path / "metrics.json")
    assert metrics["gate"]["passed"] is False and metrics["gate"]["reasons"]
    assert metrics["oos"]["beats_baselines"] is False
    assert set(metrics["oos"]) >= {
        "direction_accuracy",
        "majority_baseline",
        "edge",
        "edge_ci95",
        "dm_vs_last_close",
        "dm_vs_drift",
    }
    assert metrics["validation"]["mse_constant"] > 0
    assert first.promoted is False and first.path.is_dir()  # a record, not latest
    assert RegistryLayout(tmp_path / "reg").read_latest(SYMBOL, TYPE) is None
    forced = train_model(dataclasses.replace(config, force_promote=True), walk)
    assert forced.promoted is True
    assert RegistryLayout(tmp_path / "reg").read_latest(SYMBOL, TYPE) == forced.version
