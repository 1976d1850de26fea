"""Rolling population stability index: ``rolling_psi`` (a whole series at once) and
``DriftMonitor`` (bar by bar), equal to the last bit.

The reference, bins and thresholds are in ``atb_strategies.features.drift``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from atb_strategies.exceptions import ConfigurationError, FeatureSchemaError
from atb_strategies.features.drift import DEFAULT_WINDOW, EPS, PREDICTION, DriftReference


class _Plan:
    """What ``rolling_psi`` and ``DriftMonitor`` share: edges and a table of PSI terms.

    ``table[j, b, c]`` is bin ``b``'s PSI term of column ``j`` when ``c`` of the ``window`` rows
    fall in it; summing the terms bin by bin, in the same order, gives both paths equal floats.
    """

    def __init__(self, reference: DriftReference, names: Sequence[str], window: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
            raise ConfigurationError(
                f"The 'window' parameter of the drift monitor must be an integer >= 1. "
                f"Got {window!r} instead."
            )
        names = list(names)
        if len(set(names)) != len(names):
            raise ConfigurationError(
                f"The 'names' parameter of the drift monitor must not repeat names. "
                f"Got {names!r} instead."
            )
        known = set(reference.features) | (
            {PREDICTION} if reference.prediction is not None else set()
        )
        missing = sorted(set(names) - known)
        if missing:
            raise FeatureSchemaError(
                "Columns given to the drift monitor have no training reference:\n"
                + "".join(f"- {n}\n" for n in missing[:5])
                + ("- ...\n" if len(missing) > 5 else "")
                + f"The reference knows {sorted(known)[:5]}"
                + (" ..." if len(known) > 5 else "")
                + "; pass names from the bundle's feature schema."
            )
        self.names = names
        self.window = int(window)
        pairs = [reference.bins_of(n) for n in names]
        self.edges = [p[0] for p in pairs]
        self.n_bins = max((len(e) + 1 for e in self.edges), default=1)
        #: Column of a missing (NaN) value in the counts.
        self.missing = self.n_bins
        f = len(names)
        self.padded = np.full((f, self.n_bins - 1), np.inf)
        for j, e in enumerate(self.edges):
            self.padded[j, : len(e)] = e
        a = np.maximum(np.arange(self.window + 1) / self.window, EPS)
        self.table = np.zeros((f, self.n_bins, self.window + 1))
        for j, (_, expected) in enumerate(pairs):
            e = np.maximum(expected, EPS)[:, None]
            self.table[j, : len(e)] = (a - e) * np.log(a / e)

    def total(self, j: int | np.ndarray, counts: np.ndarray) -> np.ndarray:
        """PSI from counts ``(n_bins + 1, ...)`` of column ``j`` (an int: every bar of one
        column) or columns ``j`` (an index array: one bar of each); the last bin counts NaN."""
        out = np.zeros(counts.shape[1:])
        for b in range(self.n_bins):
            if isinstance(j, int):
                out += self.table[j, b].take(counts[b])
            else:
                out += self.table[j, b, counts[b]]
        out[counts[self.missing] > 0] = np.nan
        return out


def rolling_psi(
    matrix: np.ndarray,
    reference: DriftReference,
    names: Sequence[str],
    window: int = DEFAULT_WINDOW,
) -> np.ndarray:
    """PSI of the trailing ``window`` rows ending at each bar (inclusive), per column.

    Causal: the value at bar ``t`` reads rows ``t - window + 1 .. t`` only. A column's PSI is
    NaN before ``window`` rows exist and whenever its trailing window holds a NaN (feature
    warm-up, a missing input): a NaN is never binned or skipped, it blanks that column for
    ``window`` bars; other columns are unaffected. ``+inf``/``-inf`` are extreme values and fall
    in the outer bins.

    Parameters
    ----------
    matrix : numpy.ndarray
        ``(n_bars, n_columns)`` per-bar values (``FeaturePipeline.series``, and for
        ``PREDICTION`` the raw model output).
    reference : DriftReference
        The training reference.
    names : sequence of str
        Name of each column: a feature of ``reference`` or ``PREDICTION``.
    window : int
        Trailing rows compared (default ``DEFAULT_WINDOW``).

    Returns
    -------
    numpy.ndarray
        ``(n_bars, n_columns)`` float64.

    Raises
    ------
    FeatureSchemaError
        If a name has no reference.
    ConfigurationError
        If ``window < 1`` or the matrix shape does not match ``names``.
    """
    plan = _Plan(reference, names, window)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != len(plan.names):
        raise ConfigurationError(
            f"The 'matrix' parameter of rolling_psi must be (n_bars, {len(plan.names)}). "
            f"Got shape {m.shape} instead."
        )
    n, f = m.shape
    out = np.full((f, n), np.nan)
    w = plan.window
    if n < w:
        return out.T
    stride = n + 1
    hit_at = np.arange(1, n + 1)
    for j, col in enumerate(np.ascontiguousarray(m.T)):
        idx = np.zeros(n, dtype=np.intp)
        for edge in plan.edges[j]:
            idx += col > edge  # edges below the value: searchsorted(side="left"), faster
        idx[np.isnan(col)] = plan.missing
        # hits[b, t + 1] = 1 when bar t falls in bin b; window counts are cumulative differences
        hits = np.zeros((plan.n_bins + 1) * stride, dtype=np.int32)
        hits[idx * stride + hit_at] = 1
        cum = np.cumsum(hits.reshape(plan.n_bins + 1, stride), axis=1, dtype=np.int32)
        out[j, w - 1 :] = plan.total(j, cum[:, w:] - cum[:, :-w])
    return np.ascontiguousarray(out.T)


class DriftMonitor:
    """Streaming ``rolling_psi``: one row per closed bar, PSI per column.

    Keeps the bin index of the last ``window`` rows and running counts per bin, so ``update``
    costs O(bins x columns) whatever the window. Its values equal ``rolling_psi``'s exactly.

    Parameters
    ----------
    reference : DriftReference
        The training reference (``drift_reference(metadata)``).
    names : sequence of str
        Name of each value of a row: a feature of ``reference`` or ``PREDICTION``.
    window : int
        Trailing rows compared (default ``DEFAULT_WINDOW``).
    """

    def __init__(
        self,
        reference: DriftReference,
        names: Sequence[str],
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._plan = _Plan(reference, names, window)
        self.names: tuple[str, ...] = tuple(self._plan.names)
        self.window = self._plan.window
        f = len(self.names)
        self._cols = np.arange(f)
        self._counts = np.zeros((f, self._plan.n_bins + 1), dtype=np.int64)
        self._recent: deque[np.ndarray] = deque()
        self._n = 0

    @property
    def bars_seen(self) -> int:
        return self._n

    @property
    def ready(self) -> bool:
        """True once ``window`` rows have been seen."""
        return self._n >= self.window

    def update(self, row: Sequence[float]) -> np.ndarray:
        """Consume one bar's values (ordered like ``names``); return PSI per column.

        NaN until ``window`` rows have been seen, and for a column whose trailing window holds
        a NaN (as in ``rolling_psi``).
        """
        x = np.asarray(row, dtype=np.float64)
        if x.shape != (len(self.names),):
            raise ConfigurationError(
                f"The 'row' parameter of DriftMonitor.update must hold {len(self.names)} "
                f"values. Got shape {x.shape} instead."
            )
        idx = (x[:, None] > self._plan.padded).sum(axis=1)
        idx[np.isnan(x)] = self._plan.missing
        self._counts[self._cols, idx] += 1
        self._recent.append(idx)
        if len(self._recent) > self.window:
            self._counts[self._cols, self._recent.popleft()] -= 1
        self._n += 1
        if len(self._recent) < self.window:
            return np.full(len(self.names), np.nan)
        return self._plan.total(self._cols, self._counts.T)
