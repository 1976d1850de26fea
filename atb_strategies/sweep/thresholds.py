"""Entry thresholds a model's predictions never cross.

``MlStrategy`` signals long when the predicted return is above ``long_threshold`` and, with
``allow_shorts``, short when it is below ``-short_threshold``. A threshold above every
predicted return never enters; one below every predicted return enters whenever the strategy
is flat. Neither fails, so a sweep or a backtest would pass silently: once the predictions are
known (a sweep computes them before its cells run, a backtest has them after its run),
``threshold_warnings`` says so with the observed range of predicted returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np


def python_spelling(name: str, value: Any) -> str:
    """``long_threshold=5``: how a param is spelled in Python."""
    return f"{name}={value!r}"


def prediction_range(returns: Iterable[float] | np.ndarray) -> tuple[float, float] | None:
    """``(min, max)`` of the finite predicted returns; None when there is none."""
    values = np.asarray(list(returns) if not isinstance(returns, np.ndarray) else returns)
    values = values.astype(np.float64, copy=False)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    return float(values.min()), float(values.max())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def _param(strategy: type, params: Mapping[str, Any], name: str) -> Any:
    """``params[name]``, else the strategy's default (None when it has no such param)."""
    if name in params:
        return params[name]
    return getattr(getattr(strategy, "params", None), name, None)


def entry_signals(
    returns: Iterable[float] | np.ndarray, strategy: type, params: Mapping[str, Any]
) -> int:
    """How many bars' predicted return pass the entry thresholds of ``params`` (the long one,
    and the short one with ``allow_shorts``): how much a cell is expected to trade, which the
    sweep uses to hand its longest cells out first. NaN returns pass nothing; a threshold that
    is not a number counts no bar."""
    r = np.asarray(returns, dtype=np.float64)
    count = 0
    long_threshold = _number(_param(strategy, params, "long_threshold"))
    if long_threshold is not None:
        count += int(np.count_nonzero(r > long_threshold))
    short_threshold = _number(_param(strategy, params, "short_threshold"))
    if _param(strategy, params, "allow_shorts") and short_threshold is not None:
        count += int(np.count_nonzero(r < -short_threshold))
    return count


def threshold_warnings(
    returns: Iterable[float] | np.ndarray,
    strategy: type,
    params: Mapping[str, Any],
    *,
    spell: Callable[[str, Any], str] = python_spelling,
    model: str | None = None,
) -> list[str]:
    """Warnings for entry thresholds outside the range of ``returns`` (predicted returns).

    Parameters
    ----------
    returns : array-like of float
        The predicted returns (NaN for bars without a prediction are ignored).
    strategy : type
        The strategy class; params not in ``params`` take its defaults.
    params : mapping
        The strategy params (``long_threshold``, ``short_threshold``, ``allow_shorts``).
    spell : callable
        ``(name, value) -> text`` naming a threshold where the user set it (default
        ``long_threshold=5``; the CLI passes ``--long-threshold 5``).
    model : str, optional
        Names the predictions' model in the message (a sweep with several).

    Returns
    -------
    list of str
        Empty when every threshold lies within the range, or when nothing was predicted.
    """
    found = prediction_range(returns)
    if found is None:
        return []
    low, high = found

    def param(name: str) -> Any:
        return _param(strategy, params, name)

    of = f" of {model}" if model else ""
    out = []
    long_threshold = _number(param("long_threshold"))
    if long_threshold is not None and long_threshold >= high:
        out.append(
            f"{spell('long_threshold', param('long_threshold'))} is above every predicted "
            f"return{of} (max {high:.4g}): the strategy will never enter long."
        )
    elif long_threshold is not None and long_threshold < low:
        out.append(
            f"{spell('long_threshold', param('long_threshold'))} is below every predicted "
            f"return{of} (min {low:.4g}): the strategy enters long on every bar it is flat."
        )
    short_threshold = _number(param("short_threshold"))
    if param("allow_shorts") and short_threshold is not None:
        if -short_threshold <= low:
            out.append(
                f"{spell('short_threshold', param('short_threshold'))}: no predicted "
                f"return{of} is below {-short_threshold:.4g} (min {low:.4g}): the strategy "
                "will never enter short."
            )
        elif -short_threshold > high:
            out.append(
                f"{spell('short_threshold', param('short_threshold'))}: every predicted "
                f"return{of} is below {-short_threshold:.4g} (max {high:.4g}): the strategy "
                "enters short on every bar it is flat (unless it enters long)."
            )
    return out
