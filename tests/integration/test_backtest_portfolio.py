"""``atb backtest --symbols`` and ``run_portfolio_backtest`` (issue 20 item 5): one cerebro,
one account over several symbols, the book's summary and a block per symbol, trades with a
symbol column, a chart per symbol, and bad input refused before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from atb_strategies.backtest.portfolio import SYMBOL_KEYS, run_portfolio_backtest
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.strategies.ml_basic import MlBasic
from tests.conftest import RICH_FEATURES, synthetic_candles
from tests.integration.test_asof import folds  # noqa: F401  (a module fixture: trained folds)

V = "2026-01-01_1h_v1"


@pytest.fixture
def registry(make_bundle, tmp_path: Path) -> Path:
    """BTCUSDT and ETHUSDT basic models (different weights), BTCETH none."""
    make_bundle(symbol="BTCUSDT", features=RICH_FEATURES[:3], seed=3, version=V)
    make_bundle(symbol="ETHUSDT", features=RICH_FEATURES[:3], seed=5, version=V)
    return tmp_path / "models"


def atb(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "atb_strategies.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def _frames() -> dict[str, pd.DataFrame]:
    return {
        "BTCUSDT": synthetic_candles(700, seed=1),
        "ETHUSDT": synthetic_candles(700, seed=2).iloc[60:],  # starts later
    }


def test_one_account_over_two_symbols_adds_up(registry):
    frames = _frames()
    result = run_portfolio_backtest(
        frames, MlBasic, timeframe="1h", registry=str(registry), long_threshold=0.0
    )
    s = result.summary
    assert [d._name for d in result.cerebro.datas] == ["BTCUSDT", "ETHUSDT"]  # one cerebro
    assert s["account_currency"] == "USDT"
    blocks = s["symbols"]
    assert list(blocks) == ["BTCUSDT", "ETHUSDT"]
    assert blocks["BTCUSDT"]["model_key"] == f"BTCUSDT/basic@{V}"
    assert blocks["ETHUSDT"]["model_key"] == f"ETHUSDT/basic@{V}"
    for block in blocks.values():
        assert set(block) == set(SYMBOL_KEYS)
        assert block["trades"] > 0
    # each symbol's P&L (realised and open, net of fees) adds up to the book's
    total = sum(b["pnl"] for b in blocks.values())
    assert total == pytest.approx(s["end_value"] - s["start_value"], rel=1e-9, abs=1e-6)
    assert sum(b["trades"] for b in blocks.values()) == s["trades"] == len(result.trades)
    assert {t["symbol"] for t in result.trades} == set(frames)
    # the later symbol has fewer bars; its warm-up bars have no prediction
    assert blocks["ETHUSDT"]["bars"] == blocks["BTCUSDT"]["bars"] - 60
    min_bars = result.strategy.predictions[result.cerebro.datas[1]].bundle.pipeline.min_bars
    assert blocks["ETHUSDT"]["bars_without_prediction"] == min_bars - 1
    # buy-and-hold of the book: the equal-weight basket, each bought at its first bar
    opens = result.equity.index
    rets = [
        f["close"].reindex(opens).ffill().dropna().iloc[[0, -1]].pct_change().iloc[-1]
        for f in frames.values()
    ]
    assert s["buy_and_hold_return"] == pytest.approx(np.mean(rets), rel=1e-9)


def test_shared_cash_sizes_entries_on_the_whole_portfolio(registry):
    """position_size is a fraction of the whole account's value: with both symbols entering
    at full size the second entry cannot be funded while the first is held."""
    frames = _frames()
    result = run_portfolio_backtest(
        frames,
        MlBasic,
        timeframe="1h",
        registry=str(registry),
        long_threshold=0.0,
        position_size=0.45,
    )
    entries = [o for o in result.orders if o["role"] == "entry"]
    assert entries
    values = result.equity["value"]
    for o in entries[:20]:
        bar_value = float(values.asof(pd.Timestamp(o["time"]).tz_localize(None)))
        # size x price <= 45 % of the book's value (x confidence <= 1), never of one symbol's
        assert abs(o["size"]) * o["price"] <= 0.45 * bar_value * 1.05
    exposed = result.equity["invested"]
    assert exposed.max() > 0.45  # both symbols held at once from one account
    assert exposed.max() <= 1.0


@pytest.mark.parametrize(
    ("symbols", "words"),
    [
        (["BTCUSDT", "BTCUSDT"], "BTCUSDT more than once"),
        (["BTCUSDT", "SOLUSDT"], "no basic 1h model for SOLUSDT"),
        (["BTCUSDT", "ETHBTC"], "different currencies (BTCUSDT in USDT, ETHBTC in BTC)"),
    ],
)
def test_bad_symbol_lists_are_refused_before_any_work(registry, symbols, words, monkeypatch):
    import atb_strategies.backtest.portfolio as portfolio

    def no_candles(*a, **k):  # pragma: no cover - reached only if the check came too late
        raise AssertionError("candles were fed before the symbols were checked")

    monkeypatch.setattr(portfolio, "make_feed", no_candles)
    frames = {s: synthetic_candles(400, seed=i) for i, s in enumerate(symbols)}
    if len(set(symbols)) < len(symbols):
        with pytest.raises(ConfigurationError, match=words):
            portfolio.check_symbols(symbols, MlBasic, timeframe="1h", params={})
        return
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        run_portfolio_backtest(frames, MlBasic, timeframe="1h", registry=str(registry))


@pytest.mark.slow  # a whole multi-symbol CLI backtest: 13-18 s on a busy 2-core machine
def test_cli_symbols_synthetic_writes_book_and_per_symbol_reports(registry, tmp_path):
    out = tmp_path / "out"
    args = [
        "backtest",
        "ml_basic",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--synthetic",
        "--bars",
        "600",
        "--long-threshold",
        "0",
        "--registry",
        str(registry),
        "--out",
        str(out),
        "--no-progress",
    ]
    run = atb(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert "ml_basic on BTCUSDT,ETHUSDT 1h (one account)" in text
    assert "Account currency       USDT" in text
    assert "Per symbol" in text
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert f"{sym}/basic@{V}" in text
        assert (out / f"chart_{sym}.png").stat().st_size > 10_000
    assert (out / "chart.png").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["symbols"]) == ["BTCUSDT", "ETHUSDT"]
    pnl = sum(b["pnl"] for b in summary["symbols"].values())
    assert pnl == pytest.approx(summary["end_value"] - summary["start_value"], abs=1e-6)
    trades = pd.read_csv(out / "trades.csv")
    assert set(trades["symbol"]) == {"BTCUSDT", "ETHUSDT"}
    # each symbol its own seeded market (seed + i): different candles, different P&L
    assert summary["symbols"]["BTCUSDT"]["pnl"] != summary["symbols"]["ETHUSDT"]["pnl"]


@pytest.mark.slow  # a whole multi-symbol CLI backtest: 13-18 s on a busy 2-core machine
def test_cli_data_files_per_symbol(registry, tmp_path):
    btc, eth = tmp_path / "btc.csv", tmp_path / "eth.csv"
    frames = _frames()
    frames["BTCUSDT"].to_csv(btc, index_label="timestamp")
    frames["ETHUSDT"].to_csv(eth, index_label="timestamp")
    out = tmp_path / "out"
    args = ["backtest", "ml_basic", "--data", f"BTCUSDT={btc}", "--data", f"ETHUSDT={eth}"]
    args += ["--registry", str(registry), "--out", str(out), "--no-progress", "--no-baselines"]
    run = atb(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads((out / "summary.json").read_text())
    bars = {s: b["bars"] for s, b in summary["symbols"].items()}
    assert bars == {"BTCUSDT": 700, "ETHUSDT": 640}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--symbols", "BTCUSDT,ETHUSDT,SOLUSDT", "--synthetic"], "no basic 1h model for SOLUSDT"),
        (["--symbols", "BTCUSDT,ETHBTC", "--synthetic"], "different currencies"),
        (["--symbols", "BTCUSDT,BTCUSDT", "--synthetic"], "--symbols"),
        (["--symbols", "BTCUSDT,ETHUSDT", "--data", "BTCUSDT=x.csv"], "--data"),
    ],
)
def test_cli_refuses_bad_symbols_in_one_line(registry, tmp_path, extra, words):
    out = tmp_path / "out"
    run = atb(
        "backtest", "ml_basic", *extra, "--registry", str(registry), "--out", str(out), cwd=tmp_path
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert words in lines[0]
    assert "Traceback" not in run.stderr
    assert not out.exists()  # nothing was run or written


@pytest.mark.slow  # a whole multi-symbol CLI backtest: 13-18 s on a busy 2-core machine
def test_cli_one_symbol_in_symbols_is_the_single_symbol_backtest(registry, tmp_path):
    """``--symbols BTCUSDT`` prints exactly what ``--symbol BTCUSDT`` prints."""
    common = ["--synthetic", "--bars", "400", "--registry", str(registry), "--no-progress"]
    common += ["--no-baselines"]
    one = atb("backtest", "ml_basic", "--symbols", "BTCUSDT", *common, "--out", "a", cwd=tmp_path)
    ref = atb("backtest", "ml_basic", "--symbol", "BTCUSDT", *common, "--out", "b", cwd=tmp_path)
    assert one.returncode == ref.returncode == 0, one.stderr + ref.stderr
    assert one.stdout.replace("a/", "b/").replace("a\\", "b\\") == ref.stdout
    assert "Per symbol" not in ref.stdout


def test_a_traded_period_applies_to_every_symbol(registry):
    frames = _frames()
    result = run_portfolio_backtest(
        frames,
        MlBasic,
        timeframe="1h",
        registry=str(registry),
        long_threshold=0.0,
        start="2024-01-10",
        end="2024-01-25",
    )
    s = result.summary
    assert (s["start"], s["end"]) == ("2024-01-10 00:00:00", "2024-01-25 23:00:00")
    for block in s["symbols"].values():
        assert block["bars"] == s["bars"] == 16 * 24
        assert block["bars_without_prediction"] == 0  # the warm-up came before the start
    # bar times are close times: the first possible entry fills at the second bar's close
    assert min(t["opened"] for t in result.trades) > "2024-01-10T00:00:00"
    total = sum(b["pnl"] for b in s["symbols"].values())
    assert total == pytest.approx(s["end_value"] - s["start_value"], abs=1e-6)


def test_a_symbol_without_any_prediction_warns_once_with_why(registry, caplog):
    """A symbol whose every window spans a gap (gap_policy skip) predicts nothing: one warning
    naming its model and the reason, none for the symbol that predicted."""
    frames = _frames()
    eth = frames["ETHUSDT"]
    frames["ETHUSDT"] = eth[np.arange(len(eth)) % 8 != 0]  # a gap every 8 bars, windows of 16
    with caplog.at_level("WARNING", logger="atb_strategies.backtest.runner"):
        result = run_portfolio_backtest(
            frames, MlBasic, timeframe="1h", registry=str(registry), long_threshold=0.0
        )
    warned = [r.getMessage() for r in caplog.records if "made no prediction" in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"ETHUSDT/basic@{V} made no prediction")
    assert "gap" in warned[0]
    assert result.summary["symbols"]["ETHUSDT"]["trades"] == 0
    assert result.summary["symbols"]["BTCUSDT"]["trades"] > 0


def test_each_symbol_result_keeps_only_its_own_decisions(registry):
    result = run_portfolio_backtest(
        _frames(), MlBasic, timeframe="1h", registry=str(registry), long_threshold=0.0
    )
    assert {d["symbol"] for d in result.decisions} == {"BTCUSDT", "ETHUSDT"}
    for name, sub in result.symbols.items():
        assert sub.decisions and {d["symbol"] for d in sub.decisions} == {name}
        assert sub.strategy.decisions is sub.decisions
    assert sum(len(s.decisions) for s in result.symbols.values()) == len(result.decisions)


@pytest.mark.slow  # a whole multi-symbol CLI backtest: 13-18 s on a busy 2-core machine
def test_cli_symbols_honours_markers_and_writes_html_reports(registry, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import atb_strategies.backtest.report as report
    from atb_strategies.cli.main import cli

    seen: list[bool | None] = []
    real = report.plot_backtest

    def recording(*args, **kwargs):  # the real chart, and which markers it was asked for
        seen.append(kwargs.get("markers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "plot_backtest", recording)
    out = tmp_path / "out"
    args = ["backtest", "ml_basic", "--symbols", "BTCUSDT,ETHUSDT", "--synthetic", "--bars"]
    args += ["500", "--registry", str(registry), "--out", str(out), "--no-progress"]
    run = CliRunner().invoke(cli, [*args, "--markers", "--no-baselines"])
    assert run.exit_code == 0, run.output
    assert seen == [True, True, True]  # the book and each symbol
    for page in ("report.html", "report_BTCUSDT.html", "report_ETHUSDT.html"):
        assert f"report: {out / page} (interactive, works offline)" in run.stdout
        assert "Bokeh" in (out / page).read_text()[:2_000_000]
    assert "ETHUSDT/basic@" in (out / "report_ETHUSDT.html").read_text()


@pytest.mark.slow
def test_asof_symbol_reports_the_schedule_key_and_the_runner_s_version_switches(folds):  # noqa: F811
    """``version="asof"``: a symbol's block names the schedule (``SYM/type@asof``) and lists
    the bars where each version starts serving, exactly as the single-symbol backtest does."""
    from atb_strategies.backtest.runner import run_backtest

    market, registry, result = folds
    book = run_portfolio_backtest(
        {"BTCUSDT": market},
        MlBasic,
        timeframe="1h",
        registry=registry,
        version="asof",
        long_threshold=0.0,
    )
    one = run_backtest(
        market,
        MlBasic,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=registry,
        version="asof",
        long_threshold=0.0,
    )
    block = book.summary["symbols"]["BTCUSDT"]
    assert block["model_key"] == one.summary["model_key"] == "BTCUSDT/basic@asof"
    switches = block["version_switches"]
    assert switches == one.summary["version_switches"]
    assert [s["version"] for s in switches] == [
        f"BTCUSDT/basic@{r.version}" for r in result.results
    ]


@pytest.mark.slow
def test_a_guard_is_shaded_on_the_chart_of_the_symbol_it_fired_on():
    """The shipped model with a 30-day age limit on two feeds: each symbol's chart shades
    exactly the bars its own decisions were guarded on."""
    from atb_strategies.backtest.chart_data import chart_data
    from atb_strategies.data.synthetic import generate_ohlcv

    shipped = str(Path(__file__).resolve().parents[2] / "models")
    frames = {
        "BTCUSDT": generate_ohlcv(1500, timeframe="1h", seed=3, start="2024-09-01"),
        "ETHUSDT": generate_ohlcv(1500, timeframe="1h", seed=4, start="2024-09-01"),
    }
    result = run_portfolio_backtest(
        frames,
        MlBasic,
        timeframe="1h",
        registry=shipped,
        symbol="BTCUSDT",  # the shipped BTCUSDT model on both feeds
        long_threshold=0.0003,
        max_model_age="30d",
        age_action="no_entries",
    )
    for name, sub in result.symbols.items():
        guarded = {
            pd.Timestamp(d["bar"]).tz_localize(None) - pd.Timedelta("1h")
            for d in result.decisions
            if d["symbol"] == name and (d.get("reason") or "").startswith("model older")
        }
        assert guarded, name
        shaded = chart_data(sub, frames[name]).states["model-age guard fired"]
        index = sub.equity.index
        assert set(index[shaded]) == guarded & set(index)
