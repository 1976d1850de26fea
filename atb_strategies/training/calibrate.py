"""Calibration on the validation part: a predicted return means its size.

An over-fitted model's predictions spread wider than the returns they explain (at AR(1)
phi = 0.1 the default MLP's were 3.3x too wide: the slope of actual on predicted was 0.10).
After fitting, the slope ``b`` of the validation targets on the validation predictions is
measured *around the train mean* ``c`` (the constant predictor every model is gated against)::

    b = sum((p - c) * (y - c)) / sum((p - c) ** 2)      over the validation part
    calibrated = c + clip(b, 0, 1) * (p - c)

Decisions:

* slope only, no intercept of its own: the validation part's mean return is noise of the size
  of the signal (its standard error is std / sqrt(n)); letting it set the level would turn a
  model into a drift bet. The level stays the model's, shrunk toward the train mean.
* ``b`` is clipped to [0, 1]: calibration only *shrinks* toward the train mean. ``b > 1`` (a
  model too timid on validation) is not stretched, since stretching amplifies noise; ``b < 0``
  (anti-correlated on validation) becomes 0: the model then predicts the train mean, and the
  baseline gate says it has no edge.
* it is folded into the exported ONNX graph as one ``Mul``/``Add`` (``onnx_graph.append_affine``)
  and into the framework predictions alike, so the parity and causality gates check the
  calibrated model; the bundle's output *is* the calibrated log return. Slope, centre and the
  validation MSE before and after are recorded in lineage and ``metrics.json`` ``calibration``.

Only the validation part is read: the test part stays untouched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from atb_strategies.training.family import ModelFamily
from atb_strategies.training.onnx_graph import append_affine


@dataclass(frozen=True)
class Calibration:
    """``calibrated = center + slope * (raw - center)``; ``raw_slope`` before clipping."""

    slope: float
    center: float
    raw_slope: float
    validation_mse_before: float
    validation_mse_after: float

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return self.center + self.slope * (raw - self.center)

    @property
    def shift(self) -> float:
        """The additive term of ``raw * slope + shift``."""
        return self.center * (1.0 - self.slope)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "method": "slope on validation around the train mean, in [0, 1]"}


def fit_calibration(val_pred: np.ndarray, y_val: np.ndarray, center: float) -> Calibration:
    """The shrinkage of ``val_pred`` toward ``center`` that best fits ``y_val`` (see module)."""
    dp = np.asarray(val_pred, dtype=np.float64) - center
    dy = np.asarray(y_val, dtype=np.float64) - center
    denom = float(dp @ dp)
    raw = float(dp @ dy) / denom if denom > 0 else 0.0
    slope = float(np.clip(raw, 0.0, 1.0))
    before = float(np.mean((val_pred - y_val) ** 2))
    after = float(np.mean((center + slope * dp - y_val) ** 2))
    return Calibration(slope, float(center), raw, before, after)


@dataclass
class CalibratedModel:
    """A fitted model of ``family`` and the calibration applied to its output."""

    family: ModelFamily
    fitted: Any
    calibration: Calibration


class CalibratedFamily(ModelFamily[CalibratedModel]):
    """The family of ``inner`` with every prediction passed through its ``Calibration``.

    Only ``predict``, ``to_onnx`` and ``serialize`` are used (``fit`` happens in ``fit.py``);
    name, framework and framework file are the inner family's.
    """

    def __init__(self, inner: ModelFamily) -> None:
        self.inner = inner
        self.name = inner.name
        self.framework_file = inner.framework_file

    @property
    def framework(self) -> str:
        return self.inner.framework

    def fit(  # pragma: no cover - calibration is fitted by fit.fit_model
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
    ) -> CalibratedModel:
        raise NotImplementedError("fit the inner family, then fit_calibration")

    def predict(self, fitted: CalibratedModel, X: np.ndarray) -> np.ndarray:
        return fitted.calibration.apply(self.inner.predict(fitted.fitted, X))

    def to_onnx(self, fitted: CalibratedModel, sequence_length: int, n_features: int) -> bytes:
        raw = self.inner.to_onnx(fitted.fitted, sequence_length, n_features)
        cal = fitted.calibration
        return append_affine(raw, cal.slope, cal.shift)

    def serialize(self, fitted: CalibratedModel) -> bytes:
        """The inner family's bytes (the calibration is in lineage and the ONNX graph)."""
        return self.inner.serialize(fitted.fitted)
