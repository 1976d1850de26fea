"""``auto``: choose the family and its regularisation on the validation part only.

Every candidate of ``CANDIDATES`` whose framework is installed is fitted on the train part
(early stopping and ridge's alpha grid also use the validation part), calibrated on the
validation part (``training.calibrate``), and scored by its calibrated validation MSE; the
lowest wins. The test part is never passed in, so it cannot influence the choice. The
candidates' scores, those skipped (framework missing) and the choice are recorded in lineage
and ``metrics.json`` ``model_selection``.

``gru`` is not a candidate: it needs the torch extra and trains minutes, not seconds.
Calibrated validation MSE is a little optimistic for every candidate alike (one fitted slope
each), so it ranks them fairly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.training.calibrate import Calibration, fit_calibration
from atb_strategies.training.family import ModelFamily, model_family


def _ridge() -> ModelFamily:
    return model_family("ridge")


def _lightgbm(num_leaves: int) -> Callable[[], ModelFamily]:
    def make() -> ModelFamily:
        from atb_strategies.training.boosting import LightgbmFamily

        model_family("lightgbm")  # raises ConfigurationError when the extra is missing
        return LightgbmFamily(num_leaves=num_leaves)

    return make


def _mlp() -> ModelFamily:
    return model_family("mlp")


#: Candidates by label: ridge (its own alpha grid), two tree sizes, the default MLP.
CANDIDATES: dict[str, Callable[[], ModelFamily]] = {
    "ridge": _ridge,
    "lightgbm_leaves7": _lightgbm(7),
    "lightgbm_leaves31": _lightgbm(31),
    "mlp": _mlp,
}


@dataclass
class AutoChoice:
    """The chosen candidate, fitted and calibrated, and what every candidate scored."""

    label: str
    family: ModelFamily
    fitted: Any
    calibration: Calibration
    scores: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """``model_selection`` of lineage and metrics."""
        return {
            "chosen": self.label,
            "family": self.family.name,
            "criterion": "calibrated validation MSE (test part never read)",
            "validation_mse": self.scores,
            "skipped": self.skipped,
        }


class AutoFamily(ModelFamily[AutoChoice]):
    """``auto``: fits the candidates and keeps the best on the validation part."""

    name = "auto"
    framework_file = "model.pkl"

    def __init__(self, candidates: dict[str, Callable[[], ModelFamily]] | None = None) -> None:
        self.candidates = dict(CANDIDATES if candidates is None else candidates)

    @property
    def framework(self) -> str:
        return "chosen per training (metadata.json training.model_selection)"

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
    ) -> AutoChoice:
        """Fit, calibrate and score every available candidate; return the best.

        Raises ``ConfigurationError`` when no candidate's framework is installed.
        """
        center = float(np.mean(y))
        best: AutoChoice | None = None
        scores: dict[str, float] = {}
        skipped: dict[str, str] = {}
        for label, make in self.candidates.items():
            try:
                family = make()
            except ConfigurationError as e:
                skipped[label] = str(e)
                continue
            fitted = family.fit(X, y, X_val, y_val, seed=seed, epochs=epochs)
            cal = fit_calibration(family.predict(fitted, X_val), y_val, center)
            scores[label] = cal.validation_mse_after
            if best is None or cal.validation_mse_after < best.calibration.validation_mse_after:
                best = AutoChoice(label, family, fitted, cal)
        if best is None:
            raise ConfigurationError(
                "Architecture 'auto' found no trainable family: " + "; ".join(skipped.values())
            )
        best.scores, best.skipped = scores, skipped
        return best

    def predict(self, fitted: AutoChoice, X: np.ndarray) -> np.ndarray:
        """The chosen candidate's (uncalibrated) predictions."""
        return fitted.family.predict(fitted.fitted, X)

    def to_onnx(self, fitted: AutoChoice, sequence_length: int, n_features: int) -> bytes:
        return fitted.family.to_onnx(fitted.fitted, sequence_length, n_features)

    def serialize(self, fitted: AutoChoice) -> bytes:
        return fitted.family.serialize(fitted.fitted)
