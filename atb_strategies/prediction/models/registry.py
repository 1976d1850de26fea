"""Seed-compatible ``PredictionModelRegistry``: a ``ModelRegistry`` built from a config."""

from __future__ import annotations

from pathlib import Path

from atb_strategies.config import PredictionConfig
from atb_strategies.registry.registry import BundleInfo, ModelRegistry


class PredictionModelRegistry(ModelRegistry):
    """A ``ModelRegistry`` rooted at ``config.model_registry_path``.

    Parameters
    ----------
    config : PredictionConfig, optional
        Defaults to ``PredictionConfig.from_config_manager()``.
    root : Path or str, optional
        Overrides the config's registry path.
    """

    def __init__(self, config: PredictionConfig | None = None, *, root: Path | str | None = None):
        self.config = config if config is not None else PredictionConfig.from_config_manager()
        super().__init__(
            root if root is not None else self.config.model_registry_path,
            self.config.runner_options,
            verify_checksum=self.config.verify_checksum,
        )


__all__ = ["BundleInfo", "PredictionModelRegistry"]
