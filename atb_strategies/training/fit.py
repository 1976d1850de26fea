"""Stage 4, fit: the model family trained on the train part, early-stopped and calibrated on the
validation part.

``fit_model`` returns the family that is exported and registered (for ``auto`` the chosen one),
wrapped in its validation calibration (``training.calibrate``) when ``config.calibrated``, and
what was chosen on the validation part (``selection``: ridge's alpha, LightGBM's best round,
auto's candidates and choice) for lineage and ``metrics.json``. The test part is not passed to
any family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atb_strategies.training.auto import AutoChoice
from atb_strategies.training.calibrate import CalibratedFamily, CalibratedModel, fit_calibration
from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.dataset import Part
from atb_strategies.training.family import ModelFamily
from atb_strategies.training.logger import log


@dataclass(frozen=True)
class FitOutcome:
    """The family to export and register, its fitted model, and what validation chose."""

    family: ModelFamily
    fitted: Any
    selection: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None


def fit_model(family: ModelFamily, parts: dict[str, Part], config: TrainingConfig) -> FitOutcome:
    """``family.fit`` on ``parts["train"]`` with ``parts["val"]`` for early stopping, selection
    and calibration."""
    train, val = parts["train"], parts["val"]
    fitted = family.fit(train.X, train.y, val.X, val.y, seed=config.seed, epochs=config.epochs)
    selection: dict[str, Any] = {}
    if isinstance(fitted, AutoChoice):
        selection["model_selection"] = fitted.record()
        log.info(
            "auto: chose %s (calibrated validation MSE %s)",
            fitted.label,
            ", ".join(f"{k} {v:.4g}" for k, v in fitted.scores.items()),
        )
        family, fitted = fitted.family, fitted.fitted
    describe = getattr(family, "selection", None)
    if callable(describe):
        selection["fitted"] = describe(fitted)
    if not config.calibrated or config.target == "direction":
        # a direction classifier calibrates its probabilities itself (temperature)
        return FitOutcome(family, fitted, selection)
    cal = fit_calibration(family.predict(fitted, val.X), val.y, float(np.mean(train.y)))
    log.info(
        "calibration: slope %.3g (raw %.3g) toward the train mean; validation MSE %.4g -> %.4g",
        cal.slope,
        cal.raw_slope,
        cal.validation_mse_before,
        cal.validation_mse_after,
    )
    wrapped = CalibratedFamily(family)
    return FitOutcome(wrapped, CalibratedModel(family, fitted, cal), selection, cal.to_dict())
