"""atb-strategies: machine-learning strategies for backtrader.

The top level is what a strategy author uses, by role:

* in a cerebro: ``MlBasic``, ``MlSentiment``, ``MlStrategy`` (their base), ``MlPrediction`` (the
  indicator), ``create_ml_basic_strategy``, ``create_ml_sentiment_strategy``;
* predictions from a DataFrame: ``PredictionEngine``, ``PredictionConfig``;
* models: ``ModelRegistry``;
* errors: ``AtbError`` and every subclass (the tree is in ``atb_strategies.exceptions``).

Live trading classes come from ``atb_strategies.live``; candles and feeds from
``atb_strategies.data``; everything else stays in its module. Names are imported on first use
(PEP 562), so ``import atb_strategies`` (and the ``atb`` command) starts without loading
backtrader, pandas or ONNX Runtime.
"""

import typing as _typing
from importlib import import_module as _import_module

from atb_strategies.exceptions import (
    AtbError,
    BundleError,
    CandleDataError,
    ConfigurationError,
    ExchangeAuthError,
    ExchangeError,
    FeatureSchemaError,
    InferenceError,
    InsufficientFundsError,
    InvalidOrderError,
    JournalError,
    KillSwitchError,
    ModelNotFoundError,
    OrderNotFoundError,
    OrderStateUnknownError,
    RateLimitError,
    RegistryError,
    TemporaryExchangeError,
    TrainingError,
)

__version__ = "0.1.0"

_LAZY = {
    "MlBasic": "atb_strategies.strategies.ml_basic",
    "MlPrediction": "atb_strategies.indicators.prediction",
    "MlSentiment": "atb_strategies.strategies.ml_sentiment",
    "MlStrategy": "atb_strategies.strategies.base",
    "ModelRegistry": "atb_strategies.registry.registry",
    "PredictionConfig": "atb_strategies.config",
    "PredictionEngine": "atb_strategies.prediction.engine",
    "create_ml_basic_strategy": "atb_strategies.strategies.ml_basic",
    "create_ml_sentiment_strategy": "atb_strategies.strategies.ml_sentiment",
}

if _typing.TYPE_CHECKING:  # pragma: no cover
    from atb_strategies.config import PredictionConfig
    from atb_strategies.indicators.prediction import MlPrediction
    from atb_strategies.prediction.engine import PredictionEngine
    from atb_strategies.registry.registry import ModelRegistry
    from atb_strategies.strategies.base import MlStrategy
    from atb_strategies.strategies.ml_basic import MlBasic, create_ml_basic_strategy
    from atb_strategies.strategies.ml_sentiment import MlSentiment, create_ml_sentiment_strategy


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atb_strategies' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AtbError",
    "BundleError",
    "CandleDataError",
    "ConfigurationError",
    "ExchangeAuthError",
    "ExchangeError",
    "FeatureSchemaError",
    "InferenceError",
    "InsufficientFundsError",
    "InvalidOrderError",
    "JournalError",
    "KillSwitchError",
    "MlBasic",
    "MlPrediction",
    "MlSentiment",
    "MlStrategy",
    "ModelNotFoundError",
    "ModelRegistry",
    "OrderNotFoundError",
    "OrderStateUnknownError",
    "PredictionConfig",
    "PredictionEngine",
    "RateLimitError",
    "RegistryError",
    "TemporaryExchangeError",
    "TrainingError",
    "create_ml_basic_strategy",
    "create_ml_sentiment_strategy",
]
