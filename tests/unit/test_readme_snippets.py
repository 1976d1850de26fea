"""The README's Python snippets run verbatim (engine and manual bundle access)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from atb_strategies.features.schema import FeatureSpec
from tests.conftest import REPO, BundleFactory, synthetic_candles

FIVE_OHLCV = tuple(
    FeatureSpec(f"{c}_normalized", (c,), ({"op": "window_expanding_minmax"},))
    for c in ("close", "volume", "high", "low", "open")
)


def snippet(name: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- readme-test: {name} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no snippet {name!r}"
    return match.group(1)


def _run(code: str, cwd: Path, registry: Path) -> str:
    env = {"ATB_MODEL_REGISTRY_PATH": str(registry), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def registry_120x5(make_bundle: BundleFactory, tmp_path: Path) -> Path:
    make_bundle(features=FIVE_OHLCV, sequence_length=120, target="close_window_minmax")
    return tmp_path / "models"


def test_engine_snippet_runs_verbatim(registry_120x5: Path, tmp_path: Path) -> None:
    synthetic_candles(300).to_csv(tmp_path / "candles.csv")
    out = _run(snippet("engine"), tmp_path, registry_120x5).split()
    price, confidence, direction, key = float(out[0]), float(out[1]), int(out[2]), out[3]
    assert price > 0 and 0 <= confidence <= 1 and direction in (-1, 0, 1)
    assert key == "BTCUSDT/basic@2026-01-01_1h_v1"


def test_manual_snippet_runs_verbatim(registry_120x5: Path, tmp_path: Path) -> None:
    out = _run(snippet("manual"), tmp_path, registry_120x5)
    assert "BTCUSDT/basic@2026-01-01_1h_v1 1h latest" in out
    assert out.strip().splitlines()[-1].endswith("None")  # no price without a price context


@pytest.mark.realdata
def test_snippets_run_on_reference_bundles_and_real_data(
    shared_dir: Path, tmp_path: Path, real_candles
) -> None:
    registry = shared_dir / "reference-bundles" / "models"
    real_candles.iloc[-500:].to_csv(tmp_path / "candles.csv")
    out = _run(snippet("engine"), tmp_path, registry).split()
    assert out[3] == "BTCUSDT/basic@2025-10-30_12h_v1"
    assert 80_000 < float(out[0]) < 120_000  # a price in dollars, not a normalised value
    manual = _run(snippet("manual"), tmp_path, registry)
    assert "BTCUSDT/sentiment@2025-12-23_20h_v2 1h latest" in manual
