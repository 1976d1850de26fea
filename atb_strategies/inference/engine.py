"""The DataFrame prediction engine: candles in, a decoded prediction out.

The engine selects a bundle from a bundle source (a ``ModelRegistry``), validates the candles it
will use, computes the newest window with the bundle's own feature pipeline and runs the model.
A prediction made from candles ending at bar ``t`` uses bars ``<= t`` only and forecasts bar
``t + horizon``.

``inference`` sits below ``registry``, so this engine is handed its registry; the public
``atb_strategies.PredictionEngine`` (``prediction.engine``) opens the configured registry when
none is given.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from atb_strategies.config import PredictionConfig
from atb_strategies.exceptions import CandleDataError, ConfigurationError
from atb_strategies.features.calendar import bundle_calendar
from atb_strategies.features.candles import (
    candle_arrays,
    check_gap_policy,
    find_gaps,
    rows_span_gap,
    validate_candles,
)
from atb_strategies.inference.bundle import ModelBundle
from atb_strategies.inference.runner import Prediction


class BundleSource(Protocol):
    """Where an engine gets its bundles: anything with ``select_bundle`` (a ``ModelRegistry``)."""

    def select_bundle(
        self,
        symbol: str,
        model_type: str,
        timeframe: str | None = None,
        version: str | None = None,
    ) -> ModelBundle: ...


class PredictionEngine:
    """Predict from OHLCV candles with a registry model.

    Parameters
    ----------
    config : PredictionConfig, optional
        Defaults to ``PredictionConfig.from_config_manager()``.
    registry : BundleSource
        The registry to select bundles from (shares its cached sessions).
    gap_policy : {"raise", "skip", "warn", "allow"}
        What a missing bar inside the rows a prediction uses does (see
        ``features.candles``). Default ``"raise"``. ``"skip"``: ``predict_series`` leaves the
        rows whose warm-up + window span a gap NaN; ``predict`` (one prediction, which cannot be
        skipped quietly) raises as with ``"raise"``.
    """

    def __init__(
        self,
        config: PredictionConfig | None = None,
        registry: BundleSource | None = None,
        *,
        gap_policy: str = "raise",
    ) -> None:
        self.config = config if config is not None else PredictionConfig.from_config_manager()
        self.registry = registry if registry is not None else self._default_registry()
        self.gap_policy = check_gap_policy(gap_policy, "PredictionEngine")

    def _default_registry(self) -> BundleSource:
        raise ConfigurationError(
            "The 'registry' parameter of inference.engine.PredictionEngine is required; use "
            "atb_strategies.PredictionEngine to open the configured registry."
        )

    def select(
        self,
        symbol: str | None = None,
        model_type: str | None = None,
        timeframe: str | None = None,
        version: str | None = None,
    ) -> ModelBundle:
        """The bundle ``predict`` would use for these arguments (config defaults fill gaps)."""
        c = self.config
        return self.registry.select_bundle(
            symbol=symbol or c.default_symbol,
            model_type=model_type or c.default_model_type,
            timeframe=timeframe or c.default_timeframe,
            version=version if version is not None else c.default_version,
        )

    def _check_frame(self, candles: pd.DataFrame, bundle: ModelBundle) -> None:
        """A DataFrame with enough rows and every column the bundle needs."""
        pipe = bundle.pipeline
        if not isinstance(candles, pd.DataFrame):
            raise CandleDataError(
                f"candles must be a pandas DataFrame; got {type(candles).__name__}."
            )
        if len(candles) < pipe.min_bars:
            raise CandleDataError(
                f"{len(candles)} candle(s) given; model {bundle.key} needs at least "
                f"{pipe.min_bars} ({pipe.warmup_bars} warm-up + {pipe.sequence_length} window)."
            )
        names = candles.columns
        if not all(c in names for c in pipe.columns):
            pipe.check_columns(list(names), owner="PredictionEngine", model=bundle.key)

    def _prepare(
        self,
        candles: pd.DataFrame,
        bundle: ModelBundle,
        rows: int | None,
        spacing_rows: int | None,
        gap_policy: str,
    ) -> pd.DataFrame:
        self._check_frame(candles, bundle)
        used = candles if rows is None else candles.iloc[-rows:]
        return validate_candles(
            used,
            columns=bundle.pipeline.columns,
            timeframe=bundle.timeframe,
            gap_policy=gap_policy,
            spacing_rows=spacing_rows,
            what=f"candles for {bundle.key}",
            calendar=bundle_calendar(bundle.metadata),
        )

    def predict(
        self,
        candles: pd.DataFrame,
        symbol: str | None = None,
        model_type: str | None = None,
        timeframe: str | None = None,
        version: str | None = None,
    ) -> Prediction:
        """Predict the bar after the last candle.

        ``candles`` is OHLCV (plus extra columns the model needs), indexed by time or with a
        ``timestamp`` column, oldest first. Only the newest ``warm-up + sequence_length`` rows are
        used when every feature has a fixed look-back; with recursive transforms (EMA, RSI),
        whose values depend on all history, every candle given is used, exactly as the
        streaming path fed from the first candle would. Spacing and gaps are checked over the
        rows the window and its warm-up cover; NaN, order and duplicates over all rows used.

        A non-finite or implausible model output (``inference.decode``) is no prediction, not
        an error: the result's ``no_prediction`` names why, ``price`` and ``predicted_return``
        are None, ``confidence`` NaN and ``direction`` 0 (``Prediction.ok`` is False).

        Raises
        ------
        CandleDataError
            Bad candles, naming the row.
        ModelNotFoundError, BundleError
            From the registry.
        """
        bundle = self.select(symbol, model_type, timeframe, version)
        pipe = bundle.pipeline
        policy = "raise" if self.gap_policy == "skip" else self.gap_policy
        self._check_frame(candles, bundle)
        # validate_candles' checks on the rows used only, with numpy (its own messages on error)
        columns = candle_arrays(
            candles,
            columns=pipe.columns,
            timeframe=bundle.timeframe,
            gap_policy=policy,
            rows=pipe.history_bars,
            spacing_rows=pipe.min_bars,
            what=f"candles for {bundle.key}",
            calendar=bundle_calendar(bundle.metadata),
        )
        batch = pipe.batch_windows(columns, start=len(columns[pipe.context_column]) - 1)
        window = batch.windows[-1].astype(np.float32)
        return bundle.runner.predict(window, batch.context_at(-1))

    def predict_series(
        self,
        candles: pd.DataFrame,
        symbol: str | None = None,
        model_type: str | None = None,
        timeframe: str | None = None,
        version: str | None = None,
    ) -> pd.DataFrame:
        """Predictions at every bar that has a complete window, batched.

        Returns a DataFrame indexed by the decision bar's timestamp with columns ``close``
        (the decision bar's close), ``price``, ``predicted_return``, ``direction``,
        ``confidence``, ``no_prediction`` and ``raw`` (regression targets). Row ``t`` uses bars
        ``<= t`` only; it equals what ``predict(candles[:t+1])`` returns. ``no_prediction`` is
        None at a prediction, else why there is none: ``"gap"`` (``gap_policy="skip"``),
        ``"non_finite_output"`` or ``"implausible_output"`` (``inference.decode``); such rows
        have NaN price, return and confidence and direction 0.
        """
        bundle = self.select(symbol, model_type, timeframe, version)
        frame = self._prepare(candles, bundle, None, None, self.gap_policy)
        columns = {c: frame[c].to_numpy(dtype=np.float64) for c in bundle.pipeline.columns}
        batch = bundle.pipeline.batch_windows(columns)
        preds = bundle.runner.predict_batch(batch.windows.astype(np.float32), batch.context)
        reason = np.full(len(preds), None, dtype=object)
        if preds.no_prediction is not None:
            reason[:] = preds.no_prediction
        if self.gap_policy == "skip":
            stamps = frame.index.asi8
            gaps, _ = find_gaps(
                stamps,
                bundle.timeframe,
                what=bundle.key,
                label=lambda i: str(frame.index[i]),
                calendar=bundle_calendar(bundle.metadata),
            )
            span = rows_span_gap(batch.end_index, gaps, bundle.pipeline.min_bars)
            for values in (preds.price, preds.predicted_return, preds.confidence):
                values[span] = np.nan
            preds.direction[span] = 0
            reason[span] = "gap"
        out = pd.DataFrame(
            {
                "close": batch.context.reference_close,
                "price": preds.price,
                "predicted_return": preds.predicted_return,
                "direction": preds.direction,
                "confidence": preds.confidence,
            },
            index=frame.index[batch.end_index],
        )
        out["no_prediction"] = pd.Series(reason, index=out.index, dtype=object)
        if preds.raw.ndim == 1:
            out["raw"] = preds.raw
        out.attrs["model_key"] = bundle.key
        return out
