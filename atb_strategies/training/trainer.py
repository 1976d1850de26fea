"""``train_model``: candles in, a new registry version out (``atb train model``).

``train_model`` runs the training stages in order, each logged, and times them:

1. **data** (``training.data``): candles limited to ``[start_date, end_date]``, validated,
   inspected (gaps, zero-volume bars);
2. **features** (``training.recipes``): the feature schema generated from the model type's
   recipe, scalers fitted on the train bars only (``training.split.time_split`` fixes them);
3. **split** (``training.split``): windows and next-``horizon`` log-return targets from the
   runtime feature pipeline, in chronological train / validation / test parts separated by a
   full window, samples spanning a gap in the candles dropped;
4. **fit** (``training.fit``): the model family of ``architecture`` (``training.family``:
   ``mlp``, ``gru``, ``ridge``, ``lightgbm``, ``auto``), progress per epoch, early stopping,
   regularisation and (``auto``) family chosen on the validation part, predictions calibrated
   on it (``training.calibrate``);
5. **gates** (``training.gates``): ONNX export; the *parity gate* compares the framework and
   ONNX models on every test window and refuses registration above ``parity_tolerance``; the
   *causality gate* requires predictions from truncated history to equal the full-series ones
   bit for bit;
6. **evaluate** (``training.evaluate``): honest metrics on the test part against naive
   baselines (``metrics.json``);
7. **register** (``training.register``): the drift reference of the train part
   (``training.drift``: per-feature and prediction quantile bins) in ``metadata.json``, the
   bundle staged in the registry, a quick MlBasic backtest of the staged bundle against
   buy-and-hold over the test period, ``metrics.json``,
   an atomic rename into ``<SYMBOL>/<TYPE>/<VERSION>`` and only then (if asked) ``latest``. A
   failure or Ctrl-C at any point leaves no version and ``latest`` untouched (the version id
   stays used in ``.versions``, so it is never reissued).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from atb_strategies.bundle.format import FeatureSchema
from atb_strategies.data.loaders import load_ohlcv
from atb_strategies.exceptions import TrainingError
from atb_strategies.training.config import TrainingConfig, TrainingResult
from atb_strategies.training.data import prepare_candles
from atb_strategies.training.direction import ImpliedReturnView, family_for
from atb_strategies.training.drift import train_drift_reference
from atb_strategies.training.evaluate import bootstrap_block, training_metrics
from atb_strategies.training.family import model_family
from atb_strategies.training.fit import fit_model
from atb_strategies.training.gates import run_gates
from atb_strategies.training.recipes import (
    default_recipe,
    fit_schema,
    recipe_for,
    source_columns,
)
from atb_strategies.training.register import Candidate, register_model
from atb_strategies.training.split import split_samples, time_split
from atb_strategies.training.timing import Stopwatch

__all__ = [
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "model_family",
    "train_from_file",
    "train_model",
]


def train_model(config: TrainingConfig, candles: pd.DataFrame) -> TrainingResult:
    """Train, gate, evaluate and register a model on ``candles`` (indexed by time).

    Raises
    ------
    TrainingError
        Parity or causality gate failed (nothing registered).
    ConfigurationError, CandleDataError
        Bad settings or data (nothing registered).
    """
    clock = Stopwatch()
    family = family_for(config.architecture, config.target)
    recipe_name = config.recipe or default_recipe(config.architecture)
    recipe = recipe_for(
        config.model_type, recipe_name, timeframe=config.timeframe, calendar=config.calendar
    )
    data = prepare_candles(candles, config, source_columns(recipe))
    split = time_split(len(data.frame), config)
    schema = fit_schema(recipe, config.sequence_length, data.columns, split.train_end)
    parts = split_samples(data.frame, schema, split, config)
    with clock.measure("fit_seconds"):
        outcome = fit_model(family, parts, config)
    family, fitted = outcome.family, outcome.fitted
    # the gates and metrics read one number per window: a direction classifier's implied return
    scored = family
    if config.target == "direction":
        scored = ImpliedReturnView(family, float(np.mean(np.abs(parts["train"].y))))
    gates = run_gates(scored, fitted, data.frame, schema, parts["test"], config.parity_tolerance)
    drift_model: bytes | None = gates.model_bytes
    if scored is not family:
        # register the class graph itself; it is the gated graph minus the implied-return tail
        gates = replace(gates, model_bytes=family.to_onnx(fitted, *schema_shape(schema)))
        drift_model = None
    metrics = training_metrics(
        parts,
        gates,
        config.horizon,
        scored.predict(fitted, parts["val"].X),
        block=bootstrap_block(config.timeframe, config.horizon),
        reps=config.bootstrap_reps,
        seed=config.seed,
    )
    choices = {
        "architecture": config.architecture,
        "model_family": family.name,
        "recipe": recipe_name,
        "calibration": outcome.calibration,
        **outcome.selection,
    }
    metrics.update(choices)
    if config.target == "direction":
        metrics["target"] = "direction"
        metrics["implied_return"] = "(p_up - p_down) * mean |train return|; its sign: direction"
    drift = train_drift_reference(
        schema, data.columns, split.train_end, drift_model, parts["train"].X
    )
    candidate = Candidate(family, fitted, schema, gates, drift, choices)
    done = register_model(config, candidate, data, parts, metrics, clock)
    test = parts["test"]
    predictions = pd.DataFrame(
        {
            "predicted": gates.test_predictions,
            "actual": test.y,
            "close": test.close,
            "drift": float(parts["train"].y.mean()),
        },
        index=pd.DatetimeIndex(test.stamps, name="timestamp"),
    )
    return TrainingResult(
        done.version, done.path, metrics, done.promoted, clock.timings, predictions
    )


def schema_shape(schema: FeatureSchema) -> tuple[int, int]:
    """``(sequence_length, n_features)`` of the model input."""
    return schema.sequence_length, len(schema.features)


def train_from_file(config: TrainingConfig, path: Path | str) -> TrainingResult:
    """``train_model`` on candles loaded (and validated) from a CSV/parquet/feather file."""
    frame = load_ohlcv(path, timeframe=config.timeframe, calendar=config.calendar)
    return train_model(replace(config, data_source=str(path)), frame)
