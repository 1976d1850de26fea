"""Turn raw model outputs into price, predicted return, direction and confidence.

Vectorised over a batch; a single prediction is a batch of one, so both paths share every
floating-point operation.

* ``price``: the predicted close ``horizon`` bars ahead in price units (NaN where the output
  has no price, e.g. class probabilities, or no price context was given).
* ``predicted_return``: ``price / reference_close - 1`` (for class outputs: NaN).
* ``direction``: +1, -1 or 0. Regression: the sign of ``predicted_return`` when its magnitude
  exceeds ``direction_threshold``, else 0. Classes: the most probable class (up/down/flat).
* ``confidence`` in [0, 1]. Classes: the top probability. Regression: a magnitude heuristic,
  ``min(1, |predicted_return| / confidence_return_scale)`` with the scale declared in the
  bundle's output spec (default 0.01: a predicted 1 % move is full confidence). It is *not* a
  calibrated probability, and is 0 when no price context was given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atb_strategies.bundle.format import CLASS_DIRECTIONS, OutputSpec
from atb_strategies.features.pipeline import PriceContext


@dataclass(frozen=True)
class Decoded:
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
    """Decode ``raw`` (``(n,)`` for regression targets, ``(n, k)`` for classes)."""
    n = raw.shape[0]
    nan = np.full(n, np.nan)
    if spec.target == "class_probabilities":
        assert spec.classes is not None
        top = np.argmax(raw, axis=1)
        dirs = np.array([CLASS_DIRECTIONS[c] for c in spec.classes], dtype=np.int64)[top]
        conf = raw[np.arange(n), top].astype(np.float64)
        return Decoded(nan, nan.copy(), dirs, np.clip(conf, 0.0, 1.0))

    r = raw.astype(np.float64)
    if spec.target == "close":
        price = r
    elif spec.target == "close_zscore":
        price = r * float(spec.params["std"]) + float(spec.params["mean"])
    elif context is None:
        price = nan
    elif spec.target == "close_window_minmax":
        lo = np.asarray(context.window_close_min, dtype=np.float64)
        hi = np.asarray(context.window_close_max, dtype=np.float64)
        span = hi - lo
        price = np.where(span == 0, lo, r * span + lo)
    elif spec.target == "log_return":
        price = np.asarray(context.reference_close, dtype=np.float64) * np.exp(r)
    elif spec.target == "simple_return":
        price = np.asarray(context.reference_close, dtype=np.float64) * (1.0 + r)
    else:  # pragma: no cover - OutputSpec validates targets
        raise AssertionError(spec.target)

    price = np.broadcast_to(np.asarray(price, dtype=np.float64), (n,)).copy()
    if context is None:
        ret = nan.copy()
    else:
        ref = np.asarray(context.reference_close, dtype=np.float64)
        ret = price / ref - 1.0
    known = np.isfinite(ret)
    safe = np.where(known, ret, 0.0)
    direction = np.where(known & (np.abs(safe) > direction_threshold), np.sign(safe), 0).astype(
        np.int64
    )
    confidence = np.where(known, np.minimum(1.0, np.abs(safe) / spec.confidence_return_scale), 0.0)
    return Decoded(price, ret, direction, confidence)
