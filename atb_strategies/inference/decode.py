"""Turn raw model outputs into price, predicted return, direction and confidence.

Vectorised over a batch; a single prediction is a batch of one, so both paths share every
floating-point operation.

* ``price``: the predicted close ``horizon`` bars ahead in price units (NaN where the output
  has no price, e.g. class probabilities, or the target needs a price context and none was
  given).
* ``predicted_return``: the predicted change of the close from the decision bar. Return
  targets give it from the raw output alone, context or not (``log_return``: ``expm1(raw)``;
  ``simple_return``: ``raw``); price targets give ``price / reference_close - 1``, which needs
  the context; class outputs: NaN.
* ``direction``: +1, -1 or 0. Regression: the sign of ``predicted_return`` when its magnitude
  exceeds ``direction_threshold``, else 0 (and 0 where the return is unknown). Classes: the
  most probable class (up/down/flat).
* ``confidence`` in [0, 1]. Classes: the top probability. Regression: a magnitude heuristic,
  ``min(1, |predicted_return| / confidence_return_scale)`` with the scale declared in the
  bundle's output spec (default 0.01: a predicted 1 % move is full confidence). It is *not* a
  calibrated probability, and is 0 where the return is unknown.

Non-finite and implausible outputs are no prediction. This is the one rule, used by every path
(``OnnxRunner.predict``/``predict_batch``, the engine's ``predict``/``predict_series``,
``MlPrediction`` preloaded and streaming, the sweep's prediction cache, shadows, hot reload):

* ``"non_finite_output"``: a raw output of the window is NaN or infinite (any class
  probability, for class outputs);
* ``"implausible_output"``: a class-probability vector that is not a distribution (a
  probability outside ``[0, 1]`` or a sum other than 1, each by more than
  ``PROBABILITY_TOLERANCE``), or a regression output whose predicted move is absurd: the
  predicted close outside ``[close / 10, close * 10]`` of the decision bar's close
  (``|log(price / close)| > MAX_ABS_LOG_MOVE = ln 10``, whatever the horizon: no market this
  project trades moves tenfold within a model's horizon, while a broken model's output, such as
  a log return of 700, does), a non-positive predicted price, or a simple return ``<= -1``.
  Without a price context, return targets are still checked (the move is the raw output),
  ``close``/``close_zscore`` prices must be positive, ``close_window_minmax`` only finite.

A rejected window decodes to NaN price, return and confidence and direction 0, and its
``reason`` is the code above (None for a prediction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atb_strategies.bundle.format import CLASS_DIRECTIONS, OutputSpec
from atb_strategies.features.pipeline import PriceContext

#: Largest predicted ``|log(price / close)|`` that is a prediction (ln 10: a tenfold move).
MAX_ABS_LOG_MOVE = float(np.log(10.0))
#: How far a class probability may lie outside [0, 1], and their sum from 1.
PROBABILITY_TOLERANCE = 1e-3
#: Reason codes of a rejected output, and what each means (as the backtest summary says it).
REJECTED_OUTPUT_REASONS: dict[str, str] = {
    "non_finite_output": "the model's output is NaN or infinite",
    "implausible_output": (
        "the model's output is implausible (a tenfold move or more, or probabilities that "
        "are not a distribution)"
    ),
}


@dataclass(frozen=True)
class Decoded:
    """Decoded outputs of ``n`` windows, as float64 / int64 arrays of length ``n``."""

    price: np.ndarray
    predicted_return: np.ndarray
    direction: np.ndarray
    confidence: np.ndarray
    #: Object array: None where the window has a prediction, else a key of
    #: ``REJECTED_OUTPUT_REASONS``.
    reason: np.ndarray

    @property
    def rejected(self) -> np.ndarray:
        """Boolean mask of the windows whose output is no prediction."""
        return np.not_equal(self.reason, None)


def decode(
    spec: OutputSpec,
    raw: np.ndarray,
    context: PriceContext | None,
    direction_threshold: float = 0.0,
) -> Decoded:
    """Decode ``raw`` (``(n,)`` for regression targets, ``(n, k)`` for classes).

    Parameters
    ----------
    spec : OutputSpec
        The bundle's output spec (target, parameters, classes, confidence scale).
    raw : ndarray
        Raw model outputs.
    context : PriceContext or None
        Price context of each window (scalars or arrays of length ``n``); None when unknown.
    direction_threshold : float
        Predicted returns with ``|r| <= threshold`` give direction 0.

    Returns
    -------
    Decoded
        Price and predicted return (NaN where unknown), direction and confidence; rejected
        windows (see the module docstring) NaN, direction 0, with their ``reason``.
    """
    # a broken model's outputs overflow (exp(1000)) or mix inf and NaN: rejected below, quietly
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _decode(spec, raw, context, direction_threshold)


def _decode(
    spec: OutputSpec, raw: np.ndarray, context: PriceContext | None, direction_threshold: float
) -> Decoded:
    n = raw.shape[0]
    nan = np.full(n, np.nan)
    if spec.target == "class_probabilities":
        assert spec.classes is not None
        p = raw.astype(np.float64).reshape(n, len(spec.classes))
        finite = np.isfinite(p).all(axis=1)
        tol = PROBABILITY_TOLERANCE
        distribution = ((p >= -tol) & (p <= 1.0 + tol)).all(axis=1) & (
            np.abs(p.sum(axis=1) - 1.0) <= tol
        )
        ranked = np.where(np.isfinite(p), p, -np.inf)
        top = np.argmax(ranked, axis=1)
        dirs = np.array([CLASS_DIRECTIONS[c] for c in spec.classes], dtype=np.int64)[top]
        if p.shape[1] > 1:
            # a tie between the two most likely classes (a no-skill classifier's 50/50) says
            # nothing: direction 0, never argmax's first class
            second = np.sort(ranked, axis=1)[:, -2]
            dirs = np.where(ranked[np.arange(n), top] - second <= PROBABILITY_TOLERANCE, 0, dirs)
        conf = np.clip(p[np.arange(n), top], 0.0, 1.0)
        ret = nan.copy()
        reason = _reject(finite, distribution, (nan, ret, conf), dirs)
        return Decoded(nan, ret, dirs, conf, reason)

    r = raw.astype(np.float64)
    ret: np.ndarray | None = None
    if spec.target == "close":
        price = r
    elif spec.target == "close_zscore":
        price = r * float(spec.params["std"]) + float(spec.params["mean"])
    elif spec.target == "log_return":
        ret = np.expm1(r)
        price = nan if context is None else _array(context.reference_close) * np.exp(r)
    elif spec.target == "simple_return":
        ret = r
        price = nan if context is None else _array(context.reference_close) * (1.0 + r)
    elif context is None:
        price = nan
    elif spec.target == "close_window_minmax":
        lo = _array(context.window_close_min)
        span = _array(context.window_close_max) - lo
        price = np.where(span == 0, lo, r * span + lo)
    else:  # pragma: no cover - OutputSpec validates targets
        raise AssertionError(spec.target)
    if ret is None:
        ret = nan.copy() if context is None else price / _array(context.reference_close) - 1.0
    # every array above is fresh and of shape (n,) (r is; contexts are scalars or (n,) arrays)

    # an unknown return counts as 0: direction 0, confidence 0
    safe = np.where(np.isfinite(ret), ret, 0.0)
    magnitude = np.abs(safe)
    direction = (np.sign(safe) * (magnitude > direction_threshold)).astype(np.int64)
    confidence = np.minimum(1.0, magnitude / spec.confidence_return_scale)
    reason = _reject(
        np.isfinite(r),
        _plausible(spec.target, r, price, context),
        (price, ret, confidence),
        direction,
    )
    return Decoded(price, ret, direction, confidence, reason)


def _plausible(
    target: str, r: np.ndarray, price: np.ndarray, context: PriceContext | None
) -> np.ndarray:
    """Where a finite regression output's predicted move is within ``MAX_ABS_LOG_MOVE``."""
    if target == "log_return":
        move = r
    elif target == "simple_return":
        move = np.log1p(r)  # r <= -1: -inf or NaN, rejected below
    elif context is not None:
        move = np.log(price / _array(context.reference_close))
    elif target in ("close", "close_zscore"):
        move = np.where(price > 0, 0.0, np.nan)  # a price, but no close to compare with
    else:  # close_window_minmax without a context: nothing to compare with
        move = np.zeros_like(r)
    return np.abs(move) <= MAX_ABS_LOG_MOVE  # False for NaN


def _reject(
    finite: np.ndarray,
    plausible: np.ndarray,
    floats: tuple[np.ndarray, ...],
    direction: np.ndarray,
) -> np.ndarray:
    """The reason of each window (None where ``finite`` and ``plausible``); NaN into ``floats``
    (price, return, confidence) and 0 into ``direction`` at the rejected ones, in place."""
    reason = np.empty(finite.shape[0], dtype=object)  # all None
    ok = finite & plausible
    if np.count_nonzero(ok) < ok.shape[0]:
        reason[~plausible] = "implausible_output"
        reason[~finite] = "non_finite_output"
        bad = ~ok
        for values in floats:
            values[bad] = np.nan
        direction[bad] = 0
    return reason


def _array(values: float | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
