"""Stage 4, fit: the model family trained on the train part, early-stopped on the val part."""

from __future__ import annotations

from typing import Any

from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.dataset import Part
from atb_strategies.training.family import ModelFamily


def fit_model(family: ModelFamily, parts: dict[str, Part], config: TrainingConfig) -> Any:
    """``family.fit`` on ``parts["train"]`` with ``parts["val"]`` for early stopping."""
    train, val = parts["train"], parts["val"]
    return family.fit(train.X, train.y, val.X, val.y, seed=config.seed, epochs=config.epochs)
