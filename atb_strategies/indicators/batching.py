"""One ONNX call per bar for every streaming ``MlPrediction`` of a strategy that serves one model.

A portfolio strategy gives each data feed its own ``MlPrediction`` (its own rolling window).
When several of them serve the same bundle (the same model file: one ``ModelBundle`` of the
shared registry, hence one ``OnnxRunner``), running the model once per feed and bar costs a
session call each. ``FeedBatcher`` runs them as one batch instead:

* every ``MlPrediction`` of a strategy registers with the strategy's batcher when it is
  created (``batch_feeds=True``, the default);
* backtrader steps the indicators one after another within a bar, in the order they were
  created, after every feed that has a bar at that time has moved to it; a feed without a bar
  at that time (a later start, an earlier end, a missing candle) has not moved;
* the first indicator that needs a prediction at a bar asks the batcher, which takes the new
  bar of every registered streaming feed that moved (``MlPrediction._advance``, done once per
  bar whoever asks), collects the window of each one that needs a prediction now, and runs one
  ``predict_batch`` per model; the others find their row ready when backtrader steps them.

``gather`` writes each window straight into the batch's float32 array (cast once, as
``window().astype`` does) and reduces the closes' min and max over the batch in one call; each
indicator's bar time and serving version are computed once per bar (``MlPrediction._stream_bar``)
and read by both the batcher and the indicator.

The batcher never writes an indicator's lines (an indicator not yet stepped in this bar has not
moved its lines forward): it keeps each row with the feed length it belongs to, and the
indicator writes it in its own ``next()``.

Parity: the rows equal one ``predict`` call per feed bit for bit. With ``batch_parity`` (the
default) ``predict`` runs a single window as a batch of two so it takes the batched kernels,
and a batch of two or more windows takes them anyway; a lone window in a batch runs the same
way. Decoding is element-wise. ``tests/integration/test_batched_inference.py`` proves it on
feeds of different lengths and start times, and against the preloaded (``once()``) path.

The preloaded path (a normal backtest) is unaffected: each indicator already runs every bar of
its feed in one batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import backtrader as bt
import numpy as np

from atb_strategies.features.pipeline import FeatureStream, PriceContext

if TYPE_CHECKING:
    from atb_strategies.indicators.prediction import MlPrediction


class PredictionRow(NamedTuple):
    """One bar's prediction, as the indicator writes it (NaN where unknown).

    ``no_prediction`` is None for a prediction, else why the model's output was rejected.
    """

    price: float
    predicted_return: float
    confidence: float
    direction: float
    no_prediction: str | None


def row_of(pred: Any) -> PredictionRow:
    """The ``PredictionRow`` of a single ``inference.runner.Prediction``."""
    nan = float("nan")
    return PredictionRow(
        price=pred.price if pred.price is not None else nan,
        predicted_return=pred.predicted_return if pred.predicted_return is not None else nan,
        confidence=pred.confidence,
        direction=pred.direction,
        no_prediction=pred.no_prediction,
    )


def rows_of(batch: Any) -> list[PredictionRow]:
    """The ``PredictionRow`` of each window of an ``inference.runner.PredictionBatch``."""
    reasons = batch.no_prediction if batch.no_prediction is not None else [None] * len(batch)
    # tolist(): each array to Python numbers in one call (the values float() gives)
    return [
        PredictionRow(price, ret, conf, int(direction), why)
        for price, ret, conf, direction, why in zip(
            batch.price.tolist(),
            batch.predicted_return.tolist(),
            batch.confidence.tolist(),
            batch.direction.tolist(),
            list(reasons),
            strict=True,
        )
    ]


def owner_strategy(indicator: bt.Indicator) -> bt.Strategy | None:
    """The strategy an indicator was created in (through indicators made by indicators)."""
    owner = getattr(indicator, "_owner", None)
    while owner is not None and not isinstance(owner, bt.Strategy):
        owner = getattr(owner, "_owner", None)
    return owner


def batcher_for(indicator: MlPrediction) -> FeedBatcher | None:
    """Register ``indicator`` with its strategy's batcher (made on first use); None when it was
    not created inside a strategy."""
    strategy = owner_strategy(indicator)
    if strategy is None:
        return None
    batcher = getattr(strategy, "_atb_feed_batcher", None)
    if batcher is None:
        batcher = FeedBatcher()
        strategy._atb_feed_batcher = batcher
    batcher.register(indicator)
    return batcher


class FeedBatcher:
    """The streaming ``MlPrediction`` indicators of one strategy, batched per model and bar."""

    def __init__(self) -> None:
        self.members: list[MlPrediction] = []
        #: Model calls made (one per model and bar at most), and windows run in them.
        self.calls = 0
        self.windows = 0
        self._rows: dict[int, tuple[int, PredictionRow]] = {}  # id(indicator) -> (len, row)

    def register(self, indicator: MlPrediction) -> None:
        self.members.append(indicator)

    def take(self, indicator: MlPrediction, n: int) -> PredictionRow:
        """The prediction of ``indicator`` at its feed's current bar (``n = len(data)``); runs
        the bar's batch (for every registered feed that needs one now) when it was not run
        yet."""
        found = self._rows.pop(id(indicator), None)
        if found is None or found[0] != n:
            self._run_bar(indicator)
            found = self._rows.pop(id(indicator))
        return found[1]

    def _run_bar(self, caller: MlPrediction) -> None:
        groups: dict[int, list[tuple[MlPrediction, int, int]]] = {}
        for member in self.members:
            n = len(member.data)
            if not n or not member._stream_mode() or n < member._minperiod:
                continue  # no bar yet, preloaded (batch path), or still warming up
            member._advance(n)  # this bar into its features, once
            if member is not caller and member._served == n:
                continue  # already stepped and written at this bar
            held = self._rows.get(id(member))
            if held is not None and held[0] == n:
                continue
            v = member._runnable_version(n)
            if v is not None:
                groups.setdefault(id(member.bundles[v].runner), []).append((member, v, n))
        for group in groups.values():
            self._run_group(group)

    def _run_group(self, group: list[tuple[MlPrediction, int, int]]) -> None:
        """One ``predict_batch`` for ``group`` (member, version, feed length)."""
        member, v, _ = group[0]
        windows, context = gather([m._streams[mv] for m, mv, _ in group])
        batch = member.bundles[v].runner.predict_batch(windows, context)
        self.calls += 1
        self.windows += len(group)
        rows = self._rows
        for (m, _, n), row in zip(group, rows_of(batch), strict=True):
            rows[id(m)] = (n, row)


def gather(streams: list[FeatureStream]) -> tuple[np.ndarray, PriceContext]:
    """The newest window of each stream (one pipeline) as a float32 batch, and their price
    context as arrays: bit for bit ``np.stack([s.window() ...]).astype(np.float32)`` and each
    ``s.context()``, without the float64 copies (each window written straight into the batch,
    cast once) and with the closes' min and max reduced over the batch at once."""
    first = streams[0]
    seq, width = first.window_shape
    windows = np.empty((len(streams), seq, width), dtype=np.float32)
    closes = np.empty((len(streams), seq), dtype=np.float64)
    for i, stream in enumerate(streams):
        stream.window_into(windows[i])
        closes[i] = stream.closes()
    context = PriceContext(closes[:, -1].copy(), closes.min(axis=1), closes.max(axis=1))
    return windows, context
