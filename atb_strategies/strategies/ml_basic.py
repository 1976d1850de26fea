"""``MlBasic``: ``MlStrategy`` on a price-only model (``model_type="basic"``)."""

from __future__ import annotations

from typing import Any

from atb_strategies.strategies.base import MlStrategy
from atb_strategies.strategies.factory import create_strategy


class MlBasic(MlStrategy):
    """Trades a price-only registry model; see ``MlStrategy`` for the rules and parameters."""

    params = (("model_type", "basic"),)


def create_ml_basic_strategy(
    name: str = "MlBasic",
    sequence_length: int | None = 120,
    model_name: str | None = None,
    model_type: str = "basic",
    timeframe: str = "1h",
    **params: Any,
) -> type[MlStrategy]:
    """A configured ``MlBasic`` subclass for ``cerebro.addstrategy``.

    ``model_name`` selects a registry version (``None``: ``latest``). ``sequence_length`` is a
    guard: the run fails before the first bar if the model's differs (``None`` accepts any).
    Other keyword arguments set ``MlStrategy`` parameters. The name ``MlBasic`` returns a
    subclass named ``MlBasic`` in ``atb_strategies.strategies.generated``.
    """
    return create_strategy(
        MlBasic,
        name,
        sequence_length=sequence_length,
        version=model_name,
        model_type=model_type,
        timeframe=timeframe,
        **params,
    )
