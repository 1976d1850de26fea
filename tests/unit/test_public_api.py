"""The package's public surface: complete, sorted, importable (httpx's exported-members test)."""

from __future__ import annotations

import atb_strategies


def test_all_is_sorted_and_complete() -> None:
    assert atb_strategies.__all__ == sorted(atb_strategies.__all__)
    public = {
        name
        for name, value in vars(atb_strategies).items()
        if not name.startswith("_") and not isinstance(value, type(atb_strategies))
    }
    assert public == set(atb_strategies.__all__)


def test_seed_import_paths_work() -> None:
    from atb_strategies.config import PredictionConfig
    from atb_strategies.prediction.engine import PredictionEngine
    from atb_strategies.prediction.models.registry import PredictionModelRegistry

    assert PredictionEngine is atb_strategies.PredictionEngine
    assert PredictionConfig is atb_strategies.PredictionConfig
    assert PredictionModelRegistry is atb_strategies.PredictionModelRegistry
