"""The package's layers, lowest first: a module imports only its own layer or lower ones.

``tests/unit/test_layers.py`` parses every import (including those inside functions) and fails
when one points up. The *faces* may import anything and nothing in the layers imports them:
``atb_strategies/__init__.py`` (the public API by role) and ``prediction/`` (the seed project's
import paths). ``testing/`` (the loopback exchange) is the layer just below ``cli``: tests use
it, and so does ``atb live --exchange loopback`` (the offline demo exchange).
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, ...], ...] = (
    ("exceptions", "config", "layers", "stats", "executors"),
    ("features",),
    ("bundle",),
    ("inference",),
    ("registry",),
    ("exchange",),
    ("sentiment",),
    ("data",),
    ("indicators",),
    ("strategies",),
    ("backtest",),
    ("sweep",),
    ("training",),
    ("evaluation",),
    ("live",),
    ("dashboard",),
    ("testing",),
    ("cli",),
)

FACES: tuple[str, ...] = ("__init__", "prediction")


def layer_of(top: str) -> int:
    """The layer index of a top-level module or package name (``"registry"``, ``"config"``)."""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise KeyError(f"{top!r} is in no layer; add it to atb_strategies.layers.LAYERS")
