"""The strategies known by name (``atb backtest ml_basic``, ``atb live ml_sentiment``)."""

from __future__ import annotations

from types import MappingProxyType

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.strategies.base import MlStrategy
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.strategies.ml_sentiment import MlSentiment

STRATEGIES: MappingProxyType[str, type[MlStrategy]] = MappingProxyType(
    {"ml_basic": MlBasic, "ml_sentiment": MlSentiment}
)
"""Strategy name -> class (read-only)."""


def strategy_names() -> list[str]:
    """The known strategy names, sorted.

    Returns
    -------
    list of str
        For example ``["ml_basic", "ml_sentiment"]``.
    """
    return sorted(STRATEGIES)


def get_strategy(name: str) -> type[MlStrategy]:
    """The strategy class registered under ``name``.

    Parameters
    ----------
    name : str
        A registered name such as ``"ml_basic"``.

    Returns
    -------
    type of MlStrategy
        The class itself (not an instance).

    Raises
    ------
    ConfigurationError
        When ``name`` is unknown; the message lists the known names.
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown strategy {name!r}; known strategies: {', '.join(strategy_names())}."
        ) from None
