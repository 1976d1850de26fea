"""One registry per (process, registry path, runner options), shared by strategies and indicators.

Backtrader params must be plain values, so strategies and indicators name a registry by path
(or ``None`` for the configured one) and get the shared instance here: every ``MlPrediction`` on
the same model reuses one ONNX session. The cache is keyed by process id, so optimiser workers
(forked processes) open their own sessions instead of inheriting the parent's.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from atb_strategies.config import PredictionConfig
from atb_strategies.registry.registry import ModelRegistry

_lock = threading.Lock()
_registries: dict[tuple[int, str, tuple], ModelRegistry] = {}


def shared_registry(registry: str | Path | None = None) -> ModelRegistry:
    """The process-wide registry for ``registry`` (a path, or None for the configured one)."""
    config = PredictionConfig.from_config_manager()
    if registry is not None:
        config = config.with_overrides(model_registry_path=Path(registry))
    root = str(Path(config.model_registry_path).resolve())
    key = (os.getpid(), root, tuple(sorted(config.runner_options.items())))
    with _lock:
        found = _registries.get(key)
        if found is None:
            found = ModelRegistry.from_config(config)
            _registries[key] = found
        return found


def forget_registry(registry: str | Path) -> None:
    """Drop the shared registries rooted at ``registry`` (e.g. a temporary staging root)."""
    root = str(Path(registry).resolve())
    with _lock:
        for key in [k for k in _registries if k[1] == root]:
            del _registries[key]


def clear_shared_registries() -> None:
    """Forget every shared registry (their sessions close when no bundle is referenced)."""
    with _lock:
        _registries.clear()
