"""Options shared by several ``atb`` commands, defined once."""

from __future__ import annotations

from pathlib import Path

import click

from atb_strategies.config import PredictionConfig

registry_option = click.option(
    "--registry",
    "registry_path",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Registry root (default: $ATB_MODEL_REGISTRY_PATH, the config file, or ./models).",
)


def load_config(registry_path: Path | None) -> PredictionConfig:
    """The configuration, with ``--registry`` overriding the registry path."""
    config = PredictionConfig.from_config_manager()
    if registry_path is not None:
        config = config.with_overrides(model_registry_path=registry_path)
    return config
