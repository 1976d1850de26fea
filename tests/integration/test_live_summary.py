"""The end of an ``atb live`` session (issue 20 item 4): ``summary.json`` beside the journal (the
book and a block per symbol) and ``chart.png`` plus ``chart_<SYMBOL>.png``, from a 3-symbol paper
session on the offline demo exchange in lockstep (the market clock steps only once every feed
has read its candles, never with wall time)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import PORTFOLIO_SYMBOLS, PORTFOLIO_VERSION, run_atb

SYMBOLS = list(PORTFOLIO_SYMBOLS)
V = PORTFOLIO_VERSION
BARS = 5


@pytest.fixture
def session(portfolio_registry: Path, tmp_path: Path) -> tuple[Any, Path]:
    done = run_atb(
        [
            *("live", "ml_basic", "--symbols", ",".join(SYMBOLS), "--exchange", "loopback"),
            *("--demo-clock", "lockstep", "--paper", "--max-bars", str(BARS)),
            "--backfill-bars",
            "100",
            "--long-threshold",
            "-1",  # every symbol enters on its first live bar
            "--position-size",
            "0.2",
            "--registry",
            str(portfolio_registry),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done, tmp_path / "out" / "live"


def _book_lines(stdout: str) -> list[dict[str, float]]:
    rows = []
    for line in stdout.splitlines():
        found = re.match(r"^\S+ \S+ BOOK value=(\S+) pnl=(\S+)", line)
        if found:
            rows.append({"value": float(found[1]), "pnl": float(found[2])})
    return rows


@pytest.mark.slow
def test_paper_session_writes_a_summary_whose_symbols_add_up_to_the_book(session):
    done, folder = session
    summary = json.loads((folder / "summary.json").read_text())
    assert f"summary: {Path('out/live/summary.json')}" in done.stdout
    book, symbols = summary["book"], summary["symbols"]
    assert list(symbols) == SYMBOLS
    # the per-symbol P&L (fills and position, net of fees) adds up to the book's
    assert sum(s["pnl"] for s in symbols.values()) == pytest.approx(book["pnl"], abs=1e-6)
    assert book["pnl"] == pytest.approx(book["end_value"] - book["start_value"], abs=1e-9)
    assert book["fees_paid"] == pytest.approx(sum(s["fees_paid"] for s in symbols.values()))
    assert book["fees_paid"] > 0
    # the book agrees with the status block's BOOK lines, one per live bar
    lines = _book_lines(done.stdout)
    assert book["bars"] == len(lines) == BARS
    assert book["end_value"] == pytest.approx(lines[-1]["value"], abs=0.01)
    assert book["pnl"] == pytest.approx(lines[-1]["pnl"], abs=0.01)
    values = np.array([book["start_value"], *(r["value"] for r in lines)])
    drawdown = float(np.max(1 - values / np.maximum.accumulate(values)))
    assert book["max_drawdown"] == pytest.approx(drawdown, abs=1e-5)
    for name, block in symbols.items():
        assert block["bars"] == BARS
        assert block["model_key"] == f"{name}/basic@{V}"
        assert 0 < block["exposure"] <= 1  # entered on a live bar, held from then
        assert block["pnl"] != 0
        if block["last_position"] == 0:  # flat at the end: its P&L is its closed trades'
            assert block["trades"] > 0
            assert block["pnl"] == pytest.approx(block["closed_pnl"], abs=1e-6)
        assert block["guards_fired"] == {}  # no guard asked for
    assert book["trades"] == sum(s["trades"] for s in symbols.values())


@pytest.mark.slow
def test_paper_session_draws_the_book_and_each_symbol(session):
    _, folder = session
    for name in ["chart.png", *(f"chart_{s}.png" for s in SYMBOLS)]:
        data = (folder / name).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 10_000, name
