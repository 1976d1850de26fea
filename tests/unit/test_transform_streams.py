"""The streaming forms of the series transforms on Python floats (issue 20 item 3) give exactly
what the numpy-scalar forms they replaced gave, bit for bit: on random series with zeros,
negatives, NaN, inf and flat runs, and on the real candles (through the shipped schemas).

``_replaced`` below is the replaced streaming code, kept here as the reference."""

from __future__ import annotations

import json
import math
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.features import transforms as T
from atb_strategies.features.pipeline import FeaturePipeline
from tests.conftest import RICH_FEATURES, synthetic_candles

MODELS = Path(__file__).resolve().parents[2] / "models"


# ------------------------------------------------------------------ the replaced streaming code


def _replaced(transform: T.SeriesTransform) -> Callable[..., float]:
    """The streaming ``update`` each transform had before (numpy scalars under np.errstate)."""
    op, params = transform.op, transform.params
    if op == "log":

        def log(v: float) -> float:
            with np.errstate(divide="ignore", invalid="ignore"):
                return float(np.log(np.float64(v)))

        return log
    if op in ("log_return", "pct_change", "diff"):
        buf: deque[float] = deque(maxlen=params["period"] + 1)
        combine = transform.combine

        def lag(v: float) -> float:
            buf.append(v)
            if len(buf) <= params["period"]:
                return float("nan")
            with np.errstate(divide="ignore", invalid="ignore"):
                return float(combine(np.float64(buf[-1]), np.float64(buf[0])))

        return lag
    if op == "ratio":

        def ratio(a: float, b: float) -> float:
            with np.errstate(divide="ignore", invalid="ignore"):
                return float(np.float64(a) / np.float64(b))

        return ratio
    if op == "spread_ratio":

        def spread(a: float, b: float, c: float) -> float:
            with np.errstate(divide="ignore", invalid="ignore"):
                return float((np.float64(a) - np.float64(b)) / np.float64(c))

        return spread
    if op in ("sma", "rolling_zscore", "rolling_std"):
        rows = {"sma": T._sma_rows, "rolling_zscore": T._zscore_rows, "rolling_std": T._std_rows}
        fn, p = rows[op], params["period"]
        ring = np.empty(2 * p)
        seen = [0]

        def rolling(v: float) -> float:
            i = seen[0] % p
            ring[i] = ring[i + p] = v
            seen[0] += 1
            if seen[0] < p:
                return float("nan")
            start = seen[0] % p
            return fn(ring[start : start + p][None, :])[0]

        return rolling
    if op == "rsi":
        p = params["period"]
        gain, loss = T._RecursiveStream(p, 1.0 / p), T._RecursiveStream(p, 1.0 / p)
        prev: list[float] = []

        def rsi(v: float) -> float:
            if not prev:
                prev.append(v)
                return float("nan")
            d, prev[0] = v - prev[0], v
            ag = gain.update(d if d > 0 else 0.0)
            al = loss.update(-d if d < 0 else 0.0)
            return float(T._rsi_from(np.array([ag]), np.array([al]))[0])

        return rsi
    return transform.stream().update  # identity, ema, zscore, minmax_scale: unchanged


# ------------------------------------------------------------------ inputs


def _bits(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).view(np.uint64)


def _assert_same_bits(new: list[float], old: list[float], what: str) -> None:
    a, b = _bits(new), _bits(old)
    bad = np.flatnonzero(a != b)
    assert bad.size == 0, (
        f"{what}: first differing bar {bad[0]}: {new[bad[0]]!r} vs {old[bad[0]]!r}"
    )


def _nasty(n: int, seed: int) -> np.ndarray:
    """A random walk of prices with flat runs, zeros, negatives, tiny and huge values, NaN and
    inf scattered in."""
    rng = np.random.default_rng(seed)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    x[rng.integers(0, n, n // 20)] = 0.0
    x[rng.integers(0, n, n // 20)] *= -1.0
    x[rng.integers(0, n, n // 50)] = np.nan
    x[rng.integers(0, n, n // 80)] = np.inf
    x[rng.integers(0, n, n // 80)] = -np.inf
    x[rng.integers(0, n, n // 40)] *= 1e-300
    x[rng.integers(0, n, n // 40)] *= 1e300
    flat = rng.integers(0, n - 40)
    x[flat : flat + 40] = x[flat]  # a flat run longer than most periods: std 0
    return x


def _clean(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))


_CASES = [
    ("identity", {}),
    ("log", {}),
    ("log_return", {}),
    ("log_return", {"period": 3}),
    ("pct_change", {"period": 2}),
    ("diff", {"period": 24}),
    ("ratio", {}),
    ("spread_ratio", {}),
    ("sma", {"period": 7}),
    ("rolling_zscore", {"period": 168}),
    ("rolling_zscore", {"period": 2}),
    ("rolling_zscore", {"period": 130}),
    ("rolling_std", {"period": 24}),
    ("rolling_std", {"period": 257}),
    ("rsi", {"period": 14}),
    ("rsi", {"period": 2}),
    ("ema", {"period": 10}),
]


def _run(update: Callable[..., float], inputs: list[np.ndarray]) -> list[float]:
    # plain Python floats in, as FeatureStream gives them
    return [update(*row) for row in zip(*(col.tolist() for col in inputs), strict=True)]


def _warned(update: Callable[..., float], inputs: list[np.ndarray]) -> tuple[list[float], int]:
    """The outputs, and how many floating-point warnings numpy gave on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _run(update, inputs)
    return out, sum(issubclass(w.category, RuntimeWarning) for w in caught)


def _run_replaced(transform: T.SeriesTransform, inputs: list[np.ndarray]) -> list[float]:
    return _warned(_replaced(transform), inputs)[0]


@pytest.mark.parametrize(("op", "params"), _CASES, ids=[f"{o}{p}" for o, p in _CASES])
@pytest.mark.parametrize("data", ["nasty", "clean"])
def test_stream_equals_the_replaced_numpy_scalar_stream_bit_for_bit(
    op: str, params: dict, data: str
) -> None:
    cls = T.SERIES_TRANSFORMS[op]
    make = _nasty if data == "nasty" else _clean
    inputs = [make(3000, seed=11 + k) for k in range(cls.arity)]
    new, new_warnings = _warned(cls(**params).stream().update, inputs)
    old, old_warnings = _warned(_replaced(cls(**params)), inputs)
    _assert_same_bits(new, old, f"{op} {params} on {data} data")
    assert new_warnings <= old_warnings  # no warning the replaced code did not give
    if data == "clean":  # (on nasty data NaN stays in recursive transforms for good)
        assert sum(math.isfinite(v) for v in new) > 2000  # the comparison is not all NaN


@pytest.mark.parametrize("op", ["log", "log_return", "ratio", "spread_ratio", "pct_change"])
def test_stream_edge_values_equal_the_replaced_stream(op: str) -> None:
    cls = T.SERIES_TRANSFORMS[op]
    edge = [0.0, -0.0, 1.0, -1.0, 5e-324, 1e308, np.inf, -np.inf, np.nan, 2.5]
    grid = np.array(np.meshgrid(*[edge] * cls.arity)).reshape(cls.arity, -1)
    inputs = [np.repeat(col, 2) for col in grid]  # each pair also follows itself (lag forms)
    new = _run(cls().stream().update, inputs)
    old = _run_replaced(cls(), inputs)
    _assert_same_bits(new, old, op)


@pytest.mark.parametrize("period", [2, 7, 8, 9, 24, 127, 128, 129, 136, 168, 255, 256, 300])
def test_one_row_reductions_equal_numpy_mean_and_std_of_a_2d_window(period: int) -> None:
    # the pairwise sum of a contiguous 1-D row equals the row reduction of a (1, period) window
    rng = np.random.default_rng(period)
    rows = np.concatenate(
        [rng.normal(0, 1, (200, period)), rng.lognormal(10, 3, (200, period))], axis=0
    )
    for row in rows:
        mean = T._row_mean(row)
        std = T._row_std(row, mean)
        w = row[None, :]
        assert _bits([mean]) == _bits([w.mean(axis=1)[0]])
        assert _bits([std]) == _bits([w.std(axis=1)[0]])


def test_math_sqrt_equals_numpy_sqrt_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.lognormal(0, 50, 100_000), rng.uniform(0, 1, 100_000), [0.0, 5e-324, 1e308, np.inf]]
    )
    got = [math.sqrt(v) for v in values.tolist()]
    np.testing.assert_array_equal(_bits(got), np.sqrt(values).view(np.uint64))


# ------------------------------------------------------------------ through the pipeline


def _replaced_plan(stream) -> None:
    """Swap a FeatureStream's transform updates for the replaced ones."""
    plan = []
    for feat, (_, _, idx) in zip(stream._p._features, stream._plan, strict=True):
        chain = [_replaced(t) for t in feat.series]
        plan.append((chain[0], tuple(chain[1:]), idx))
    stream._plan = plan


def _same_windows(pipe: FeaturePipeline, frame: pd.DataFrame) -> int:
    new, old = pipe.stream(), pipe.stream()
    _replaced_plan(old)
    checked = 0
    for row in frame[pipe.columns].to_numpy():
        new.update(row)
        old.update(row)
        np.testing.assert_array_equal(
            new.last_series_row().view(np.uint64), old.last_series_row().view(np.uint64)
        )
        if new.ready:
            np.testing.assert_array_equal(
                new.window().view(np.uint64), old.window().view(np.uint64)
            )
            checked += 1
    return checked


_SHIPPED = ["BTCUSDT/basic/latest", "BTCUSDT/basic/2026-12-07_1h_v3", "BTCUSDT/sentiment/latest"]


def _schema(name: str) -> FeatureSchema:
    path = MODELS / name / "feature_schema.json"
    return FeatureSchema.from_dict(json.loads(path.read_text()), path)


def test_rich_schema_stream_equals_the_replaced_stream_bit_for_bit() -> None:
    pipe = FeaturePipeline(FeatureSchema(16, RICH_FEATURES))
    assert _same_windows(pipe, synthetic_candles(pipe.min_bars + 400, seed=4)) == 401


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("name", _SHIPPED)
def test_shipped_schema_stream_on_real_candles_equals_the_replaced_stream(
    name: str, real_candles: pd.DataFrame
) -> None:
    pipe = FeaturePipeline(_schema(name))
    frame = real_candles.iloc[:3000].copy()
    for c in pipe.columns:
        if c not in frame:
            frame[c] = np.linspace(20.0, 80.0, len(frame))  # a sentiment column
    assert _same_windows(pipe, frame) == len(frame) - pipe.min_bars + 1


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(("op", "params"), _CASES, ids=[f"{o}{p}" for o, p in _CASES])
def test_stream_on_all_real_candles_equals_the_replaced_stream(
    op: str, params: dict, real_candles: pd.DataFrame
) -> None:
    cls = T.SERIES_TRANSFORMS[op]
    cols = (
        ["close", "volume", "high"][: cls.arity]
        if op != "spread_ratio"
        else ["high", "low", "close"]
    )
    inputs = [real_candles[c].to_numpy(dtype=np.float64) for c in cols]
    new = _run(cls(**params).stream().update, inputs)
    old = _run_replaced(cls(**params), inputs)
    _assert_same_bits(new, old, f"{op} {params} on the real candles")
