"""The quick MlBasic backtest of the test period, run on the staged (unregistered) bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from atb_strategies.training.config import TrainingConfig


def quick_backtest(
    registry: Path,
    frame: pd.DataFrame,
    config: TrainingConfig,
    test_start: pd.Timestamp,
    version: str,
) -> dict[str, Any]:
    """Summary of MlBasic trading ``version`` from ``registry`` on ``frame`` from ``test_start``.

    ``registry`` is the staging registry; it is forgotten by the shared registry cache
    afterwards because it is about to move away.
    """
    from atb_strategies.backtest.runner import run_backtest
    from atb_strategies.registry.shared import forget_registry
    from atb_strategies.strategies.ml_basic import MlBasic

    try:
        result = run_backtest(
            frame,
            MlBasic,
            symbol=config.symbol,
            timeframe=config.timeframe,
            start=test_start,
            registry=str(registry),
            model_type=config.model_type,
            version=version,
            gap_policy="skip",
            record_decisions=False,
        )
    finally:
        forget_registry(registry)  # the staging root is about to move away
    return result.summary
