"""Seed-compatible import path of ``PredictionConfig`` (it lives in ``atb_strategies.config``)."""

from atb_strategies.config import SHIPPED_MODELS, PredictionConfig, default_registry_path

__all__ = ["SHIPPED_MODELS", "PredictionConfig", "default_registry_path"]
