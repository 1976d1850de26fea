"""Model families: what a trainable architecture provides, and the registry of them by name.

A family turns training windows into a fitted framework model, predicts with it, exports it to
ONNX and serializes it (``ModelFamily``). Families are looked up by architecture name
(``TrainingConfig.architecture``, ``--architecture``) in ``FAMILIES``, which names the module
and class of each one; the module is imported only when the family is asked for, so optional
frameworks (PyTorch) are needed only by those who train with them.

Adding a family is one new module with a class implementing ``ModelFamily`` plus one
``register_family`` line at the bottom of this module.
"""

from __future__ import annotations

import importlib
from abc import abstractmethod
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from atb_strategies.exceptions import ConfigurationError

FittedT = TypeVar("FittedT")


@runtime_checkable
class ModelFamily(Protocol[FittedT]):
    """A trainable architecture: fit, predict, export to ONNX, serialize.

    Attributes
    ----------
    name : str
        The architecture name (``"mlp"``), recorded in the bundle's lineage.
    framework_file : str
        File name of the serialized framework model in the bundle (``"model.pkl"``).
    """

    name: str
    framework_file: str

    @property
    @abstractmethod
    def framework(self) -> str:
        """The framework and exporter with versions (``metadata.json`` ``framework``)."""

    @abstractmethod
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        *,
        seed: int,
        epochs: int,
    ) -> FittedT:
        """Fit on float32 windows ``X`` ``[N, seq, f]`` and float64 log returns ``y``.

        ``X_val``/``y_val`` (the validation part, later in time than every training bar) drive
        early stopping. Deterministic for a ``seed``.
        """

    @abstractmethod
    def predict(self, fitted: FittedT, X: np.ndarray) -> np.ndarray:
        """Framework predictions: float64 log returns, shape ``[N]``, for float32 windows."""

    @abstractmethod
    def to_onnx(self, fitted: FittedT, sequence_length: int, n_features: int) -> bytes:
        """The serialized ONNX model: input ``[batch, seq, f]`` float32, output the log return."""

    @abstractmethod
    def serialize(self, fitted: FittedT) -> bytes:
        """The framework model as bytes (written to ``framework_file`` in the bundle)."""


@dataclass(frozen=True)
class FamilyEntry:
    """Where a family lives, what it needs, and what to say when that is missing.

    Attributes
    ----------
    module : str
        Module holding the family class, imported on first use.
    factory : str
        Name of the class (or factory function) in ``module``, called without arguments.
    requires : tuple of str
        Modules imported before ``module`` (dependencies it imports lazily).
    missing : str
        ``ConfigurationError`` message when an import fails; ``{missing}`` is replaced by the
        name of the missing module.
    """

    module: str
    factory: str
    requires: tuple[str, ...] = ()
    missing: str = "Architecture dependencies are missing ({missing})."


#: The model families by architecture name, in the order offered to users.
FAMILIES: dict[str, FamilyEntry] = {}


def register_family(
    name: str,
    module: str,
    factory: str,
    *,
    requires: tuple[str, ...] = (),
    missing: str = FamilyEntry.missing,
) -> None:
    """Make the family ``module.factory`` available as architecture ``name``."""
    FAMILIES[name] = FamilyEntry(module, factory, requires, missing)


def _choices() -> str:
    names = [repr(n) for n in FAMILIES]
    return " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def model_family(name: str) -> ModelFamily:
    """The model family registered as ``name`` (``mlp``, ``ridge``, ``lightgbm``,
    ``mlp_ensemble``, ``auto``;
    ``gru`` with the torch extra).

    Raises
    ------
    ConfigurationError
        If no family has that name, or its framework is not installed.
    """
    entry = FAMILIES.get(name)
    if entry is None:
        raise ConfigurationError(f"Unknown architecture {name!r}; choose {_choices()}.")
    try:
        for dependency in entry.requires:
            importlib.import_module(dependency)
        module = importlib.import_module(entry.module)
    except ImportError as e:
        raise ConfigurationError(entry.missing.format(missing=e.name)) from e
    return getattr(module, entry.factory)()


register_family(
    "mlp",
    "atb_strategies.training.mlp",
    "MlpFamily",
    requires=("skl2onnx", "sklearn"),
    missing="Training needs the train extra ({missing} is missing): pip install -e '.[train]'.",
)
register_family(
    "gru",
    "atb_strategies.training.gru",
    "GruFamily",
    missing=(
        "Architecture 'gru' needs PyTorch: pip install -e '.[torch]' (torch==2.13.0, CPU build)."
    ),
)
register_family(
    "ridge",
    "atb_strategies.training.ridge",
    "RidgeFamily",
    requires=("sklearn",),
    missing="Training needs the train extra ({missing} is missing): pip install -e '.[train]'.",
)
register_family(
    "lightgbm",
    "atb_strategies.training.boosting",
    "LightgbmFamily",
    requires=("lightgbm", "onnxmltools"),
    missing=(
        "Architecture 'lightgbm' needs the train extra ({missing} is missing): "
        "pip install -e '.[train]'."
    ),
)
register_family(
    "mlp_ensemble",
    "atb_strategies.training.mlp",
    "MlpEnsembleFamily",
    requires=("skl2onnx", "sklearn"),
    missing="Training needs the train extra ({missing} is missing): pip install -e '.[train]'.",
)
register_family(
    "auto",
    "atb_strategies.training.auto",
    "AutoFamily",
    requires=("sklearn", "skl2onnx"),
    missing="Training needs the train extra ({missing} is missing): pip install -e '.[train]'.",
)
