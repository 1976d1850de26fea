"""Feature transforms: every one with a vectorised batch form and a bar-by-bar streaming form.

Two kinds exist.

*Series transforms* are causal: the value at bar ``t`` uses bars ``<= t`` only and does not
depend on where a model window starts (log return, SMA, EMA, RSI, rolling z-score, fitted
z-score or min-max scaling, ratios). ``batch`` maps whole arrays; ``stream()`` returns a small
state object whose ``update`` consumes one bar in O(period) at most.

*Window transforms* are applied to the ``sequence_length`` values a model sees, so row ``k`` of a
window may depend on the window's first row (the reference project's window-expanding min-max).
They only ever see bars inside the window, which all lie at or before the decision bar. Both
modes call the same ``apply`` on a ``(n_windows, sequence_length)`` array, so they agree
bit for bit.

Series transforms are chained: the first takes the feature's source column(s), each next one
takes the previous output. At most one window transform ends the chain.

This module is one piece (over 600 lines) on purpose: each transform keeps its batch and
streaming forms side by side, and the two must stay equal bit for bit; splitting the module by
form would separate exactly what has to be read together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "SERIES_TRANSFORMS",
    "WINDOW_TRANSFORMS",
    "SeriesTransform",
    "WindowTransform",
    "describe_transforms",
]

_NAN = float("nan")


class _Stream:
    """Streaming state of one series transform: ``update(*inputs) -> float``."""

    def update(self, *values: float) -> float:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class _ParamSpec:
    name: str
    kind: type
    required: bool
    default: Any = None
    minimum: float | None = None


class SeriesTransform:
    """A causal transform of ``arity`` input series into one output series.

    Subclasses declare ``op`` (the name used in ``feature_schema.json``), ``arity``,
    ``param_specs`` and implement ``batch`` and ``stream``. ``warmup`` is the number of leading
    bars (after the input's own warm-up) whose output is undefined (NaN).
    """

    op: ClassVar[str]
    arity: ClassVar[int] = 1
    description: ClassVar[str] = ""
    param_specs: ClassVar[tuple[_ParamSpec, ...]] = ()
    #: True when the value depends on all history since the first bar (EMA, RSI), not just on
    #: a fixed number of recent bars; such features are computed over every candle given.
    recursive: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = _validate_params(self.op, self.param_specs, params)

    @property
    def warmup(self) -> int:
        return 0

    def batch(self, *inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def stream(self) -> _Stream:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **self.params}


class WindowTransform:
    """A transform applied to each model window, ``(n, seq) -> (n, seq)``."""

    op: ClassVar[str]
    description: ClassVar[str] = ""
    param_specs: ClassVar[tuple[_ParamSpec, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.params = _validate_params(self.op, self.param_specs, params)

    def apply(self, windows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, **self.params}


def _validate_params(
    op: str, specs: tuple[_ParamSpec, ...], params: Mapping[str, Any]
) -> dict[str, Any]:
    known = {s.name for s in specs}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"Transform {op!r} got unknown parameter(s) {unknown}; "
            f"it takes {sorted(known) or 'no parameters'}."
        )
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in params or params[spec.name] is None:
            if spec.required:
                raise ValueError(
                    f"Transform {op!r} needs parameter {spec.name!r} "
                    f"({spec.kind.__name__}); it is missing."
                )
            out[spec.name] = spec.default
            continue
        value = params[spec.name]
        if spec.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"The {spec.name!r} parameter of transform {op!r} must be an integer. "
                    f"Got {value!r} instead."
                )
        elif spec.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"The {spec.name!r} parameter of transform {op!r} must be a number. "
                    f"Got {value!r} instead."
                )
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(
                    f"The {spec.name!r} parameter of transform {op!r} must be finite. "
                    f"Got {value!r} instead."
                )
        if spec.minimum is not None and value < spec.minimum:
            raise ValueError(
                f"The {spec.name!r} parameter of transform {op!r} must be >= {spec.minimum}. "
                f"Got {value!r} instead."
            )
        out[spec.name] = value
    return out


def _period(minimum: int = 1) -> _ParamSpec:
    return _ParamSpec("period", int, required=True, minimum=minimum)


def _lagged(x: np.ndarray, period: int, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    out = np.full(x.shape, _NAN)
    if x.size > period:
        out[period:] = fn(x[period:], x[:-period])
    return out


class _LagStream(_Stream):
    """``fn(x_t, x_{t-period})`` on Python floats, the last ``period + 1`` inputs in a ring."""

    def __init__(self, period: int, fn: Callable[[float, float], float]) -> None:
        self._ring = [_NAN] * (period + 1)
        self._size = period + 1
        self._n = 0
        self._fn = fn

    def update(self, *values: float) -> float:
        x = float(values[0])
        n, size = self._n, self._size
        self._ring[n % size] = x
        self._n = n + 1
        if n + 1 < size:
            return _NAN
        return self._fn(x, self._ring[(n + 1) % size])


class _MapStream(_Stream):
    def __init__(self, fn: Callable[..., float]) -> None:
        self._fn = fn

    def update(self, *values: float) -> float:
        return self._fn(*values)


# Streaming forms compute on Python floats: + - * / and comparisons of two floats are the same
# IEEE 754 double operations numpy's float64 ufuncs perform, so the values are equal bit for bit
# (``tests/unit/test_transform_streams.py`` checks every transform against the numpy form it
# replaced). Python raises where numpy returns inf or nan only for a division by zero: ``_div``
# takes numpy's result then. ``log`` stays numpy's (``math.log`` may differ in the last bit
# where numpy has its own SIMD logarithm), called without ``np.errstate`` when no warning can
# arise.


def _div(a: float, b: float) -> float:
    """``a / b`` of two floats as float64 division gives it (inf or nan when ``b`` is 0)."""
    try:
        return a / b
    except ZeroDivisionError:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.float64(a) / np.float64(b))


_np_log = np.log


def _log(v: float) -> float:
    """``np.log`` of one float; inf for 0 and nan below, without a warning."""
    if v > 0.0:  # finite or inf: no floating-point warning can arise
        return float(_np_log(v))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(_np_log(np.float64(v)))


# ---------------------------------------------------------------------------- series transforms


class Identity(SeriesTransform):
    op = "identity"
    description = "the source column as it is"

    def batch(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64).copy()

    def stream(self) -> _Stream:
        return _MapStream(float)


class Log(SeriesTransform):
    op = "log"
    description = "natural logarithm ln(x)"

    def batch(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)

    def stream(self) -> _Stream:
        return _MapStream(lambda v: _log(float(v)))


class _LagTransform(SeriesTransform):
    """``combine(x_t, x_{t-period})`` on arrays in batch; ``scalar``, the same IEEE operations on
    Python floats, in streaming."""

    param_specs = (_ParamSpec("period", int, required=False, default=1, minimum=1),)

    @staticmethod
    def combine(a: Any, b: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def scalar(a: float, b: float) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def warmup(self) -> int:
        return self.params["period"]

    def batch(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return _lagged(np.asarray(x, dtype=np.float64), self.params["period"], self.combine)

    def stream(self) -> _Stream:
        return _LagStream(self.params["period"], self.scalar)


class LogReturn(_LagTransform):
    op = "log_return"
    description = "ln(x_t / x_{t-period})"

    @staticmethod
    def combine(a: Any, b: Any) -> Any:
        return np.log(a / b)

    @staticmethod
    def scalar(a: float, b: float) -> float:
        return _log(_div(a, b))


class PctChange(_LagTransform):
    op = "pct_change"
    description = "x_t / x_{t-period} - 1"

    @staticmethod
    def combine(a: Any, b: Any) -> Any:
        return a / b - 1.0

    @staticmethod
    def scalar(a: float, b: float) -> float:
        return _div(a, b) - 1.0


class Diff(_LagTransform):
    op = "diff"
    description = "x_t - x_{t-period}"

    @staticmethod
    def combine(a: Any, b: Any) -> Any:
        return a - b

    @staticmethod
    def scalar(a: float, b: float) -> float:
        return a - b


class Ratio(SeriesTransform):
    op = "ratio"
    arity = 2
    description = "a / b of two source columns, e.g. volume / close"

    def batch(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return a / b

    def stream(self) -> _Stream:
        return _MapStream(lambda a, b: _div(float(a), float(b)))


class SpreadRatio(SeriesTransform):
    op = "spread_ratio"
    arity = 3
    description = "(a - b) / c of three source columns, e.g. (high - low) / close"

    def batch(self, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (a - b) / c

    def stream(self) -> _Stream:
        return _MapStream(lambda a, b, c: _div(float(a) - float(b), float(c)))


class _RollingStream(_Stream):
    """The last ``period`` inputs, oldest first, as one contiguous float64 row (a doubled ring
    buffer), reduced by ``value(row, x)`` (``x``: the newest input)."""

    def __init__(self, period: int) -> None:
        self._period = period
        self._buf = np.empty(2 * period, dtype=np.float64)
        self._n = 0

    def update(self, *values: float) -> float:
        x = float(values[0])
        p = self._period
        i = self._n % p
        buf = self._buf
        buf[i] = x
        buf[i + p] = x
        self._n += 1
        if self._n < p:
            return _NAN
        start = i + 1  # == self._n % p, the oldest input
        return self.value(buf[start : start + p], x)

    def value(self, row: np.ndarray, x: float) -> float:  # pragma: no cover - interface
        raise NotImplementedError


# ``w.mean(axis=1)`` and ``w.std(axis=1)`` of one window, as numpy's ``_mean`` and ``_var``
# compute them (one pairwise sum per contiguous row; true division by the count; the squared
# deviations summed the same way; the square root, correctly rounded in ``math`` as in numpy),
# without their per-call dispatch: equal bit for bit (tests/unit/test_transform_streams.py).
_add_reduce = np.add.reduce
_multiply = np.multiply


def _row_mean(row: np.ndarray) -> float:
    return float(_add_reduce(row)) / row.shape[0]


def _row_std(row: np.ndarray, mean: float) -> float:
    dev = row - mean
    _multiply(dev, dev, out=dev)
    return math.sqrt(float(_add_reduce(dev)) / row.shape[0])


class _SmaStream(_RollingStream):
    def value(self, row: np.ndarray, x: float) -> float:
        return _row_mean(row)


class _StdStream(_RollingStream):
    def value(self, row: np.ndarray, x: float) -> float:
        return _row_std(row, _row_mean(row))


class _ZscoreStream(_RollingStream):
    def value(self, row: np.ndarray, x: float) -> float:
        mean = _row_mean(row)
        std = _row_std(row, mean)
        return (x - mean) / std if std > 0 else 0.0  # nan std: 0, as np.where(std > 0, ...)


def _rolling(x: np.ndarray, period: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    out = np.full(len(x), _NAN)
    if len(x) >= period:
        out[period - 1 :] = fn(sliding_window_view(np.asarray(x, dtype=np.float64), period))
    return out


def _sma_rows(w: np.ndarray) -> np.ndarray:
    return w.mean(axis=1)


def _zscore_rows(w: np.ndarray) -> np.ndarray:
    mean = w.mean(axis=1)
    std = w.std(axis=1)
    last = w[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (last - mean) / std
    return np.where(std > 0, z, 0.0)


def _std_rows(w: np.ndarray) -> np.ndarray:
    return w.std(axis=1)


class Sma(SeriesTransform):
    op = "sma"
    description = "simple moving average of the last `period` values"
    param_specs = (_period(),)

    @property
    def warmup(self) -> int:
        return self.params["period"] - 1

    def batch(self, x: np.ndarray) -> np.ndarray:
        return _rolling(x, self.params["period"], _sma_rows)

    def stream(self) -> _Stream:
        return _SmaStream(self.params["period"])


class RollingZscore(SeriesTransform):
    op = "rolling_zscore"
    description = "(x_t - mean) / std over the last `period` values (population std; 0 if std is 0)"
    param_specs = (_period(2),)

    @property
    def warmup(self) -> int:
        return self.params["period"] - 1

    def batch(self, x: np.ndarray) -> np.ndarray:
        return _rolling(x, self.params["period"], _zscore_rows)

    def stream(self) -> _Stream:
        return _ZscoreStream(self.params["period"])


class RollingStd(SeriesTransform):
    """Realised volatility when applied to returns: ``log_return`` then ``rolling_std``.

    Streaming reduces the same ``period`` values the way batch's ``_std_rows`` does (same
    pairwise sums and divisions), so they agree bit for bit.
    """

    op = "rolling_std"
    description = "population std of the last `period` values (realised volatility of returns)"
    param_specs = (_period(2),)

    @property
    def warmup(self) -> int:
        return self.params["period"] - 1

    def batch(self, x: np.ndarray) -> np.ndarray:
        return _rolling(x, self.params["period"], _std_rows)

    def stream(self) -> _Stream:
        return _StdStream(self.params["period"])


def _recursive(seed_index: int, seed: float, rest: np.ndarray, alpha: float, n: int) -> np.ndarray:
    """y[seed_index] = seed, then y_t = alpha*x_t + (1-alpha)*y_{t-1}; NaN before seed_index."""
    out = np.full(n, _NAN)
    if seed_index >= n:
        return out
    series = np.concatenate(([seed], rest))
    out[seed_index:] = pd.Series(series).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    return out


class _RecursiveStream(_Stream):
    def __init__(self, period: int, alpha: float) -> None:
        self._period = period
        self._alpha = alpha
        self._seed: list[float] = []
        self._value = _NAN

    def update(self, *values: float) -> float:
        x = values[0]
        if len(self._seed) < self._period:
            self._seed.append(x)
            if len(self._seed) < self._period:
                return _NAN
            self._value = float(np.mean(np.asarray(self._seed)))
            return self._value
        a = self._alpha
        self._value = a * x + (1.0 - a) * self._value
        return self._value


class Ema(SeriesTransform):
    op = "ema"
    recursive = True
    description = (
        "exponential moving average, alpha = 2/(period+1), seeded with the SMA of the first "
        "`period` values (backtrader's convention)"
    )
    param_specs = (_period(),)

    @property
    def warmup(self) -> int:
        return self.params["period"] - 1

    def batch(self, x: np.ndarray) -> np.ndarray:
        p = self.params["period"]
        x = np.asarray(x, dtype=np.float64)
        if len(x) < p:
            return np.full(len(x), _NAN)
        return _recursive(p - 1, float(np.mean(x[:p])), x[p:], 2.0 / (p + 1), len(x))

    def stream(self) -> _Stream:
        p = self.params["period"]
        return _RecursiveStream(p, 2.0 / (p + 1))


def _rsi_from(avg_gain: np.ndarray, avg_loss: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        rs = avg_gain / avg_loss
        rsi = 100.0 - 100.0 / (1.0 + rs)
    rsi = np.where(avg_loss == 0, np.where(avg_gain == 0, 50.0, 100.0), rsi)
    return np.where(np.isnan(avg_gain) | np.isnan(avg_loss), _NAN, rsi)


class Rsi(SeriesTransform):
    op = "rsi"
    recursive = True
    description = (
        "Wilder's relative strength index in [0, 100]; averages seeded with the SMA of the first "
        "`period` changes, then smoothed with alpha = 1/period; 50 when flat, 100 with no losses"
    )
    param_specs = (_ParamSpec("period", int, required=False, default=14, minimum=2),)

    @property
    def warmup(self) -> int:
        return self.params["period"]

    def batch(self, x: np.ndarray) -> np.ndarray:
        p = self.params["period"]
        x = np.asarray(x, dtype=np.float64)
        n = len(x)
        if n <= p:
            return np.full(n, _NAN)
        diff = np.diff(x)
        gain = np.where(diff > 0, diff, 0.0)
        loss = np.where(diff < 0, -diff, 0.0)
        alpha = 1.0 / p
        ag = _recursive(p, float(np.mean(gain[:p])), gain[p:], alpha, n)
        al = _recursive(p, float(np.mean(loss[:p])), loss[p:], alpha, n)
        return _rsi_from(ag, al)

    def stream(self) -> _Stream:
        return _RsiStream(self.params["period"])


class _RsiStream(_Stream):
    def __init__(self, period: int) -> None:
        self._prev: float | None = None
        self._gain = _RecursiveStream(period, 1.0 / period)
        self._loss = _RecursiveStream(period, 1.0 / period)

    def update(self, *values: float) -> float:
        x = float(values[0])
        prev, self._prev = self._prev, x
        if prev is None:
            return _NAN
        d = x - prev
        ag = self._gain.update(d if d > 0 else 0.0)
        al = self._loss.update(-d if d < 0 else 0.0)
        return _rsi_value(ag, al)


def _rsi_value(ag: float, al: float) -> float:
    """``_rsi_from`` of one bar's averages, on Python floats (the same IEEE operations)."""
    if ag != ag or al != al:  # nan
        return _NAN
    if al == 0:
        return 50.0 if ag == 0 else 100.0
    return 100.0 - _div(100.0, 1.0 + ag / al)


class Zscore(SeriesTransform):
    op = "zscore"
    description = "(x - mean) / std with mean and std fitted on training rows and stored"
    param_specs = (
        _ParamSpec("mean", float, required=True),
        _ParamSpec("std", float, required=True),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["std"] <= 0:
            raise ValueError(
                f"The 'std' parameter of transform 'zscore' must be > 0. "
                f"Got {self.params['std']!r} instead."
            )

    def batch(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.params["mean"]) / self.params["std"]

    def stream(self) -> _Stream:
        m, s = self.params["mean"], self.params["std"]
        return _MapStream(lambda v: (v - m) / s)


class MinmaxScale(SeriesTransform):
    op = "minmax_scale"
    description = "(x - min) / (max - min) with min and max fitted on training rows and stored"
    param_specs = (
        _ParamSpec("min", float, required=True),
        _ParamSpec("max", float, required=True),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.params["max"] <= self.params["min"]:
            raise ValueError(
                "Transform 'minmax_scale' needs max > min. "
                f"Got min={self.params['min']!r}, max={self.params['max']!r} instead."
            )

    def batch(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self.params["min"], self.params["max"]
        return (np.asarray(x, dtype=np.float64) - lo) / (hi - lo)

    def stream(self) -> _Stream:
        lo, hi = self.params["min"], self.params["max"]
        return _MapStream(lambda v: (v - lo) / (hi - lo))


# ---------------------------------------------------------------------------- window transforms


def _minmax(x: np.ndarray, lo: np.ndarray, span: np.ndarray, constant: float) -> np.ndarray:
    """(x - lo) / span, ``constant`` where span == 0; ``span`` is consumed as scratch."""
    out = np.subtract(x, lo)
    flat = span == 0
    np.divide(out, span, out=out, where=~flat)
    out[np.broadcast_to(flat, out.shape)] = constant
    return out


class WindowExpandingMinmax(WindowTransform):
    op = "window_expanding_minmax"
    description = (
        "row k of the window -> (x_k - min(x_0..x_k)) / (max(x_0..x_k) - min(x_0..x_k)); "
        "`constant_value` where max == min (so row 0 always equals it). The reference project's "
        "price_only_rolling_minmax features"
    )
    param_specs = (_ParamSpec("constant_value", float, required=False, default=0.5),)

    def apply(self, windows: np.ndarray) -> np.ndarray:
        lo = np.minimum.accumulate(windows, axis=1)
        span = np.maximum.accumulate(windows, axis=1)
        span -= lo
        return _minmax(windows, lo, span, self.params["constant_value"])


class WindowMinmax(WindowTransform):
    op = "window_minmax"
    description = (
        "(x_k - min(window)) / (max(window) - min(window)); `constant_value` where max == min"
    )
    param_specs = (_ParamSpec("constant_value", float, required=False, default=0.5),)

    def apply(self, windows: np.ndarray) -> np.ndarray:
        lo = windows.min(axis=1, keepdims=True)
        span = windows.max(axis=1, keepdims=True) - lo
        return _minmax(windows, lo, span, self.params["constant_value"])


class WindowZscore(WindowTransform):
    op = "window_zscore"
    description = (
        "(x_k - mean(window)) / std(window), population std; `constant_value` where std == 0"
    )
    param_specs = (_ParamSpec("constant_value", float, required=False, default=0.0),)

    def apply(self, windows: np.ndarray) -> np.ndarray:
        mean = windows.mean(axis=1, keepdims=True)
        std = windows.std(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (windows - mean) / std
        return np.where(std == 0, self.params["constant_value"], out)


class WindowRelative(WindowTransform):
    op = "window_relative"
    description = "x_k / x_last - 1, relative to the window's last (current) value"

    def apply(self, windows: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return windows / windows[:, -1:] - 1.0


SERIES_TRANSFORMS: dict[str, type[SeriesTransform]] = {
    cls.op: cls
    for cls in (
        Identity,
        Log,
        LogReturn,
        PctChange,
        Diff,
        Ratio,
        SpreadRatio,
        Sma,
        Ema,
        Rsi,
        RollingZscore,
        RollingStd,
        Zscore,
        MinmaxScale,
    )
}

WINDOW_TRANSFORMS: dict[str, type[WindowTransform]] = {
    cls.op: cls for cls in (WindowExpandingMinmax, WindowMinmax, WindowZscore, WindowRelative)
}


def describe_transforms() -> list[tuple[str, str, str, str]]:
    """Rows ``(op, kind, parameters, description)`` for documentation and the CLI."""
    rows = []
    for kind, table in (("series", SERIES_TRANSFORMS), ("window", WINDOW_TRANSFORMS)):
        for op, cls in table.items():
            params = ", ".join(
                f"{s.name}" + ("" if s.required else f"={s.default!r}") for s in cls.param_specs
            )
            rows.append((op, kind, params, cls.description))
    return rows
