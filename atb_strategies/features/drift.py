"""Population stability index (PSI): how far recent per-bar features have moved from training.

At training, each feature's per-bar series (``FeaturePipeline.series``: the values before any
window transform, which a live session also gets bar by bar from ``FeatureStream``) is cut into
quantile bins on the **train part** only, and the fraction of training rows in each bin is
stored (``DriftReference``, bundle ``metadata.json`` key ``drift_reference``). Live and paper
sessions then bin the trailing ``window`` bars the same way and compare the two histograms::

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

``features.psi.rolling_psi`` computes it for every bar of a whole series at once
(vectorised); ``features.psi.DriftMonitor`` does it bar by bar in O(bins x features) and returns
the same floats, bit for bit (both read the same precomputed table of per-bin terms and add the
terms in the same order).

Thresholds (the usual credit-scoring convention, also used by model-monitoring tools):

* ``PSI < PSI_WARN`` (0.1): no meaningful shift;
* ``PSI_WARN <= PSI < PSI_DRIFT`` (0.1 to 0.25): moderate shift, worth a warning;
* ``PSI >= PSI_DRIFT`` (0.25): significant shift; the drift guard fires.

**Noise floor.** PSI of a finite window is biased upwards: ``W`` rows drawn from the training
distribution itself into ``bins`` equally likely bins give a PSI of about ``(bins - 1) / W``
(0.054 for 10 bins and 168 rows). Measured with ``bins=10``, ``W=168``, 200,000 windows of
independent standard-normal draws against bins fitted on 10,000 draws: mean 0.057, median
0.053, 95th percentile 0.109, 99th 0.141, 99.99th 0.230; 7.6 % of the windows exceed
``PSI_WARN`` and 0.004 % (8 of 200,000) exceed ``PSI_DRIFT``. So with independent bars, 0.25 is
about 4.5 times the typical no-drift value and a false alarm is rare.

Real per-bar features are autocorrelated: a week of hourly bars holds far fewer than 168
independent values, and volatility regimes last weeks. Measured on real BTCUSDT 1h candles,
in sample (the ``basic`` recipe's features, bins fitted on 2023-01-01 .. 2024-06-09, 12,433
rows, and every trailing 168-bar window of that same period), the median PSI was 0.10 for
``log_return`` and ``body``, 0.14 for ``volume_z``, 0.25 for ``range`` and 0.27 for ``rsi``,
and 17 %, 17 %, 31 %, 50 % and 55 % of the bars were above ``PSI_DRIFT``, with no drift by
construction. With 720-bar windows (30 days) the medians were 0.04 to 0.13 and 3 % to 6 % of the
bars were above 0.25 (34 % for ``range``). A guard on a 168-bar window that acts on any
single feature crossing 0.25 therefore fires often on an undrifted market. Use it to warn, or
give it a longer window, a persistence rule, or the fast features only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atb_strategies.exceptions import BundleError, ConfigurationError
from atb_strategies.features.schema import FieldReader

#: Moderate shift: from here on a session may warn.
PSI_WARN = 0.1
#: Significant shift: from here on the drift guard fires (``drift_action``).
PSI_DRIFT = 0.25
#: Trailing bars compared with training: 168, one week of hourly bars. Every hour of every
#: weekday appears exactly once, so the weekly cycle (quiet weekends, session opens) is weighed
#: as in training instead of showing up as drift, and 10 bins still get about 17 bars each,
#: while a shift is seen within days. On other timeframes 168 bars is not a week.
DEFAULT_WINDOW = 168
#: Quantile bins per feature (deciles).
DEFAULT_BINS = 10
#: Fractions below this are raised to it in ``psi`` so that an empty bin costs a finite amount
#: (ln 0 is undefined): a training bin seen in 0 of 168 live rows counts as 1e-4, not 0.
EPS = 1e-4
#: The quantile of the train part's own rolling PSI stored as a column's calibration: 1.0, the
#: largest, so that the drift guard fires only on a move larger than any window of the training
#: period showed (a 0.99 quantile fires, by definition, on 1 % of the training period's bars).
CALIBRATION_QUANTILE = 1.0
#: Key of the reference in a bundle's ``metadata.json``.
METADATA_KEY = "drift_reference"
#: Name under which the model's predicted return is monitored next to the features (pass it in
#: ``names``; the column then holds the raw model output of each bar).
PREDICTION = "@prediction"


def reference_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Interior quantile cut points of a 1-D training sample (finite values only).

    Bins are closed on the right: bin 0 is ``x <= edges[0]``, bin ``k`` is
    ``edges[k-1] < x <= edges[k]`` and the last bin is ``x > edges[-1]``
    (``np.searchsorted(edges, x, side="left")``). Values outside the training range fall into
    the outer bins.

    The cut points are the ``k / bins`` quantiles (``k = 1 .. bins-1``, ``inverted_cdf``: each
    is a value of the sample), de-duplicated. With ties (a discrete feature, a mass at 0) there
    are fewer than ``bins - 1`` of them and the bins hold unequal fractions, so the fractions
    measured on training are stored next to the edges (``DriftReference.expected``). A top cut
    equal to the sample maximum would leave the last bin empty; it moves down to the largest
    value below the maximum, so every bin holds at least one training value. A constant sample
    ``c`` gets the cuts ``[c - ulp, c]``: bins "below c", "c" and "above c", with training
    fractions 0, 1, 0, so any live value other than ``c`` counts as drift (5 % of a window off
    the constant already gives a PSI above ``PSI_DRIFT``).

    Parameters
    ----------
    values : numpy.ndarray
        The training sample; NaN and infinite values are ignored.
    bins : int
        Bins wanted (default ``DEFAULT_BINS``); at least 2.

    Returns
    -------
    numpy.ndarray
        Strictly increasing float64 cut points, at least one.

    Raises
    ------
    ConfigurationError
        If ``bins < 2``, ``values`` is not 1-D, or it holds no finite value.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 2:
        raise ConfigurationError(
            f"The 'bins' parameter of reference_edges must be an integer >= 2. "
            f"Got {bins!r} instead."
        )
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ConfigurationError(
            f"The 'values' parameter of reference_edges must be 1-D. Got shape {x.shape} instead."
        )
    x = np.sort(x[np.isfinite(x)])
    if len(x) == 0:
        raise ConfigurationError(
            "The 'values' parameter of reference_edges must hold at least one finite value. "
            f"Got {len(values)} value(s), none finite, instead."
        )
    top = x[-1]
    if x[0] == top:
        return np.array([np.nextafter(top, -np.inf), top])
    edges = np.unique(np.quantile(x, np.arange(1, bins) / bins, method="inverted_cdf"))
    if edges[-1] == top:
        below = x[np.searchsorted(x, top, side="left") - 1]
        edges = np.unique(np.append(edges[:-1], below))
    return edges


def bin_fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fraction of the finite ``values`` in each of the ``len(edges) + 1`` bins."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        raise ConfigurationError(
            "The 'values' parameter of bin_fractions must hold at least one finite value. "
            "Got none instead."
        )
    idx = np.searchsorted(edges, x, side="left")
    return np.bincount(idx, minlength=len(edges) + 1) / len(x)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPS) -> float:
    """Population stability index of two histograms over the same bins.

    ``sum((a - e) * ln(a / e))`` with both fractions first raised to at least ``eps`` (default
    ``EPS`` = 1e-4), so an empty bin costs a finite, large amount instead of ln 0. Each term is
    >= 0; identical histograms give 0. The fractions are not renormalised after clipping.

    Parameters
    ----------
    expected, actual : numpy.ndarray
        Fractions per bin (each summing to 1), same length.
    eps : float
        Floor applied to every fraction.

    Raises
    ------
    ConfigurationError
        If the lengths differ.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ConfigurationError(
            "The 'expected' and 'actual' parameters of psi must be 1-D of the same length. "
            f"Got shapes {e.shape} and {a.shape} instead."
        )
    e = np.maximum(e, eps)
    a = np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


class _Malformed(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


class _InvalidReference(ConfigurationError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"DriftReference field {field!r} {problem}")
        self.field = field
        self.problem = problem


def _frozen(values: Any) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    out.setflags(write=False)
    return out


def _check_bins(where: str, edges: np.ndarray, expected: np.ndarray) -> None:
    if edges.ndim != 1 or len(edges) < 1:
        raise _Malformed(f"{where}.edges", "must be a non-empty list of numbers.")
    if not np.isfinite(edges).all() or not (np.diff(edges) > 0).all():
        raise _Malformed(f"{where}.edges", "must be finite and strictly increasing.")
    if expected.shape != (len(edges) + 1,):
        raise _Malformed(
            f"{where}.expected",
            f"must hold one fraction per bin ({len(edges) + 1} for {len(edges)} edges); "
            f"got {expected.size}.",
        )
    if not np.isfinite(expected).all() or (expected < 0).any():
        raise _Malformed(f"{where}.expected", "must be finite fractions >= 0.")
    if abs(float(expected.sum()) - 1.0) > 1e-6:
        raise _Malformed(f"{where}.expected", f"must sum to 1; sums to {float(expected.sum())!r}.")


@dataclass(frozen=True, eq=False)
class DriftReference:
    """Training-time distributions that live PSI is measured against.

    Two references are equal when their ``to_dict()`` forms are.

    Parameters
    ----------
    features : dict of str to numpy.ndarray
        Feature name -> bin edges (``reference_edges``), in the schema's feature order.
    expected : dict of str to numpy.ndarray
        Feature name -> fraction of training rows per bin (``len(edges) + 1`` values).
    bins : int
        Bins asked for per feature (ties can leave fewer).
    rows : int
        Training rows the distributions were measured on.
    prediction : numpy.ndarray or None
        Bin edges of the model's raw output on the training windows; None when not recorded.
    prediction_expected : numpy.ndarray or None
        Fraction of training predictions per bin; set exactly when ``prediction`` is.
    calibration : dict of str to float, or None
        Per column (features, and ``PREDICTION`` when recorded): the ``CALIBRATION_QUANTILE``
        (the maximum) of the rolling PSI over the train part itself, with
        ``calibration_window`` rows: how much a column moves between windows of an undrifted
        market. The drift guard's default
        threshold of a column is the larger of ``PSI_DRIFT`` and this value.
    calibration_window : int or None
        The window the calibration was measured with.

    Raises
    ------
    ConfigurationError
        If the edges or fractions are malformed (``from_dict`` raises ``BundleError``).
    """

    features: Mapping[str, np.ndarray]
    expected: Mapping[str, np.ndarray]
    bins: int = DEFAULT_BINS
    rows: int = 0
    prediction: np.ndarray | None = None
    prediction_expected: np.ndarray | None = None
    calibration: Mapping[str, float] | None = None
    calibration_window: int | None = None

    def __post_init__(self) -> None:
        try:
            self._validate()
        except _Malformed as e:
            raise _InvalidReference(e.field, e.problem) from None

    def _validate(self) -> None:
        features = {str(k): _frozen(v) for k, v in self.features.items()}
        expected = {str(k): _frozen(v) for k, v in self.expected.items()}
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "expected", expected)
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 2:
            raise _Malformed("bins", f"must be an integer >= 2; got {self.bins!r}.")
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 0:
            raise _Malformed("rows", f"must be an integer >= 0; got {self.rows!r}.")
        if not features:
            raise _Malformed("features", "must hold at least one feature.")
        if list(features) != list(expected):
            raise _Malformed(
                "expected",
                f"must name the same features as 'features' ({sorted(features)[:5]}); "
                f"got {sorted(expected)[:5]}.",
            )
        if PREDICTION in features:
            raise _Malformed("features", f"may not use the reserved name {PREDICTION!r}.")
        for name, edges in features.items():
            _check_bins(f"features.{name}", edges, expected[name])
        if (self.prediction is None) != (self.prediction_expected is None):
            raise _Malformed("prediction", "edges and expected fractions go together.")
        if self.prediction is not None:
            pred, pexp = _frozen(self.prediction), _frozen(self.prediction_expected)
            object.__setattr__(self, "prediction", pred)
            object.__setattr__(self, "prediction_expected", pexp)
            _check_bins("prediction", pred, pexp)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DriftReference):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @property
    def names(self) -> list[str]:
        """Feature names, in order (``PREDICTION`` not included)."""
        return list(self.features)

    def bins_of(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(edges, expected)`` of feature ``name`` or of ``PREDICTION``.

        Raises
        ------
        KeyError
            If there is no such feature (or no prediction reference).
        """
        if name == PREDICTION:
            if self.prediction is None or self.prediction_expected is None:
                raise KeyError(name)
            return self.prediction, self.prediction_expected
        return self.features[name], self.expected[name]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe form stored under ``metadata.json`` ``drift_reference``."""

        def pair(edges: np.ndarray, expected: np.ndarray) -> dict[str, list[float]]:
            return {"edges": edges.tolist(), "expected": expected.tolist()}

        return {
            "bins": self.bins,
            "rows": self.rows,
            "features": {n: pair(e, self.expected[n]) for n, e in self.features.items()},
            "calibration": (
                None
                if self.calibration is None
                else {
                    "window": self.calibration_window,
                    "quantile": CALIBRATION_QUANTILE,
                    "psi": {k: float(v) for k, v in self.calibration.items()},
                }
            ),
            "prediction": (
                None
                if self.prediction is None or self.prediction_expected is None
                else pair(self.prediction, self.prediction_expected)
            ),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> DriftReference:
        """Parse ``to_dict()``'s form.

        Raises
        ------
        BundleError
            In one line naming the file (``path``) and the field, when anything is malformed.
        """
        if not isinstance(data, Mapping):
            raise BundleError(
                f"{path or 'bundle'}: field {METADATA_KEY!r} must be an object; "
                f"got {type(data).__name__} instead.",
                path=path,
                field=METADATA_KEY,
            )
        r = FieldReader(data, path, f"{METADATA_KEY}.")
        bins = r.positive_int("bins")
        rows = r.get("rows", int)
        raw_features = r.get("features", dict)
        fr = FieldReader(raw_features, path, f"{METADATA_KEY}.features.")
        features, expected = {}, {}
        for name in raw_features:
            features[name], expected[name] = _read_pair(fr.child(name))
        pred = pexp = None
        if r.get("prediction", dict, required=False) is not None:
            pred, pexp = _read_pair(r.child("prediction"))
        calibration = window = None
        raw_calibration = r.get("calibration", dict, required=False)
        if raw_calibration is not None:
            cr = r.child("calibration")
            assert cr is not None
            window = cr.positive_int("window")
            calibration = cr.get("psi", dict)
            if not all(
                isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
                for v in calibration.values()
            ):
                raise cr.fail("psi", "must map column names to finite numbers.")
        try:
            return cls(features, expected, bins, rows, pred, pexp, calibration, window)
        except _InvalidReference as e:
            raise r.fail(e.field, e.problem) from None


def _read_pair(r: FieldReader | None) -> tuple[np.ndarray, np.ndarray]:
    assert r is not None  # child() of a required field
    out = []
    for key in ("edges", "expected"):
        values = r.get(key, list)
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
            for v in values
        ):
            raise r.fail(key, f"must be a list of finite numbers; got {values!r:.80}.")
        out.append(np.array(values, dtype=np.float64))
    return out[0], out[1]


def fit_reference(
    series: np.ndarray,
    names: Sequence[str],
    *,
    bins: int = DEFAULT_BINS,
    predictions: np.ndarray | None = None,
) -> DriftReference:
    """The reference of a training sample: edges and fractions per feature.

    Parameters
    ----------
    series : numpy.ndarray
        ``(n_rows, n_features)`` per-bar feature values of the train part
        (``FeaturePipeline.series``). Only rows whose every value is finite are used (warm-up
        rows are dropped), so all features are measured on the same rows.
    names : sequence of str
        Feature names, one per column.
    bins : int
        Quantile bins per feature.
    predictions : numpy.ndarray or None
        Raw model outputs on the training windows, or None.

    Raises
    ------
    ConfigurationError
        If no row is entirely finite, or the shapes disagree.
    """
    m = np.asarray(series, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != len(names):
        raise ConfigurationError(
            f"The 'series' parameter of fit_reference must be (n_rows, {len(names)}). "
            f"Got shape {m.shape} instead."
        )
    m = m[np.isfinite(m).all(axis=1)]
    if len(m) == 0:
        raise ConfigurationError(
            "No training row has every feature finite; train on a longer period."
        )
    features, expected = {}, {}
    for j, name in enumerate(names):
        edges = reference_edges(m[:, j], bins)
        features[name] = edges
        expected[name] = bin_fractions(m[:, j], edges)
    pred = pexp = None
    if predictions is not None:
        pred = reference_edges(np.asarray(predictions, dtype=np.float64), bins)
        pexp = bin_fractions(predictions, pred)
    return DriftReference(features, expected, bins, len(m), pred, pexp)


def drift_reference(metadata: Mapping[str, Any], path: Path | None = None) -> DriftReference | None:
    """The ``drift_reference`` of a bundle's raw ``metadata.json`` dict, or None without one.

    Bundles written before the key existed (the shipped models, the reference project's
    bundles) have none.

    Raises
    ------
    BundleError
        If the key is present but malformed.
    """
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        return None
    return DriftReference.from_dict(raw, path)
