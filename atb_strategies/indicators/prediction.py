"""``MlPrediction``: a registry model's prediction as an ordinary backtrader indicator.

Lines (at bar ``t``, for bar ``t + horizon``; NaN before the model's warm-up is complete):

* ``predicted_price``: the predicted close in price units (NaN for class-probability models);
* ``predicted_return``: ``predicted_price / close[t] - 1``;
* ``confidence``: in [0, 1] (see ``atb_strategies.inference.decode``);
* ``direction``: +1, -1 or 0.

Two paths, proven equal by the tests:

* **batch** when the data is preloaded (a normal backtest): features for every bar and one
  batched ONNX run, in ``once()`` (``runonce=True``) or on the first bar (``runonce=False``);
  ``next()`` then reads arrays;
* **streaming** when it is not (live feeds, ``preload=False``, ``exactbars``): each bar updates a
  ``FeatureStream`` and runs the model once; the streaming indicators of one strategy that serve
  the same model share one ONNX call per bar (``batch_feeds``; see
  ``atb_strategies.indicators.batching``), with the same numbers.

Either way the value at bar ``t`` uses bars ``<= t`` only.

A bar whose model output is non-finite or implausible (the one rule of
``atb_strategies.inference.decode``) is no prediction on both paths: NaN on ``predicted_price``,
``predicted_return``, ``confidence`` and ``direction`` (so a strategy holds), counted per reason
in ``rejected_outputs`` and listed in ``rejected_bars``, like a gap is in ``skipped_bars``.
``version_index`` and the drift lines still say which version served and how its inputs look.

A streaming indicator that follows ``latest`` on a live feed (no version pinned) also reloads
the model between bars when ``latest`` moves, after validating the new version and warming its
features from the rows already seen (``follow_latest``; see ``atb_strategies.indicators.follow``).

The model is selected when the indicator is created (inside ``cerebro.run()``), so a missing
model, an unservable bundle or a feed lacking a column the model needs fails before the first
bar, not during the backtest.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from collections.abc import Sequence
from datetime import datetime

import backtrader as bt
import numpy as np
import pandas as pd

from atb_strategies.exceptions import (
    CandleDataError,
    ConfigurationError,
    FeatureSchemaError,
    RegistryError,
)
from atb_strategies.features.calendar import (
    bundle_calendar,
    silent_warmup_message,
    suggest_calendar,
)
from atb_strategies.features.candles import (
    apply_gap_policy,
    check_gap_policy,
    find_gaps,
    rows_span_gap,
    timeframe_to_timedelta,
)
from atb_strategies.features.pipeline import PriceContext
from atb_strategies.indicators.batching import PredictionRow, batcher_for, row_of
from atb_strategies.indicators.drift_score import DriftScore, drift_score_for
from atb_strategies.indicators.follow import (
    HISTORY_ROWS,
    LatestFollower,
    ModelEvent,
    output_problem,
)
from atb_strategies.indicators.selection import feed_identity, select_for_feed
from atb_strategies.inference.bundle import ModelBundle
from atb_strategies.inference.certificate import verify_certificate
from atb_strategies.registry.asof import AsofSchedule, asof_schedule
from atb_strategies.registry.shared import shared_registry

log = logging.getLogger(__name__)

#: ``version=ASOF``: every bar uses the newest version trained before it (``registry.asof``).
ASOF = "asof"

_EPOCH_DAYS = 719163.0  # backtrader's date number of 1970-01-01


def _to_ns(days: np.ndarray) -> np.ndarray:
    """Backtrader date numbers to int64 nanoseconds since the epoch (to the millisecond)."""
    ms = np.round((np.asarray(days, dtype=np.float64) - _EPOCH_DAYS) * 86_400_000.0)
    return ms.astype(np.int64) * 1_000_000


def _ns_of(day: float) -> int:
    """One backtrader date number as ``_to_ns`` gives it, without numpy (per bar and feed):
    the same double arithmetic, and ``round`` rounds half to even like ``np.round``."""
    return round((day - _EPOCH_DAYS) * 86_400_000.0) * 1_000_000


class MlPrediction(bt.Indicator):
    """Predictions of a registry model for one data feed.

    Parameters
    ----------
    symbol : str or None
        Registry symbol; default: the feed's name (``cerebro.adddata(feed, name="BTCUSDT")``).
    model_type : str
        Registry model type (default ``"basic"``).
    timeframe : str or None
        Model timeframe; default: the feed's (``1h`` for ``Minutes`` x 60).

    A second data (``MlPrediction(price_feed, sentiment_feed)``) supplies columns the price feed
    lacks (``sentiment``), read as of each bar: the latest value stamped at or before the bar.
    Stamp the sentiment feed with publication times (``make_sentiment_feed``); bars of the
    price feed carry their close time, so a value is used once it was published.
    version : str or None
        Version name; ``None`` or ``"latest"`` follows the ``latest`` pointer; ``"asof"``
        serves every bar with the newest version whose training ended before it
        (``registry.asof``).
    asof_run : str or None
        With ``version="asof"``: only the versions of this walk-forward (its id).
    registry : str or None
        Registry path; default: the configured one (``ATB_MODEL_REGISTRY_PATH``, ...).
    gap_policy : str or None
        What a missing bar in the feed does (see ``atb_strategies.features.candles``):
        ``"skip"``: no prediction (NaN) at a bar whose warm-up + window rows span the gap,
        counted in ``skipped_bars``; ``"raise"``: raise naming the bar; ``"warn"``: log it and
        treat the bars either side as consecutive; ``"allow"``: the same, silently. Default
        (None): ``"skip"`` for historical feeds, ``"warn"`` for live feeds, where an exchange
        may omit a candle without trades and pausing the model for a whole window would be
        worse.
    follow_latest : bool or None
        Hot reload: with no version pinned (``None``/``"latest"``), check the ``latest``
        pointer at each new bar and switch to the version it names once that version validates
        and its features are warmed (see ``atb_strategies.indicators.follow``). Default (None):
        on for live feeds, off otherwise. Only the streaming path reloads (a preloaded backtest
        selects its model once; replay history with ``version="asof"``). A pinned version never
        moves.
    drift_window : int or None
        Compute the drift score over this many bars (``drift`` line: the largest PSI of a
        feature over its threshold, > 1 when drifted; ``drift_column``: that feature's index
        in ``drift_names(v)``); None (default) computes none. Bundles without a drift reference
        give NaN. See ``atb_strategies.indicators.drift_score``.
    drift_threshold : float or None
        One PSI threshold for every feature; default: per feature, the larger of 0.25 and its
        calibration from training.
    sequence_length : int or None
        With hot reload: refuse a promoted version whose window has another length (the
        strategy's own guard, ``MlStrategy(sequence_length=...)``, checked at start).
    batch_feeds : bool
        Streaming: run this feed's window in one ONNX call per bar with the other
        ``MlPrediction`` indicators of the same strategy that serve the same model (default
        True; identical numbers, see ``atb_strategies.indicators.batching``). False runs one
        call per feed.
    """

    lines = (
        "predicted_price",
        "predicted_return",
        "confidence",
        "direction",
        "version_index",
        "drift",
        "drift_column",
    )
    params = (
        ("symbol", None),
        ("model_type", "basic"),
        ("timeframe", None),
        ("version", None),
        ("registry", None),
        ("gap_policy", None),
        ("asof_run", None),
        ("follow_latest", None),
        ("drift_window", None),
        ("drift_threshold", None),
        ("sequence_length", None),
        ("batch_feeds", True),
    )
    # cerebro.plot(): only the predicted return (about 0.001) on this subplot, with a zero line
    # and the model key in the legend (_plotlabel). The confidence (0..1) would flatten it on a
    # shared axis: MlStrategy plots it on its own axis (indicators.confidence.MlConfidence).
    plotinfo = {
        "subplot": True,
        "plotname": "ML prediction",
        "plotlinevalues": False,
        "plothlines": [0.0],
        "plotymargin": 0.05,
    }
    plotlines = {
        "predicted_price": {"_plotskip": True},
        "predicted_return": {
            "color": "purple",
            "_name": "predicted return",
            "_plotvaluetag": False,
        },
        "confidence": {"_plotskip": True},
        "direction": {"_plotskip": True},
        "version_index": {"_plotskip": True},
        "drift": {"_plotskip": True},
        "drift_column": {"_plotskip": True},
    }

    def _plotlabel(self) -> list[str]:
        """The plot legend's detail: the model key, not every parameter value."""
        return [str(getattr(self, "model_key", None) or self.p.symbol or self.p.model_type)]

    def __init__(self) -> None:
        if self.p.gap_policy is None:
            self.p.gap_policy = "warn" if self.data.islive() else "skip"
        check_gap_policy(self.p.gap_policy, "MlPrediction")
        self._extra = self.datas[1] if len(self.datas) > 1 else None
        #: version="asof": the point-in-time schedule; None for a fixed version.
        self.schedule: AsofSchedule | None = None
        self.bundles = self._select_bundles()
        self.bundle = self.bundles[-1]
        self._key = (
            self.bundle.key
            if self.schedule is None
            else (f"{self.bundle.symbol}/{self.bundle.model_type}@asof")
        )
        pipe = self.bundle.pipeline
        #: The market's trading calendar, from the bundle (``metadata.json`` ``calendar``):
        #: bars missing while it is closed are no gap.
        self.calendar = bundle_calendar(self.bundle.metadata)
        #: The warning given when no prediction was made in the first warm-up + window bars
        #: after the warm-up (None when predictions came).
        self.silence_warning: str | None = None
        self._silent_bars = 0
        self.addminperiod(max(b.pipeline.min_bars for b in self.bundles))
        #: Bars at which no prediction was made because their rows span a gap ("skip").
        self.skipped_bars = 0
        #: Bars whose model output was rejected (``inference.decode``): (close time, reason).
        self.rejected_bars: list[tuple[pd.Timestamp, str]] = []
        self._rejected_at: dict[int, str] = {}  # the same, by close time in ns
        #: Times of the bars that follow a gap in the feed.
        self.gap_bars: list = []
        # Each input column comes from the price feed, or else (sentiment) from the second
        # feed, read as of the bar: its latest value stamped at or before the bar's time.
        self._lines_in = []
        self._asof: list[bool] = []
        for c in pipe.columns:
            own = hasattr(self.data.lines, c)
            self._lines_in.append(getattr((self.data if own else self._extra).lines, c))
            self._asof.append(not own)
        self._streams: list = []
        self._prev_ns: int | None = None
        self._bar_ns: int | None = None  # streaming: the bar size in ns
        self._last_gap = -(10**9)  # streaming: index of the newest bar that follows a gap
        self._batch: dict[str, np.ndarray] | None = None
        self._mode: str | None = None
        self._bars_done = 0
        #: Hot reload events (switches and refused versions), oldest first.
        self.model_events: list[ModelEvent] = []
        self._follower = self._make_follower()
        self._drift_plans = [self._drift_plan(b) for b in self.bundles]
        self._monitors: list = []
        self._drift_psi: list = []
        self._history: collections.deque = collections.deque(maxlen=HISTORY_ROWS)
        self._served = 0  # streaming: len(data) at the last bar whose lines were written
        self._now_ns = 0  # streaming: the current bar's close time (ns), set per bar
        self._serving = 0  # streaming: the index into bundles serving the current bar
        self._batcher = batcher_for(self) if self.p.batch_feeds else None

    # ------------------------------------------------------------------ helpers

    def _select_bundles(self) -> list[ModelBundle]:
        """The bundle of a fixed version, or every version of the asof schedule in order."""
        select = functools.partial(
            select_for_feed,
            self.data,
            symbol=self.p.symbol,
            model_type=self.p.model_type,
            timeframe=self.p.timeframe,
            registry=self.p.registry,
            owner="MlPrediction",
            extra=self._extra,
        )
        if self.p.version != ASOF:
            return [select(version=self.p.version)]
        sym, _, tf = feed_identity(self.data, self.p.symbol, self.p.timeframe, "MlPrediction")
        layout = shared_registry(self.p.registry).layout
        self.schedule = asof_schedule(layout, sym, self.p.model_type, tf, self.p.asof_run)
        bundles = [select(version=v) for v in self.schedule.versions]
        columns = {tuple(b.pipeline.columns) for b in bundles}
        if len(columns) > 1:
            raise FeatureSchemaError(
                f"MlPrediction(version='asof'): the versions of {sym}/{self.p.model_type} read "
                f"different candle columns {sorted(columns)}; asof replays versions of one "
                "recipe."
            )
        return bundles

    def _drift_plan(self, bundle: ModelBundle) -> DriftScore | None:
        window = self.p.drift_window
        if window is None:
            return None
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ConfigurationError(
                f"The 'drift_window' parameter of MlPrediction must be an integer >= 2 (bars). "
                f"Got {window!r} instead."
            )
        threshold = self.p.drift_threshold
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not threshold > 0
        ):
            raise ConfigurationError(
                f"The 'drift_threshold' parameter of MlPrediction must be a PSI > 0 such as "
                f"0.25. Got {threshold!r} instead."
            )
        return drift_score_for(bundle, window, threshold)

    def drift_unavailable(self) -> str:
        """Why the current bar has no drift score."""
        if self.p.drift_window is None:
            return "drift is not computed (no drift_window)"
        if all(plan is None for plan in self._drift_plans):
            return f"{self.model_key} has no drift reference (trained before drift guards)"
        return f"fewer than drift_window={self.p.drift_window} bars of features so far"

    def drift_reason(self) -> str | None:
        """Why the current bar's inputs count as drifted (``drift > 1``), else None."""
        score, column = float(self.lines.drift[0]), float(self.lines.drift_column[0])
        index = self.lines.version_index[0]
        v = int(index) if math.isfinite(index) and index >= 0 else 0
        plan = self._drift_plans[v] if v < len(self._drift_plans) else None
        if plan is None or not math.isfinite(score) or score <= 1.0 or column < 0:
            return None
        return plan.describe(score, int(column))

    def _make_follower(self) -> LatestFollower | None:
        follow = self.p.follow_latest
        if follow not in (None, True, False):
            raise ConfigurationError(
                f"The 'follow_latest' parameter of MlPrediction must be True, False or None. "
                f"Got {follow!r} instead."
            )
        if follow is None:
            follow = self.data.islive()
        if not follow or self.p.version not in (None, "latest"):
            return None  # a pinned version never moves
        b = self.bundle
        return LatestFollower(self.p.registry, b.symbol, b.model_type, b.version)

    def _maybe_reload(self, label: datetime) -> None:
        """Hot reload (``follow_latest``): switch to the version ``latest`` names now, when it
        validates and warms; else keep serving and record why, once."""
        follower = self._follower
        name = follower.moved_to() if follower is not None else None
        if follower is None or name is None:
            return
        old = self.bundle
        new_key = f"{old.symbol}/{old.model_type}@{name}"
        try:
            bundle = select_for_feed(
                self.data,
                symbol=self.p.symbol,
                model_type=self.p.model_type,
                timeframe=self.p.timeframe,
                registry=self.p.registry,
                owner="MlPrediction",
                extra=self._extra,
                version=name,
            )
            required = self.p.sequence_length
            if required is not None and bundle.sequence_length != required:
                raise FeatureSchemaError(
                    f"{bundle.key} takes {bundle.sequence_length} bars, the strategy was "
                    f"configured with sequence_length={required}"
                )
            if list(bundle.pipeline.columns) != list(old.pipeline.columns):
                raise FeatureSchemaError(
                    f"{bundle.key} reads candle columns {list(bundle.pipeline.columns)}, the "
                    f"serving model {list(old.pipeline.columns)}; restart the session to change "
                    "inputs"
                )
            check = verify_certificate(bundle)
            plan = self._drift_plan(bundle)
            monitor = plan.monitor() if plan is not None else None
            psi = None
            stream = bundle.pipeline.stream()
            for row, at in self._history:
                stream.update(row, label=at)
                if monitor is not None:
                    psi = monitor.update(stream.last_series_row())
            problem = output_problem(bundle, stream, check) if stream.ready else None
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not isinstance(e, RegistryError | CandleDataError | OSError):
                reason = f"{type(e).__name__}: {reason}"
            self._refuse(follower, name, new_key, reason, label)
            return
        if not stream.ready:
            log.info(
                "%s: %s needs %d bars of history, %d seen; %s keeps serving for now",
                label,
                bundle.key,
                bundle.pipeline.min_bars,
                len(self._history),
                old.key,
            )
            return
        if problem is not None:
            self._refuse(follower, name, new_key, problem, label)
            return
        follower.serving = name
        self.bundles, self.bundle, self._streams, self._key = [bundle], bundle, [stream], bundle.key
        self._drift_plans, self._monitors, self._drift_psi = [plan], [monitor], [psi]
        event = ModelEvent("switch", label.isoformat(), old.symbol, old.key, bundle.key)
        self.model_events.append(event)
        log.warning("%s: %s", label, event.describe())

    def _refuse(
        self, follower: LatestFollower, name: str, new_key: str, reason: str, label: datetime
    ) -> None:
        """Refuse version ``name`` once: the old version keeps serving; record and log why."""
        old = self.bundle
        follower.refuse(name, reason)
        event = ModelEvent("refused", label.isoformat(), old.symbol, old.key, new_key, reason)
        self.model_events.append(event)
        log.warning("%s: %s", label, event.describe())

    def _set_rejected(self, pairs: Sequence[tuple[int, str]]) -> None:
        self.rejected_bars = [(pd.Timestamp(ns), why) for ns, why in pairs]
        self._rejected_at = dict(pairs)

    def rejected_output(self) -> str | None:
        """Why the model's output at the current bar was rejected (a key of
        ``inference.decode.REJECTED_OUTPUT_REASONS``), or None."""
        if not self._rejected_at:
            return None
        return self._rejected_at.get(_ns_of(float(self.data.datetime[0])))

    @property
    def rejected_outputs(self) -> dict[str, int]:
        """Bars without a prediction because the model's output was rejected, per reason
        (``"non_finite_output"``, ``"implausible_output"``); empty when there were none."""
        return dict(collections.Counter(reason for _, reason in self.rejected_bars))

    @property
    def model_key(self) -> str:
        """The key of the version serving the current bar (``SYMBOL/type@version``)."""
        if self.schedule is None:
            return self._key
        try:
            index = self.lines.version_index[0]
        except IndexError:
            return self._key
        if not math.isfinite(index) or index < 0:
            return self._key
        return self.bundles[int(index)].key

    def _version_of(self, close_ns: np.ndarray) -> np.ndarray:
        """Index into ``bundles`` serving each bar (bars carry close times), -1 for none."""
        if self.schedule is None:
            return np.zeros(len(close_ns), dtype=np.int64)
        bar = timeframe_to_timedelta(self.bundle.timeframe).value
        available = np.array([t.value for t in self.schedule.available_from], dtype=np.int64)
        return np.searchsorted(available, close_ns - bar, side="right") - 1

    def _gaps(self, stamps: np.ndarray, previous: int | None) -> np.ndarray:
        """Positions (in ``stamps``, int64 ns) of bars that follow a gap, per ``gap_policy``."""
        what = f"MlPrediction({self.model_key})"

        def label(i: int) -> str:
            return f"the bar closing at {pd.Timestamp(int(stamps[i]))}"

        tf = self.bundle.timeframe
        gaps, missing = find_gaps(
            stamps,
            tf,
            what=what,
            label=label,
            previous=previous,
            calendar=self.calendar,
            stamped="close",
        )
        apply_gap_policy(
            gaps, missing, self.p.gap_policy, what=what, timeframe=tf, label=label, stamps=stamps
        )
        self.gap_bars.extend(pd.Timestamp(int(stamps[g])) for g in gaps)
        return gaps

    def _compute_batch(self, end: int) -> dict[str, np.ndarray]:
        from atb_strategies.indicators.cache import prediction_cache, prediction_key

        pipe = self.bundle.pipeline
        stamps = np.asarray(self.data.datetime.array[:end], dtype=np.float64)
        gaps = self._gaps(_to_ns(stamps), None)
        cols = {}
        for c, line, asof in zip(pipe.columns, self._lines_in, self._asof, strict=True):
            if not asof:
                cols[c] = np.asarray(line.array[:end], dtype=np.float64)
                continue
            extra = self._extra
            other = np.asarray(extra.datetime.array[: extra.buflen()], dtype=np.float64)
            values = np.asarray(line.array[: extra.buflen()], dtype=np.float64)
            pos = np.searchsorted(other, stamps, side="right") - 1
            cols[c] = np.where(pos >= 0, values[np.clip(pos, 0, None)], np.nan)
            self._check_asof(c, cols[c], stamps)
        # the predictions depend on the models and these arrays only: inside a sweep they are
        # computed once (or handed in), see atb_strategies.indicators.cache
        key = None
        if prediction_cache.enabled and self.p.drift_window is None:
            schedule = None if self.schedule is None else self.schedule.available_from
            key = prediction_key(self.bundles, schedule, self.p.gap_policy, stamps, cols)
            cached = prediction_cache.get(key)
            if cached is not None:
                self.skipped_bars = cached.skipped_bars
                self._set_rejected(cached.rejected)
                return dict(cached.lines)
        out = {name: np.full(end, np.nan) for name in self.lines.getlinealiases()}
        serving = self._version_of(_to_ns(stamps))
        self.skipped_bars = 0
        rejected = np.full(end, None, dtype=object)
        for v in np.unique(serving[serving >= 0]):
            bars = np.flatnonzero(serving == v)
            self._predict_span(int(v), cols, int(bars[0]), int(bars[-1]) + 1, gaps, out, rejected)
        at = np.flatnonzero(np.not_equal(rejected, None))
        pairs = [
            (int(ns), str(why)) for ns, why in zip(_to_ns(stamps[at]), rejected[at], strict=True)
        ]
        self._set_rejected(pairs)
        if key is not None:
            prediction_cache.put(key, out, self.skipped_bars, tuple(pairs))
        if self.schedule is None:
            first = max(b.pipeline.min_bars for b in self.bundles) - 1
            # direction is finite wherever a prediction was made (class models too)
            head = out["direction"][first : first + self.bundle.pipeline.min_bars]
            if len(head) == self.bundle.pipeline.min_bars and not np.isfinite(head).any():
                self._warn_silent(len(head), int(np.isnan(head).sum()), _to_ns(stamps))
        return out

    def _warn_silent(self, bars: int, skipped: int, stamps: np.ndarray | None = None) -> None:
        """Warn once: no prediction in the first ``bars`` bars after the warm-up (``stamps``:
        the feed's close times, to name the calendar that fits)."""
        if self.silence_warning is not None:
            return
        hint = None
        if stamps is not None and self.calendar.always_open:
            hint = suggest_calendar(stamps, self.bundle.timeframe, stamped="close")
        self.silence_warning = silent_warmup_message(
            self.model_key,
            bars=bars,
            skipped=min(skipped, self.skipped_bars),
            gaps=len(self.gap_bars),
            calendar=self.calendar.name,
            min_bars=self.bundle.pipeline.min_bars,
            hint=hint,
        )
        log.warning("%s", self.silence_warning)

    def _watch_silence(self, predicted: bool) -> None:
        """Streaming: count the bars without a prediction since the warm-up, until one comes."""
        if self._silent_bars < 0:
            return
        if predicted:
            self._silent_bars = -1  # predictions came: never warn
            return
        self._silent_bars += 1
        if self._silent_bars >= self.bundle.pipeline.min_bars and self.schedule is None:
            self._warn_silent(self._silent_bars, self.skipped_bars)
            self._silent_bars = -1

    def _predict_span(
        self,
        v: int,
        cols: dict[str, np.ndarray],
        lo: int,
        hi: int,
        gaps: np.ndarray,
        out: dict[str, np.ndarray],
        rejected: np.ndarray,
    ) -> None:
        """Version ``v``'s predictions at bars ``[lo, hi)``, batched, into ``out``; the reason
        of each bar whose output was rejected into ``rejected``."""
        bundle = self.bundles[v]
        pipe = bundle.pipeline
        batch = pipe.batch_windows({c: x[:hi] for c, x in cols.items()}, start=lo)
        if not len(batch.end_index):
            return
        preds = bundle.runner.predict_batch(batch.windows.astype(np.float32), batch.context)
        keep = np.ones(len(batch.end_index), dtype=bool)
        if self.p.gap_policy == "skip":
            keep = ~rows_span_gap(batch.end_index, gaps, pipe.min_bars)
            self.skipped_bars += int((~keep).sum())
        at = batch.end_index[keep]
        out["predicted_price"][at] = preds.price[keep]
        out["predicted_return"][at] = preds.predicted_return[keep]
        out["confidence"][at] = preds.confidence[keep]
        out["direction"][at] = preds.direction[keep]
        out["version_index"][at] = v
        bad = keep & preds.rejected
        if bad.any():
            out["direction"][batch.end_index[bad]] = np.nan  # no prediction: no direction
            rejected[batch.end_index[bad]] = preds.no_prediction[bad]
        plan = self._drift_plans[v]
        if plan is not None:
            series = pipe.series({c: x[:hi] for c, x in cols.items()})
            score, column = plan.batch(series)
            out["drift"][at], out["drift_column"][at] = score[at], column[at]

    def _check_asof(self, column: str, values: np.ndarray, stamps: np.ndarray) -> None:
        missing = ~np.isfinite(values)
        if missing.any():
            first = bt.num2date(stamps[int(np.argmax(missing))])
            raise CandleDataError(
                f"MlPrediction({self.model_key}): no {column!r} value published at or before "
                f"bar {first} in the second feed ({int(missing.sum())} bar(s) lack one). Start "
                "the price feed later or give a longer sentiment history.",
                row=first,
            )

    def _preloaded(self) -> bool:
        return self.data.buflen() > len(self.data)

    def _stream_bar(self) -> None:
        if not self._streams:
            self._streams = [b.pipeline.stream() for b in self.bundles]
            self._monitors = [p.monitor() if p is not None else None for p in self._drift_plans]
            self._drift_psi = [None] * len(self.bundles)
        dt = float(self.data.datetime[0])
        now = _ns_of(dt)
        if self._bar_ns is None:
            self._bar_ns = int(timeframe_to_timedelta(self.bundle.timeframe).value)
        # the next bar one bar later (nearly always) needs no gap search
        if self._prev_ns is not None and now - self._prev_ns != self._bar_ns:
            followed_gap = len(self._gaps(np.array([now], dtype=np.int64), self._prev_ns)) > 0
            if followed_gap and self.p.gap_policy == "skip":
                self._last_gap = len(self.data) - 1
        self._prev_ns = now
        row = [
            (line[0] if len(self._extra) else float("nan")) if asof else line[0]
            for line, asof in zip(self._lines_in, self._asof, strict=True)
        ]
        if not all(map(math.isfinite, row)):
            bad = [
                c
                for c, v in zip(self.bundle.pipeline.columns, row, strict=True)
                if not math.isfinite(v)
            ]
            raise CandleDataError(
                f"MlPrediction({self.model_key}): {bad} not a number at bar "
                f"{bt.num2date(dt)}; repair or drop that candle.",
                row=bt.num2date(dt),
            )
        # the bar's time as a datetime only for the follower and error messages
        label: object = functools.partial(bt.num2date, dt)
        if self._follower is not None:
            label = bt.num2date(dt)
            self._maybe_reload(label)  # between bars: before this bar's prediction
            self._history.append((row, label))
        for v, stream in enumerate(self._streams):
            stream.update(row, label=label)
            if self._monitors[v] is not None:
                self._drift_psi[v] = self._monitors[v].update(stream.last_series_row())
        # the bar's close time and serving version, once per bar (the batcher reads them too)
        self._now_ns = now
        self._serving = self._version_at(now)

    def _version_at(self, close_ns: int) -> int:
        """``_version_of`` for one bar."""
        if self.schedule is None:
            return 0
        return int(self._version_of(np.array([close_ns], dtype=np.int64))[0])

    # ------------------------------------------------------------------ backtrader hooks

    def _new_bar(self, n: int | None = None) -> bool:
        """False when backtrader calls again without a new bar of this feed (another feed
        moved, e.g. a sentiment feed or a feed with more bars); nothing must change then.
        ``n``: ``len(data)`` when the caller has it."""
        if n is None:
            n = len(self.data)
        if n == self._bars_done:
            return False
        self._bars_done = n
        return True

    def _stream_mode(self) -> bool:
        """True on the streaming path, False on the preloaded (batch) one; decided on the
        feed's first bar."""
        if self._mode is None:
            self._mode = "batch" if self._preloaded() else "stream"
        return self._mode == "stream"

    def _advance(self, n: int | None = None) -> None:
        """Streaming: take the feed's new bar into the features, once per bar (the indicator
        itself or the strategy's batcher, whichever comes first; ``n``: ``len(data)`` when the
        caller has it)."""
        if self._new_bar(n):
            self._stream_bar()

    def _runnable_version(self, n: int) -> int | None:
        """Streaming, at the current bar (already advanced; ``n = len(data)``): the version
        whose model must run, or None when the bar gets no model call (no version yet, warm-up,
        a gap)."""
        v = self._serving
        if v < 0 or not self._streams[v].ready:
            return None
        if self._last_gap > n - self.bundles[v].pipeline.min_bars:
            return None
        return v

    def prenext(self) -> None:
        if self._stream_mode():
            self._advance()

    def nextstart(self) -> None:
        self._stream_mode()
        self.next()

    def next(self) -> None:
        if self._mode == "batch":
            if self._batch is None:
                self._batch = self._compute_batch(self.data.buflen())
            i = len(self.data) - 1
            for name, values in self._batch.items():
                getattr(self.lines, name)[0] = values[i]
            return
        n = len(self.data)
        self._advance(n)
        if self._served == n:
            return  # called again without a new bar of this feed (another feed moved)
        self._served = n
        nan = float("nan")
        v = self._serving
        if v < 0:  # asof: no version was available yet at this bar
            for name in self.lines.getlinealiases():
                getattr(self.lines, name)[0] = nan
            return
        stream, bundle = self._streams[v], self.bundles[v]
        if not stream.ready:  # pragma: no cover - minperiod guarantees it
            return
        if self._last_gap > n - bundle.pipeline.min_bars:
            self.skipped_bars += 1  # this bar's rows span a gap (only under "skip")
            for name in self.lines.getlinealiases():
                getattr(self.lines, name)[0] = nan
            self._watch_silence(False)
            return
        row = self._predict_row(v, n)
        lines = self.lines
        lines.version_index[0] = v
        lines.predicted_price[0] = row.price
        lines.predicted_return[0] = row.predicted_return
        lines.confidence[0] = row.confidence
        lines.direction[0] = row.direction if row.no_prediction is None else nan
        if row.no_prediction is not None:  # a rejected output (inference.decode): like a gap
            close = self._now_ns
            self.rejected_bars.append((pd.Timestamp(close), str(row.no_prediction)))
            self._rejected_at[close] = str(row.no_prediction)
        self._watch_silence(row.no_prediction is None)
        plan = self._drift_plans[v]
        if plan is not None and self._drift_psi[v] is not None:
            score, column = plan.scores(self._drift_psi[v])
            self.lines.drift[0], self.lines.drift_column[0] = score[0], column[0]

    def _predict_row(self, v: int, n: int) -> PredictionRow:
        """Version ``v``'s prediction at the current bar (``n = len(data)``): from the
        strategy's batch of this bar (one call for every feed on the model), else one call of
        its own."""
        if self._batcher is not None:
            return self._batcher.take(self, n)
        stream = self._streams[v]
        ctx: PriceContext = stream.context()
        return row_of(self.bundles[v].runner.predict(stream.window().astype(np.float32), ctx))

    def once(self, start: int, end: int) -> None:
        # backtrader calls once() twice: via oncestart(minperiod - 1, minperiod) for the first
        # bar, then once(minperiod, buflen). Every bar must come from one batch over the whole
        # preloaded feed: computing the first bar alone ran its window as a batch of one,
        # whose kernels differ from the batched ones (and logged each gap twice).
        self._mode = "batch"
        if self._batch is None:
            self._batch = self._compute_batch(self.data.buflen())
        for name, arr in self._batch.items():
            dst = getattr(self.lines, name).array
            for i in range(start, min(end, len(arr))):
                dst[i] = arr[i]
