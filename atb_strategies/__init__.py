"""atb-strategies: machine-learning strategies for backtrader.

Public API (also importable from the submodules named in the README):

* registry and bundles: ``ModelRegistry``, ``PredictionModelRegistry``, ``ModelBundle``,
  ``FeatureSchema``, ``FeatureSpec``, ``BundleMetadata``;
* inference: ``OnnxRunner``, ``Prediction``, ``PredictionBatch``, ``FeaturePipeline``,
  ``PriceContext``;
* engine: ``PredictionConfig``, ``PredictionEngine``;
* backtrader: ``MlPrediction`` (indicator), ``MlStrategy``, ``MlBasic``, ``MlSentiment``,
  ``create_ml_basic_strategy``, ``create_ml_sentiment_strategy``;
* candles: ``validate_candles``;
* errors: ``AtbError`` and its subclasses (see ``atb_strategies.exceptions``).
"""

from atb_strategies.bundle.format import BundleMetadata, FeatureSchema, FeatureSpec
from atb_strategies.config import PredictionConfig
from atb_strategies.exceptions import (
    AtbError,
    BundleError,
    CandleDataError,
    ConfigurationError,
    FeatureSchemaError,
    InferenceError,
    ModelNotFoundError,
    RegistryError,
)
from atb_strategies.features.candles import validate_candles
from atb_strategies.features.pipeline import FeaturePipeline, PriceContext
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.inference.bundle import ModelBundle
from atb_strategies.inference.runner import OnnxRunner, Prediction, PredictionBatch
from atb_strategies.prediction.engine import PredictionEngine
from atb_strategies.prediction.models.registry import PredictionModelRegistry
from atb_strategies.registry.registry import ModelRegistry
from atb_strategies.strategies.base import MlStrategy
from atb_strategies.strategies.ml_basic import MlBasic, create_ml_basic_strategy
from atb_strategies.strategies.ml_sentiment import MlSentiment, create_ml_sentiment_strategy

__version__ = "0.1.0"

__all__ = [
    "AtbError",
    "BundleError",
    "BundleMetadata",
    "CandleDataError",
    "ConfigurationError",
    "FeaturePipeline",
    "FeatureSchema",
    "FeatureSchemaError",
    "FeatureSpec",
    "InferenceError",
    "MlBasic",
    "MlPrediction",
    "MlSentiment",
    "MlStrategy",
    "ModelBundle",
    "ModelNotFoundError",
    "ModelRegistry",
    "OnnxRunner",
    "Prediction",
    "PredictionBatch",
    "PredictionConfig",
    "PredictionEngine",
    "PredictionModelRegistry",
    "PriceContext",
    "RegistryError",
    "create_ml_basic_strategy",
    "create_ml_sentiment_strategy",
    "validate_candles",
]
