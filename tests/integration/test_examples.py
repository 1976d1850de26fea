"""Every example script runs offline and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # trains, runs the examples or runs live sessions

EXAMPLES = REPO / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            "PATH": "/usr/bin:/bin",
            "MPLBACKEND": "Agg",
            "ATB_MODEL_REGISTRY_PATH": str(REPO / "models"),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_example_backtest_ml_basic_writes_summary_chart_and_trades(tmp_path: Path) -> None:
    out = run_example(
        "backtest_ml_basic.py", "--bars", "2500", "--out", str(tmp_path / "r"), cwd=tmp_path
    )
    assert "BTCUSDT/basic@" in out and "Total return" in out and "Buy & hold return" in out
    chart = tmp_path / "r" / "chart.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 20_000
    trades = (tmp_path / "r" / "trades.csv").read_text().splitlines()
    assert trades[0].startswith("symbol,model_key,opened,closed")
    assert len(trades) > 1


def test_example_plug_into_existing_setup_runs(tmp_path: Path) -> None:
    out = run_example("plug_into_existing_setup.py", cwd=tmp_path)
    assert "model: BTCUSDT/basic@" in out and "final value:" in out


def test_example_multi_symbol_uses_one_model_per_feed(tmp_path: Path) -> None:
    out = run_example("multi_symbol.py", cwd=tmp_path)
    assert "BTCUSDT: model BTCUSDT/sentiment@" in out
    assert "ETHUSDT: model ETHUSDT/sentiment@" in out


def test_example_sentiment_backtest_reads_csv(tmp_path: Path) -> None:
    out = run_example("sentiment_backtest.py", cwd=tmp_path)
    assert "sentiment.csv" in out and "ETHUSDT/sentiment@" in out


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_is_covered(script: str) -> None:
    covered = {
        "backtest_ml_basic.py",
        "plug_into_existing_setup.py",
        "multi_symbol.py",
        "sentiment_backtest.py",
        "paper_trade.py",
    }
    assert script in covered, f"examples/{script} has no test"
