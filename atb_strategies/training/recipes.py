"""Stage 2, features: which features a model type is trained on, and their fitted schema.

Two feature sets exist (``--recipe``, ``TrainingConfig.recipe``):

* ``price``: window-normalised price features (log return, bar range and body, volume z-score,
  RSI) - the features of the ``mlp``/``gru`` bundles shipped so far, and their default;
* ``lags``: what autoregressive structure needs to be learnable by a linear model on the
  flattened window: the standardised log return (the window of ``sequence_length`` bars holds
  lags 0 .. sequence_length - 1 of it), the realised volatility (rolling std of log returns over
  a day) and the volume z-score over a week. The default of ``ridge``, ``lightgbm`` and ``auto``;
  a short window (``--sequence-length 24``) is enough for it.

Windows follow the timeframe and the calendar (``features.periods``), in bars: the volume
z-score over a trading week but at least 20 bars, the realised volatility over a trading day
but at least 20 bars, the sentiment change over a day, RSI over 14 bars. On 24/7 ``1h`` bars
that is 168, 24, 24 and 14, exactly the windows of the bundles shipped so far; on daily bars of
a market that closes 20, 20, 1 and 14, so a daily model predicts from its ~50th bar instead of
after a year. (Serving reads each bundle's own schema: only training uses these.)

``model_type`` ``sentiment`` adds the sentiment features to either set.

A recipe lists features as a source and a chain of causal transforms; features marked
``standardize`` get a final ``zscore`` step whose mean and std are fitted on the training rows
only (``fit_schema``) and written into the bundle's ``feature_schema.json``. The schema served at
runtime is therefore generated from the same transform code that computed the training data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from atb_strategies.bundle.format import FeatureSchema, FeatureSpec
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.features.candles import OHLCV
from atb_strategies.features.periods import bars_per_day, bars_per_week
from atb_strategies.features.pipeline import FeaturePipeline


@dataclass(frozen=True)
class RecipeFeature:
    """A feature before fitting; ``standardize`` appends a train-fitted ``zscore``."""

    name: str
    source: tuple[str, ...]
    transforms: tuple[dict[str, Any], ...] = ()
    standardize: bool = True


#: The shortest window (bars) of the volume z-score and the realised volatility.
MIN_WINDOW = 20


@dataclass(frozen=True)
class Windows:
    """A recipe's windows in bars (``windows_for``)."""

    volume: int = 168
    volatility: int = 24
    day: int = 24
    rsi: int = 14


def windows_for(timeframe: str = "1h", calendar: str | None = "24/7") -> Windows:
    """The windows of ``timeframe`` bars on ``calendar`` (24/7 ``1h``: 168, 24, 24, 14)."""
    day = bars_per_day(calendar, timeframe)
    week = bars_per_week(calendar, timeframe)
    return Windows(max(week, MIN_WINDOW), max(day, MIN_WINDOW), day, 14)


def _price(w: Windows) -> tuple[RecipeFeature, ...]:
    return (
        RecipeFeature("log_return", ("close",), ({"op": "log_return"},)),
        RecipeFeature("range", ("high", "low", "close"), ({"op": "spread_ratio"},)),
        RecipeFeature("body", ("close", "open", "close"), ({"op": "spread_ratio"},)),
        RecipeFeature(
            "volume_z", ("volume",), ({"op": "rolling_zscore", "period": w.volume},), False
        ),
        RecipeFeature("rsi", ("close",), ({"op": "rsi", "period": w.rsi},)),
    )


def _lags(w: Windows) -> tuple[RecipeFeature, ...]:
    return (
        RecipeFeature("log_return", ("close",), ({"op": "log_return"},)),
        RecipeFeature(
            "realized_vol",
            ("close",),
            ({"op": "log_return"}, {"op": "rolling_std", "period": w.volatility}),
        ),
        RecipeFeature(
            "volume_z", ("volume",), ({"op": "rolling_zscore", "period": w.volume},), False
        ),
    )


def _sentiment(w: Windows) -> tuple[RecipeFeature, ...]:
    return (
        RecipeFeature("sentiment", ("sentiment",), ()),
        RecipeFeature("sentiment_change", ("sentiment",), ({"op": "diff", "period": w.day},)),
    )


_HOURLY = Windows()
_PRICE = _price(_HOURLY)
_SENTIMENT = _sentiment(_HOURLY)

#: The model types, each with its price features on 24/7 ``1h`` bars (``recipe_for`` for
#: others).
RECIPES: dict[str, tuple[RecipeFeature, ...]] = {
    "basic": _PRICE,
    "sentiment": _PRICE + _SENTIMENT,
}

#: Feature sets by ``recipe`` name (``--recipe``); the model type may add sentiment to either.
FEATURE_SETS: dict[str, Callable[[Windows], tuple[RecipeFeature, ...]]] = {
    "price": _price,
    "lags": _lags,
}

#: The recipe an architecture trains on when none is given. ``gru`` keeps ``price`` (it trains
#: as it did); every other family sees lagged returns. The MLPs moved to ``lags`` with their
#: stronger L2 (``mlp.DEFAULT_ALPHA``): on planted AR(1) walk-forwards at phi = 0.1 the MLP
#: found the signal in 3 of 3 Gaussian markets on ``lags`` and 1 of 3 on ``price``.
DEFAULT_RECIPE: dict[str, str] = {
    "ridge": "lags",
    "lightgbm": "lags",
    "auto": "lags",
    "mlp": "lags",
    "mlp_ensemble": "lags",
}


def default_recipe(architecture: str) -> str:
    """The recipe ``architecture`` trains on unless told otherwise (``price`` if unlisted)."""
    return DEFAULT_RECIPE.get(architecture, "price")


def recipe_for(
    model_type: str,
    recipe: str | None = None,
    *,
    timeframe: str = "1h",
    calendar: str | None = "24/7",
) -> tuple[RecipeFeature, ...]:
    """The features of ``model_type`` with the feature set ``recipe`` (None: ``price``), their
    windows sized for ``timeframe`` bars on ``calendar`` (``windows_for``).

    Raises ``ConfigurationError`` listing the known model types or recipes.
    """
    if model_type not in RECIPES:
        raise ConfigurationError(
            f"No feature recipe for model type {model_type!r}; known: {sorted(RECIPES)}."
        )
    name = recipe or "price"
    if name not in FEATURE_SETS:
        raise ConfigurationError(
            f"Unknown recipe {recipe!r}; choose one of {sorted(FEATURE_SETS)}."
        )
    windows = windows_for(timeframe, calendar)
    extra = _sentiment(windows) if model_type == "sentiment" else ()
    return FEATURE_SETS[name](windows) + extra


def source_columns(recipe: tuple[RecipeFeature, ...]) -> list[str]:
    """The candle columns a recipe needs: OHLCV, then any other source column, sorted."""
    return list(OHLCV) + sorted({c for f in recipe for c in f.source} - set(OHLCV))


def fit_schema(
    recipe: tuple[RecipeFeature, ...],
    sequence_length: int,
    columns: dict[str, np.ndarray],
    train_end: int,
) -> FeatureSchema:
    """The feature schema with every ``zscore`` fitted on bars ``[0, train_end)`` only."""
    unfitted = FeatureSchema(
        sequence_length, tuple(FeatureSpec(f.name, f.source, f.transforms) for f in recipe)
    )
    series = FeaturePipeline(unfitted).series({k: v[:train_end] for k, v in columns.items()})
    features = []
    for j, f in enumerate(recipe):
        steps = list(f.transforms)
        if f.standardize:
            values = series[:, j]
            values = values[np.isfinite(values)]
            if len(values) < 2:
                raise ConfigurationError(
                    f"Feature {f.name!r} has fewer than 2 finite training values; "
                    "train on a longer period."
                )
            std = float(values.std())
            steps.append(
                {"op": "zscore", "mean": float(values.mean()), "std": std if std > 0 else 1.0}
            )
        features.append(FeatureSpec(f.name, f.source, tuple(steps)))
    return FeatureSchema(sequence_length, tuple(features))
