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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atb_strategies.bundle.format import CLASS_DIRECTIONS, OutputSpec
from atb_strategies.features.pipeline import PriceContext


@dataclass(frozen=True)
class Decoded:
    """Decoded outputs of ``n`` windows, as float64 / int64 arrays of length ``n``."""

    price: np.ndarray
    predicted_return: np.ndarray
    direction: np.ndarray
    confidence: np.ndarray


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
        Price and predicted return (NaN where unknown), direction and confidence.
    """
    n = raw.shape[0]
    nan = np.full(n, np.nan)
    if spec.target == "class_probabilities":
        assert spec.classes is not None
        top = np.argmax(raw, axis=1)
        dirs = np.array([CLASS_DIRECTIONS[c] for c in spec.classes], dtype=np.int64)[top]
        conf = raw[np.arange(n), top].astype(np.float64)
        return Decoded(nan, nan.copy(), dirs, np.clip(conf, 0.0, 1.0))

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
    return Decoded(price, ret, direction, confidence)


def _array(values: float | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
