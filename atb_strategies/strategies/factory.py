"""Build configured strategy subclasses (the seed project's ``create_*_strategy`` functions).

The returned class is registered under its name in ``atb_strategies.strategies.generated``, so
it pickles by reference and works with ``cerebro.optstrategy(..., maxcpus=N)``.
"""

from __future__ import annotations

import re
import sys
import types
from typing import Any

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.strategies.base import MlStrategy

_MODULE_NAME = "atb_strategies.strategies.generated"
generated = sys.modules.setdefault(_MODULE_NAME, types.ModuleType(_MODULE_NAME))


def create_strategy(base: type[MlStrategy], name: str, **params: Any) -> type[MlStrategy]:
    """A subclass of ``base`` named ``name`` whose param defaults are ``params``."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigurationError(f"Strategy name {name!r} must be a Python identifier.")
    known = set(base.params._getkeys())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigurationError(
            f"{base.__name__} has no parameter(s) {unknown}; its parameters are {sorted(known)}."
        )
    existing = getattr(generated, name, None)
    cls = type(name, (base,), {"params": tuple(params.items()), "__module__": _MODULE_NAME})
    if existing is not None and existing.params._getitems() != cls.params._getitems():
        raise ConfigurationError(
            f"A strategy named {name!r} with other parameters already exists in this process; "
            "choose another name so both can be pickled."
        )
    setattr(generated, name, existing or cls)
    return existing or cls
