"""Winsorised train targets: the robust conditional mean that ridge and the MLPs estimate.

Hourly returns are fat-tailed and their volatility clusters; under squared loss a few extreme bars
set a model's weights. ``clip_bounds`` is the band ``median -/+ k`` robust standard deviations
(1.4826 x the median absolute deviation) of the *train* targets; ``winsorise`` clips to it and
says how many it clipped. The band comes from the train part only and is applied to the
validation targets too where a family stops early or chooses on them (the MLP), so that one wild
validation bar does not pick the epoch or the penalty. Calibration and every gate still read the
raw targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Train targets are clipped to median +/- this many robust standard deviations (None: not).
TARGET_CLIP: float | None = 3.0


def clip_bounds(y: np.ndarray, k: float) -> tuple[float, float]:
    """``median -/+ k * 1.4826 * MAD`` of ``y`` (the MAD scaled to a normal's standard deviation);
    an infinite band when the MAD is 0 (a constant target is left alone)."""
    median = float(np.median(y))
    spread = 1.4826 * float(np.median(np.abs(y - median)))
    if spread <= 0:
        return -np.inf, np.inf
    return median - k * spread, median + k * spread


@dataclass(frozen=True)
class Winsorised:
    """``y`` clipped to ``bounds`` (None: not clipped) and how many values were clipped."""

    y: np.ndarray
    bounds: tuple[float, float] | None
    clipped: int

    def lineage(self, k: float | None) -> dict | None:
        """``clip_record`` of this winsorisation."""
        return clip_record(k, self.bounds, self.clipped)


def clip_record(k: float | None, bounds: tuple[float, float] | None, clipped: int) -> dict | None:
    """``{"robust_sd", "bounds", "clipped"}`` for lineage; None when nothing was clipped by
    design (no ``bounds``)."""
    if bounds is None:
        return None
    return {"robust_sd": k, "bounds": list(bounds), "clipped": clipped}


def winsorise(
    y: np.ndarray, k: float | None, bounds: tuple[float, float] | None = None
) -> Winsorised:
    """``y`` (float64) clipped to ``bounds``, or to ``clip_bounds(y, k)`` when none are given;
    unchanged when ``k`` is None."""
    y = np.asarray(y, dtype=np.float64)
    if k is None:
        return Winsorised(y, None, 0)
    lo, hi = bounds if bounds is not None else clip_bounds(y, k)
    return Winsorised(np.clip(y, lo, hi), (lo, hi), int(np.count_nonzero((y < lo) | (y > hi))))
