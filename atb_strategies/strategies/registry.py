"""The strategies known by name (``atb backtest ml_basic``, ``atb live ml_sentiment``).

Names map to ``module:Class``; a class is imported when it is asked for, so listing the names
(the CLI's choices) loads nothing heavy.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from atb_strategies.exceptions import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    from atb_strategies.strategies.base import MlStrategy

_STRATEGIES = {
    "ml_basic": "atb_strategies.strategies.ml_basic:MlBasic",
    "ml_sentiment": "atb_strategies.strategies.ml_sentiment:MlSentiment",
}


def strategy_names() -> list[str]:
    """The known strategy names, sorted (``["ml_basic", "ml_sentiment"]``)."""
    return sorted(_STRATEGIES)


def get_strategy(name: str) -> type[MlStrategy]:
    """The strategy class registered under ``name``.

    Raises
    ------
    ConfigurationError
        When ``name`` is unknown; the message lists the known names.
    """
    target = _STRATEGIES.get(name)
    if target is None:
        raise ConfigurationError(
            f"Unknown strategy {name!r}; known strategies: {', '.join(strategy_names())}."
        )
    module, cls = target.split(":")
    return getattr(import_module(module), cls)
