"""The CLI starts light: importing it (and ``atb --help``) loads none of the heavy libraries.

Each check runs in a fresh interpreter and inspects ``sys.modules``: a behaviour, not a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "ccxt", "backtrader", "onnxruntime")


def loaded_after(code: str) -> list[str]:
    """The heavy top-level modules imported once ``code`` has run in a fresh interpreter."""
    probe = code + (
        f"\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_cli_main_loads_no_heavy_library():
    assert loaded_after("import atb_strategies.cli.main") == []


@pytest.mark.parametrize("args", [["--help"], ["live", "--help"], ["backtest", "--help"]])
def test_atb_help_loads_no_heavy_library(args):
    code = (
        "import contextlib, io\n"
        "from atb_strategies.cli.main import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        cli.main({args!r})\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
    )
    assert loaded_after(code) == []


def test_probe_sees_a_heavy_import():
    # the check above can fail: importing the live runner does load them
    assert set(loaded_after("import atb_strategies.live.runner")) >= {"backtrader", "ccxt"}


def test_cli_choices_match_the_training_registries() -> None:
    from atb_strategies.cli.options import ARCHITECTURES, RECIPES
    from atb_strategies.training.family import FAMILIES
    from atb_strategies.training.recipes import FEATURE_SETS

    assert list(ARCHITECTURES) == list(FAMILIES)
    assert list(RECIPES) == list(FEATURE_SETS)
