"""Every example script runs offline and prints what it promises."""

from __future__ import annotations

import re
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
            "PYTHONPATH": str(REPO),  # this checkout's package, whatever is installed
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


def test_example_stocks_daily_trains_with_a_calendar_and_filters_an_sma_cross(
    tmp_path: Path,
) -> None:
    out = run_example("stocks_daily.py", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "daily bars 2017-01-03 .. 2024-12-31 on the XNYS calendar" in out
    assert "trained: ACME/basic@" in out and "sequence_length 30" in out
    first = re.search(r"first prediction at bar (\d+) of (\d+); predicted on ([\d.]+) %", out)
    assert first, out
    assert int(first[1]) < 60 and float(first[3]) >= 98.0
    crosses = re.search(
        r"SMA crosses up: (\d+), bought when the model agreed: (\d+), vetoed: (\d+)", out
    )
    assert crosses and int(crosses[1]) == int(crosses[2]) + int(crosses[3]) and int(crosses[2]) > 0
    sizes = re.search(r"entry sizes \(whole shares\): \[([\d, ]+)\]", out)
    assert sizes and all(int(s) > 0 for s in sizes[1].split(","))
    assert (
        (tmp_path / "run" / "ACME.csv")
        .read_text()
        .startswith("Date,Open,High,Low,Close,Adj Close,Volume")
    )


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
        "stocks_daily.py",
    }
    assert script in covered, f"examples/{script} has no test"
