"""Seed-compatible ``PredictionEngine``: the engine of ``inference.engine`` with the configured
registry opened when none is given."""

from __future__ import annotations

from atb_strategies.inference.engine import BundleSource
from atb_strategies.inference.engine import PredictionEngine as _Engine
from atb_strategies.registry.registry import ModelRegistry


class PredictionEngine(_Engine):
    """Predict from OHLCV candles with a registry model (see ``inference.engine``).

    Parameters
    ----------
    config : PredictionConfig, optional
        Defaults to ``PredictionConfig.from_config_manager()``.
    registry : ModelRegistry, optional
        Shares an existing registry (and its cached sessions); default: the configured one.
    gap_policy : {"raise", "allow"}
        What to do with missing bars inside the rows a prediction uses. Default ``"raise"``.
    """

    def _default_registry(self) -> BundleSource:
        return ModelRegistry.from_config(self.config)


__all__ = ["PredictionEngine"]
