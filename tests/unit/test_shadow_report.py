"""``compare_books``: the champion-versus-challengers table from shadow rows."""

from __future__ import annotations

import pandas as pd
import pytest

from atb_strategies.live.shadow_log import compare_books, format_comparison


def _rows() -> pd.DataFrame:
    times = [f"2025-01-01T{h:02d}:00:00" for h in range(6)]
    rows = []
    for i, t in enumerate(times):
        # the champion's twin is one book; the model serving it changes after bar 3
        key = "BTCUSDT/basic@v1" if i < 3 else "BTCUSDT/basic@v3"
        rows.append(("champion", key, t, ["long", "flat"][i % 2], 100.0 + i, i // 2))
        rows.append(("shadow", "BTCUSDT/basic@v2", t, "long", 100.0 - i, 0))
    frame = pd.DataFrame(rows, columns=["role", "model_key", "time", "signal", "equity", "trades"])
    frame["symbol"] = "BTCUSDT"
    return frame


def test_compare_books_reports_each_model_over_its_own_bars():
    table = compare_books(_rows(), "1h").set_index(["role", "model_key"])
    v1 = table.loc[("champion", "BTCUSDT/basic@v1")]
    v3 = table.loc[("champion", "BTCUSDT/basic@v3")]
    shadow = table.loc[("shadow", "BTCUSDT/basic@v2")]
    assert (v1["bars"], v3["bars"], shadow["bars"]) == (3, 3, 6)
    assert v1["agreement"] == v3["agreement"] == 1.0  # the champion agrees with itself
    assert shadow["agreement"] == pytest.approx(3 / 6)  # always long; the champion alternates
    assert v1["total_return"] == pytest.approx(102 / 100 - 1)
    assert shadow["total_return"] == pytest.approx(95 / 100 - 1)
    assert shadow["max_drawdown"] == pytest.approx(1 - 95 / 100)
    assert v3["trades"] == 2


def test_format_comparison_prints_one_line_per_book_with_a_header():
    text = format_comparison(compare_books(_rows(), "1h")).splitlines()
    assert text[0].split()[:3] == ["role", "model", "bars"]
    assert len(text) == 4
    assert text[3].split()[:3] == ["shadow", "BTCUSDT/basic@v2", "6"]


def test_plot_books_writes_a_png(tmp_path):
    from atb_strategies.live.shadow_log import plot_books

    path = plot_books(_rows(), tmp_path / "shadow.png", "ml_basic BTCUSDT 1h")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
