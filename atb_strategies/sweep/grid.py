"""A sweep's grid: ``NAME=V1,V2,...`` options parsed into typed values, checked against the
strategy's params (names: ``check_grid``; values, with the strategy's own ``check_params`` and
the type of each param's default: ``check_grid_values``), and expanded into one dict of params
per cell."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from atb_strategies.exceptions import ConfigurationError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}
_NONE = {"none", "null"}

#: Grid names that have their own sweep dimension, with where to put them instead.
RESERVED = {
    "version": "list versions with --model-version (versions= in run_sweep)",
}


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"``/``"1e-3"`` -> float, ``"true"``/``"false"`` -> bool,
    ``"none"`` -> None, anything else -> the string (stripped).

    Examples
    --------
    >>> [parse_value(v) for v in ("2", "0.001", "True", "None", "skip")]
    [2, 0.001, True, None, 'skip']
    """
    value = text.strip()
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    if lowered in _NONE:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def parse_grid(options: Iterable[str]) -> dict[str, list[Any]]:
    """``["long_threshold=0.001,0.002", "stop_loss=0.01"]`` -> ``{name: [values]}``.

    Raises
    ------
    ConfigurationError
        An option without ``=``, a bad name, an empty or repeated value, or a name given twice.
    """
    grid: dict[str, list[Any]] = {}
    for option in options:
        name, sep, values = option.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise ConfigurationError(
                f"The 'grid' parameter must look like NAME=V1,V2,... Got {option!r} instead."
            )
        if name in grid:
            raise ConfigurationError(
                f"The 'grid' parameter names {name!r} twice; give all its values in one "
                f"option: {name}=V1,V2,..."
            )
        texts = values.split(",")
        if any(not t.strip() for t in texts):
            raise ConfigurationError(
                f"The 'grid' parameter {name!r} has an empty value in {option!r}; separate "
                "values with single commas."
            )
        grid[name] = [parse_value(t) for t in texts]
    return grid


def check_grid(grid: Mapping[str, Sequence[Any]], known: Iterable[str], owner: str) -> None:
    """Refuse names that are not params of ``owner``, reserved names, empty or repeated values.

    Raises
    ------
    ConfigurationError
        Naming the bad entry; unknown names list the known ones (sorted).
    """
    names = sorted(known)
    for name, values in grid.items():
        if name in RESERVED:
            raise ConfigurationError(
                f"The grid may not sweep {name!r}: {RESERVED[name]}. Got {name}={list(values)}."
            )
        if name not in names:
            raise ConfigurationError(
                f"{owner} has no parameter {name!r}; its parameters: {', '.join(names)}."
            )
        if isinstance(values, str) or not len(values):
            raise ConfigurationError(
                f"The grid values of {name!r} must be a non-empty list. Got {values!r} instead."
            )
        seen = [repr(v) for v in values]
        if len(set(seen)) != len(seen):
            raise ConfigurationError(
                f"The grid values of {name!r} repeat a value. Got {list(values)!r} instead."
            )


def _type_problem(owner: str, name: str, default: Any, value: Any) -> str | None:
    """Why ``value`` is not of the type of the param's ``default`` (None: it is, or the
    default is None or of no simple type, so any value may do)."""
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "text"
    else:
        return None
    if ok:
        return None
    return (
        f"The {name!r} parameter of {owner} must be {kind}, like its default {default!r}. "
        f"Got {value!r} instead."
    )


def grid_value_problem(
    strategy: type, name: str, value: Any, params: Mapping[str, Any] | None = None
) -> str | None:
    """Why ``strategy`` would refuse ``value`` for its param ``name`` with the fixed
    ``params`` (None when it accepts it), found before any cell runs.

    The strategy's own check comes first (``check_params(values)``, as ``MlStrategy`` has:
    ranges, guard actions, durations), then the type of the param's default (a bool, an int,
    a number or text).
    """
    owner = strategy.__name__
    problem = None
    check = getattr(strategy, "check_params", None)
    if callable(check):
        try:
            check({**(params or {}), name: value})
        except ConfigurationError as e:
            problem = str(e)
    if problem is None:
        params_ = getattr(strategy, "params", None)
        problem = _type_problem(owner, name, getattr(params_, name, None), value)
    if problem is not None and isinstance(value, str) and re.search(r"[;|\s]", value):
        problem += " Separate grid values with commas: NAME=V1,V2."
    return problem


def check_grid_values(
    strategy: type, grid: Mapping[str, Sequence[Any]], params: Mapping[str, Any] | None = None
) -> None:
    """Refuse, before any cell runs, a fixed param or grid value ``strategy`` would refuse
    (``grid_value_problem``); names are checked by ``check_grid``.

    Raises
    ------
    ConfigurationError
        The first bad value, the strategy's sentence after the grid entry.
    """
    params = dict(params or {})
    for name, value in params.items():
        problem = grid_value_problem(strategy, name, value, params)
        if problem is not None:
            raise ConfigurationError(problem)
    for name, values in grid.items():
        for value in values:
            problem = grid_value_problem(strategy, name, value, params)
            if problem is not None:
                raise ConfigurationError(f"The grid value {name}={value!r} cannot run: {problem}")


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the last name varying fastest.

    Examples
    --------
    >>> expand_grid({"a": [1, 2], "b": ["x"]})
    [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
    """
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def varying(grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """The grid names with more than one value, in grid order."""
    return [name for name, values in grid.items() if len(values) > 1]
