"""The drift reference of a trained model (``metadata.json`` ``drift_reference``).

Measured on the **train part only** (bars ``[0, train_end)``; never validation or test):

* per feature, the per-bar series of the fitted schema (``FeaturePipeline.series``: the values
  before window transforms, the quantity a live ``FeatureStream`` yields bar by bar with
  ``last_series_row()``), on the train bars where every feature is finite;
* the model's raw output (the predicted log return) on every training window, computed by the
  exported ONNX model as live sessions serve it.

``features.drift`` defines the bins, the PSI and its thresholds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from atb_strategies.features.drift import (
    CALIBRATION_QUANTILE,
    DEFAULT_BINS,
    DEFAULT_WINDOW,
    PREDICTION,
    DriftReference,
    fit_reference,
)
from atb_strategies.features.pipeline import FeaturePipeline
from atb_strategies.features.psi import rolling_psi
from atb_strategies.features.schema import FeatureSchema
from atb_strategies.training.gates import onnx_predict
from atb_strategies.training.logger import log


def train_drift_reference(
    schema: FeatureSchema,
    columns: Mapping[str, np.ndarray],
    train_end: int,
    model_bytes: bytes | None = None,
    train_windows: np.ndarray | None = None,
    *,
    bins: int = DEFAULT_BINS,
) -> DriftReference:
    """Feature (and prediction) distributions of the train part.

    Parameters
    ----------
    schema : FeatureSchema
        The fitted schema (scalers included) that is registered.
    columns : mapping of str to numpy.ndarray
        The training candles' columns (``CandleData.columns``).
    train_end : int
        First bar after the train part.
    model_bytes : bytes or None
        The exported ONNX model; with ``train_windows``, its outputs on them are recorded.
    train_windows : numpy.ndarray or None
        The train part's float32 windows (``parts["train"].X``).
    bins : int
        Quantile bins per feature.
    """
    series = FeaturePipeline(schema).series({k: v[:train_end] for k, v in columns.items()})
    predictions = None
    if model_bytes is not None and train_windows is not None and len(train_windows):
        predictions = onnx_predict(model_bytes, train_windows.astype(np.float32))
    reference = fit_reference(series, schema.feature_names, bins=bins, predictions=predictions)
    reference = calibrate(reference, series, predictions)
    log.info(
        "drift reference: %d features x %d bins on %d train bars%s",
        len(reference.features),
        bins,
        reference.rows,
        f", predictions of {len(predictions)} train windows" if predictions is not None else "",
    )
    return reference


def calibrate(
    reference: DriftReference,
    series: np.ndarray,
    predictions: np.ndarray | None,
    window: int = DEFAULT_WINDOW,
) -> DriftReference:
    """``reference`` with its calibration: per column, the ``CALIBRATION_QUANTILE`` of the
    rolling PSI (``window`` rows) over the train part itself.

    Real features are autocorrelated, so windows of an undrifted market already differ from
    the whole training sample (volatility regimes last weeks; see ``features.drift``). This is
    that movement, measured where there is no drift by construction; columns with fewer than
    ``window`` finite rows get none.
    """
    names = reference.names
    values = rolling_psi(series, reference, names, window)
    calibration = {}
    for j, name in enumerate(names):
        finite = values[:, j][np.isfinite(values[:, j])]
        if len(finite):
            calibration[name] = float(np.quantile(finite, CALIBRATION_QUANTILE))
    if predictions is not None and reference.prediction is not None:
        column = np.asarray(predictions, dtype=np.float64).reshape(-1, 1)
        pred = rolling_psi(column, reference, [PREDICTION], window)[:, 0]
        finite = pred[np.isfinite(pred)]
        if len(finite):
            calibration[PREDICTION] = float(np.quantile(finite, CALIBRATION_QUANTILE))
    return dataclasses.replace(reference, calibration=calibration, calibration_window=window)
