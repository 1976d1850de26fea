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
    # a bar's return belongs to the model that decided the bar before (v1 decided bar 2)
    assert v1["total_return"] == pytest.approx(103 / 100 - 1)
    assert v3["total_return"] == pytest.approx(105 / 103 - 1)
    assert shadow["total_return"] == pytest.approx(95 / 100 - 1)
    assert shadow["max_drawdown"] == pytest.approx(1 - 95 / 100)
    assert (v1["trades"], v3["trades"]) == (1, 1)  # 2 closed in all, none counted twice


def test_compare_books_with_latest_back_and_forth_credits_each_model_its_own_bars_only():
    equity = [100.0, 110.0, 99.0, 99.0, 99.0, 108.9]
    keys = ["v1", "v1", "v3", "v3", "v1", "v1"]  # v3 decided bars 2-3: 99 -> 99 -> 99
    frame = pd.DataFrame(
        {
            "symbol": "BTCUSDT",
            "role": "champion",
            "model_key": keys,
            "time": [f"2025-01-01T{h:02d}:00:00" for h in range(6)],
            "signal": "long",
            "equity": equity,
            "trades": [0, 0, 1, 1, 1, 2],
        }
    )
    table = compare_books(frame, "1h").set_index("model_key")
    # v1 earned +10 %, -10 % and +10 %: 1.1 * 0.9 * 1.1; v3's bars were flat
    assert table.loc["v1", "total_return"] == pytest.approx(1.1 * 0.9 * 1.1 - 1)
    assert table.loc["v3", "total_return"] == pytest.approx(0.0)
    assert (table.loc["v1", "trades"], table.loc["v3", "trades"]) == (2, 0)
    assert (table.loc["v1", "bars"], table.loc["v3", "bars"]) == (4, 2)


def test_read_shadow_csv_with_damage_says_which_line_and_drops_a_cut_last_line(tmp_path):
    from atb_strategies.exceptions import ConfigurationError
    from atb_strategies.live.shadow_log import read_shadow_csv

    good = _rows().assign(session="s1", close=1.0, predicted_return=0.0, confidence=0.5)
    good = good.assign(action="hold", position=0.0)
    path = tmp_path / "shadow.csv"
    good.to_csv(path, index=False)
    text = path.read_text().splitlines()
    path.write_text("\n".join([*text, text[-1][:20]]) + "\n")  # killed while writing
    assert len(read_shadow_csv(path)) == len(good)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",101.0,", ",abc,", 1)  # the equity of line 4
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigurationError, match="line 4 is damaged"):
        read_shadow_csv(path)
    path.write_text("")
    with pytest.raises(ConfigurationError, match="not a readable shadow.csv"):
        read_shadow_csv(path)


def test_format_comparison_prints_one_line_per_book_with_a_header():
    text = format_comparison(compare_books(_rows(), "1h")).splitlines()
    assert text[0].split()[:3] == ["role", "model", "bars"]
    assert len(text) == 4
    assert text[3].split()[:3] == ["shadow", "BTCUSDT/basic@v2", "6"]


def test_plot_books_writes_a_png(tmp_path):
    from atb_strategies.live.shadow_log import plot_books

    path = plot_books(_rows(), tmp_path / "shadow.png", "ml_basic BTCUSDT 1h")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_compare_books_with_a_model_that_served_only_the_last_bar_reports_it_without_return():
    frame = _rows()
    last = frame.index[frame["role"] == "champion"][-1]
    frame.loc[last, "model_key"] = "BTCUSDT/basic@v4"  # latest moved on the very last bar
    table = compare_books(frame, "1h").set_index("model_key")
    assert table.loc["BTCUSDT/basic@v4", "bars"] == 1
    assert table.loc["BTCUSDT/basic@v4", "total_return"] == 0.0


def test_a_cut_last_line_is_dropped_before_a_new_session_appends(tmp_path):
    from atb_strategies.live.shadow_log import _cut_partial_line

    path = tmp_path / "shadow.csv"
    path.write_text("a,b\n1,2\n3,")
    _cut_partial_line(path)
    assert path.read_text() == "a,b\n1,2\n"
    _cut_partial_line(path)  # a whole file is left alone
    assert path.read_text() == "a,b\n1,2\n"
