"""A process-local cache of ``MlPrediction``'s batched predictions.

A model's predictions depend on the model and the candles, never on a strategy's params, so a
sweep over strategy params need compute them only once. ``MlPrediction._compute_batch`` looks
its key up here first and stores what it computed. A sweep computes each prediction set once
in the parent, takes it out with ``export`` and puts it into every worker's cache with ``load``
before the worker's cells run (see ``atb_strategies.sweep``).

The key (``prediction_key``) holds everything the predictions depend on:

* every serving model: its ``SYMBOL/type@version`` key and a fingerprint of its content (the
  sha256 of ``model.onnx``, the metadata, the feature schema and the runner's settings), so two
  registries that both hold a ``2026-01-01_1h_v1`` never share an entry;
* the point-in-time schedule (``version="asof"``): when each version became available;
* the resolved ``gap_policy``;
* the sha256 of the bar times and of every column array the model reads.

An entry is the dict of line arrays ``_compute_batch`` returns (read-only), the number of
skipped bars and the bars whose model output was rejected (``inference.decode``), so a sweep's
cells count them exactly as a plain backtest does.

The cache is off unless a block turns it on with ``prediction_cache.active()`` (a sweep does,
around its cells): a plain backtest computes its predictions itself, holds no arrays after it
ends, and every test that counts inference calls sees them. ``hits`` and ``misses`` count the
lookups made while it is on, so a test can tell whether a backtest ran ONNX inference;
``disabled()`` turns it off inside an active block (a reference run) and ``recording()``
collects the keys a block of code used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Entries kept per process; the oldest used is dropped first.
DEFAULT_MAX_ENTRIES = 64

#: The runner settings that change a model's outputs (part of its fingerprint).
_RUNNER_SETTINGS = (
    "input_spec",
    "output_spec",
    "intra_op_num_threads",
    "providers",
    "direction_threshold",
    "batch_parity",
)

PredictionKey = tuple[Any, ...]


@dataclass(frozen=True)
class CachedPredictions:
    """One prediction set: ``lines`` (name -> read-only float64 array, one value per bar),
    ``skipped_bars`` (bars without a prediction because their rows span a gap) and ``rejected``
    (``(close time in ns, reason)`` of each bar whose model output was rejected, see
    ``MlPrediction.rejected_bars``)."""

    lines: dict[str, np.ndarray]
    skipped_bars: int
    rejected: tuple[tuple[int, str], ...] = ()


_file_hashes: dict[tuple[str, int, int], str] = {}
_file_lock = threading.Lock()


def _file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, modification time)."""
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    with _file_lock:
        found = _file_hashes.get(memo)
    if found is None:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        found = digest.hexdigest()
        with _file_lock:
            _file_hashes[memo] = found
    return found


def _without_path(spec: Any) -> Any:
    """A metadata or schema dataclass with its file path cleared (where a file was read from
    does not change what it says)."""
    if dataclasses.is_dataclass(spec) and any(f.name == "path" for f in dataclasses.fields(spec)):
        return dataclasses.replace(spec, path=None)
    return spec


def model_fingerprint(bundle: Any) -> str:
    """sha256 of what a ``ModelBundle``'s predictions depend on besides the candles.

    Parameters
    ----------
    bundle : ModelBundle
        A selected bundle (``.spec.model_path``, ``.metadata``, ``.feature_schema``,
        ``.runner``).

    Returns
    -------
    str
        Hex digest; equal for the same model files and runner settings wherever the registry
        lives (the path is not part of it).
    """
    digest = hashlib.sha256(_file_sha256(Path(bundle.spec.model_path)).encode())
    digest.update(repr(_without_path(bundle.metadata)).encode())
    digest.update(repr(_without_path(bundle.feature_schema)).encode())
    runner = bundle.runner
    digest.update(repr([(n, getattr(runner, n, None)) for n in _RUNNER_SETTINGS]).encode())
    return digest.hexdigest()


def data_sha256(stamps: np.ndarray, columns: Mapping[str, np.ndarray]) -> str:
    """sha256 of the bar times and of each named column array, in the mapping's order."""
    digest = hashlib.sha256(np.ascontiguousarray(stamps, dtype=np.float64).tobytes())
    for name, values in columns.items():
        digest.update(name.encode() + b"\0")
        digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def prediction_key(
    bundles: Sequence[Any],
    available_from: Sequence[Any] | None,
    gap_policy: str,
    stamps: np.ndarray,
    columns: Mapping[str, np.ndarray],
) -> PredictionKey:
    """The cache key of one ``MlPrediction`` batch (see the module docstring).

    Parameters
    ----------
    bundles : sequence of ModelBundle
        The serving versions, in ``MlPrediction.bundles`` order.
    available_from : sequence of Timestamp or None
        ``version="asof"``: when each version became available; None for a fixed version.
    gap_policy : str
        The resolved gap policy.
    stamps : numpy.ndarray
        The fed bars' backtrader times.
    columns : mapping of str to numpy.ndarray
        The column arrays the model reads, aligned with ``stamps``.

    Returns
    -------
    tuple
        Hashable and picklable.
    """
    models = tuple((b.key, model_fingerprint(b)) for b in bundles)
    schedule = None if available_from is None else tuple(str(t) for t in available_from)
    return (models, schedule, gap_policy, data_sha256(stamps, columns))


def _frozen(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.float64, copy=True)
    out.flags.writeable = False
    return out


class PredictionCache:
    """A bounded, thread-safe map from ``prediction_key`` to ``CachedPredictions``.

    Parameters
    ----------
    max_entries : int
        Entries kept; the least recently used is dropped first.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        #: Lookups that found an entry, and lookups that did not (while enabled).
        self.hits = 0
        self.misses = 0
        self._enabled = False
        self._entries: OrderedDict[PredictionKey, CachedPredictions] = OrderedDict()
        self._recordings: list[set[PredictionKey]] = []
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def enabled(self) -> bool:
        """True inside ``active()`` (and not in a ``disabled()`` block within it); when False,
        lookups miss and nothing is stored or counted."""
        return self._enabled

    def get(self, key: PredictionKey) -> CachedPredictions | None:
        """The entry for ``key`` (counted as a hit), or None (counted as a miss)."""
        with self._lock:
            if not self._enabled:
                return None
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            for keys in self._recordings:
                keys.add(key)
            return found

    def put(
        self,
        key: PredictionKey,
        lines: Mapping[str, np.ndarray],
        skipped_bars: int,
        rejected: Sequence[tuple[int, str]] = (),
    ) -> None:
        """Store read-only copies of ``lines`` under ``key`` (nothing while disabled)."""
        entry = CachedPredictions(
            {n: _frozen(v) for n, v in lines.items()},
            int(skipped_bars),
            tuple((int(ns), str(why)) for ns, why in rejected),
        )
        with self._lock:
            if not self._enabled:
                return
            self._store(key, entry)
            for keys in self._recordings:
                keys.add(key)

    def _store(self, key: PredictionKey, entry: CachedPredictions) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def export(self, keys: Sequence[PredictionKey] | set[PredictionKey]) -> dict:
        """The entries of ``keys`` still held, as a picklable dict for ``load``."""
        with self._lock:
            return {k: self._entries[k] for k in keys if k in self._entries}

    def load(self, entries: Mapping[PredictionKey, CachedPredictions]) -> int:
        """Add entries from ``export`` not held yet (no hits or misses counted). The cache grows
        to hold them all (a sweep hands in every prediction set its cells need).

        Returns
        -------
        int
            How many were added.
        """
        added = 0
        with self._lock:
            self.max_entries = max(self.max_entries, len(entries))
            for key, entry in entries.items():
                if key not in self._entries:
                    self._store(key, entry)
                    added += 1
        return added

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def counters(self) -> dict[str, int]:
        """``{"hits": ..., "misses": ..., "entries": ...}``."""
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "entries": len(self._entries)}

    @contextmanager
    def active(self) -> Iterator[PredictionCache]:
        """Use the cache inside the block (lookups, stores and counters)."""
        with self._switched(True):
            yield self

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Compute every prediction inside the block as if there were no cache."""
        with self._switched(False):
            yield

    @contextmanager
    def _switched(self, on: bool) -> Iterator[None]:
        with self._lock:
            before, self._enabled = self._enabled, on
        try:
            yield
        finally:
            with self._lock:
                self._enabled = before

    @contextmanager
    def recording(self) -> Iterator[set[PredictionKey]]:
        """Yield a set that collects every key stored or found inside the block."""
        keys: set[PredictionKey] = set()
        with self._lock:
            self._recordings.append(keys)
        try:
            yield keys
        finally:
            with self._lock:
                self._recordings.remove(keys)


#: This process's cache, used by every ``MlPrediction``.
prediction_cache = PredictionCache()
