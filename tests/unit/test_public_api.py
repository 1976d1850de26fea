"""The package's public surface: by role, complete, sorted, importable (httpx's exported-members
test), and cheap to import."""

from __future__ import annotations

import inspect
import subprocess
import sys

import atb_strategies
from atb_strategies import exceptions


def test_all_is_sorted_and_lists_every_public_name() -> None:
    assert atb_strategies.__all__ == sorted(atb_strategies.__all__)
    public = {n for n in dir(atb_strategies) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(atb_strategies, n))}
    assert public - modules == set(atb_strategies.__all__)


def test_all_exports_every_error_class() -> None:
    errors = {
        name
        for name, value in vars(exceptions).items()
        if isinstance(value, type) and issubclass(value, exceptions.AtbError)
    }
    assert errors <= set(atb_strategies.__all__)


def test_all_names_resolve_to_their_module_objects() -> None:
    from atb_strategies.indicators.prediction import MlPrediction
    from atb_strategies.strategies.ml_basic import MlBasic

    for name in atb_strategies.__all__:
        assert getattr(atb_strategies, name) is not None
    assert atb_strategies.MlBasic is MlBasic
    assert atb_strategies.MlPrediction is MlPrediction


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        atb_strategies.OnnxRunnerr  # noqa: B018
    except AttributeError as e:
        assert "OnnxRunnerr" in str(e)
    else:  # pragma: no cover
        raise AssertionError("no AttributeError")


def test_import_with_fresh_interpreter_loads_no_heavy_library() -> None:
    code = (
        "import sys, atb_strategies; "
        "print(sorted(m for m in ('backtrader', 'pandas', 'onnxruntime', 'ccxt') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_seed_import_paths_work() -> None:
    from atb_strategies.prediction.config import PredictionConfig
    from atb_strategies.prediction.engine import PredictionEngine
    from atb_strategies.prediction.models.registry import PredictionModelRegistry
    from atb_strategies.strategies.ml_basic import create_ml_basic_strategy

    assert PredictionEngine is atb_strategies.PredictionEngine
    assert PredictionConfig is atb_strategies.PredictionConfig
    assert issubclass(PredictionModelRegistry, atb_strategies.ModelRegistry)
    assert create_ml_basic_strategy is atb_strategies.create_ml_basic_strategy
