"""The drift score of ``MlPrediction``: how far the model's inputs have moved from training.

Per feature, the population stability index of its last ``window`` per-bar values against the
bundle's ``drift_reference`` (``features.drift``, ``features.psi``), divided by that feature's
threshold; the score is the largest ratio, so ``score > 1`` means at least one feature drifted
past its threshold, and ``column`` names which one moved most (relative to its threshold).

A feature's threshold is ``drift_threshold`` when given, else the larger of ``PSI_DRIFT``
(0.25) and the feature's calibration: the largest rolling PSI over the train part itself,
recorded at training (used when the window matches). Real features are autocorrelated
(volatility regimes last weeks), so an undrifted market already moves slow features such as a
range or an RSI past 0.25 on a one-week window about half of the time (measured on BTCUSDT 1h;
``features.drift``); the calibration keeps the guard for moves larger than any week of the
training period showed. The model's predictions are not part of the score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from atb_strategies.features.drift import PSI_DRIFT, DriftReference, drift_reference
from atb_strategies.features.psi import DriftMonitor, rolling_psi
from atb_strategies.inference.bundle import ModelBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftScore:
    """Thresholds and reference of one bundle for one window."""

    reference: DriftReference
    names: list[str]
    thresholds: np.ndarray
    window: int

    def scores(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(score, column)`` per row of a ``(bars, features)`` PSI matrix; NaN and -1 where
        no feature has a value yet."""
        ratio = np.asarray(psi, dtype=np.float64).reshape(-1, len(self.names)) / self.thresholds
        known = np.isfinite(ratio).any(axis=1)
        score = np.full(len(ratio), np.nan)
        column = np.full(len(ratio), -1.0)
        if known.any():
            filled = np.where(np.isfinite(ratio[known]), ratio[known], -np.inf)
            column[known] = filled.argmax(axis=1)
            score[known] = filled.max(axis=1)
        return score, column

    def batch(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every bar of a whole per-bar series (``FeaturePipeline.series``)."""
        return self.scores(rolling_psi(series, self.reference, self.names, self.window))

    def monitor(self) -> DriftMonitor:
        """A streaming monitor whose ``update`` gives the PSI row of :meth:`scores`."""
        return DriftMonitor(self.reference, self.names, self.window)

    def describe(self, psi_ratio: float, column: int) -> str:
        name = self.names[int(column)]
        threshold = float(self.thresholds[int(column)])
        return (
            f"inputs drifted: PSI of {name!r} {psi_ratio * threshold:.2f} over its threshold "
            f"{threshold:.2f} on the last {self.window} bars"
        )


def drift_score_for(bundle: ModelBundle, window: int, threshold: float | None) -> DriftScore | None:
    """The drift score of ``bundle``, or None when it has no ``drift_reference`` (bundles
    trained before drift references existed; reported once per bundle)."""
    reference = drift_reference(bundle.metadata.raw)
    if reference is None:
        log.warning(
            "%s has no drift reference (trained before drift guards): drift not checked",
            bundle.key,
        )
        return None
    names = reference.names
    if threshold is not None:
        thresholds = np.full(len(names), float(threshold))
    else:
        calibration = dict(reference.calibration or {})
        if reference.calibration_window != window:
            calibration = {}  # measured with another window: not comparable
        thresholds = np.array([max(PSI_DRIFT, calibration.get(n, 0.0)) for n in names])
    return DriftScore(reference, names, thresholds, int(window))
