"""A real ``atb sweep`` (serial, a few ml_basic cells on the synthetic market) reports the
overfitting statistics in results.csv, sweep.json and the printed ranking with a one-line
verdict, keeps each cell's per-bar returns, and ``--walk-forward`` picks a cell per fold."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.bundle.format import BundleMetadata, FeatureSchema, InputSpec, OutputSpec
from atb_strategies.cli.main import cli
from atb_strategies.evaluation.folds import make_folds
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.registry.writer import write_bundle
from atb_strategies.sweep import run_sweep
from atb_strategies.sweep.overfitting import sharpe_ratios
from atb_strategies.sweep.returns import decode_returns
from atb_strategies.sweep.store import CellStore
from tests.conftest import RICH_FEATURES, linear_onnx, synthetic_candles

pytestmark = pytest.mark.slow  # runs real backtests

VERSION = "2026-01-01_1h_v1"
BARS = 700
GRID = ["--grid", "long_threshold=0.0,0.001,0.003", "--grid", "stop_loss=0.01,0.03"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("sweepstats") / "models"
    meta = BundleMetadata(
        symbol="BTCUSDT",
        model_type="basic",
        timeframe="1h",
        version=VERSION,
        input=InputSpec("features", "float32", 16, 3),
        output=OutputSpec("log_return", 1, "prediction", {}, None),
        model_sha256=None,
        created_at="2026-01-01T00:00:00+00:00",
        framework="onnx-test",
        raw={},
    )
    write_bundle(
        root, meta, FeatureSchema(16, tuple(RICH_FEATURES[:3])), linear_onnx(16, 3, seed=0)
    )
    return str(root)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweepdata") / "BTCUSDT.csv"
    synthetic_candles(BARS, seed=7).rename_axis("timestamp").to_csv(path)
    return path


def _args(registry: str, data_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        "ml_basic",
        "--data",
        str(data_file),
        "--registry",
        registry,
        "--model-version",
        VERSION,
        *GRID,
        "--commission",
        "0.0005",
        "--executor",
        "serial",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def swept(registry, data_file, tmp_path_factory):
    """6 cells with --walk-forward (200 train bars, 100 test bars)."""
    out = tmp_path_factory.mktemp("sweepout")
    args = _args(registry, data_file, out, "--walk-forward", "--train-bars", "200")
    result = CliRunner().invoke(cli, [*args, "--test-bars", "100"])
    assert result.exit_code == 0, result.output
    return out, result.output


def _returns(out: Path, cells: list[str]) -> pd.DataFrame:
    store = CellStore(out)
    return pd.DataFrame({c: decode_returns(store.read(c)["returns"]) for c in cells})


def test_sweep_keeps_each_cells_per_bar_returns_matching_its_result(swept):
    out, _ = swept
    csv = pd.read_csv(out / "results.csv")
    returns = _returns(out, list(csv["cell"]))
    assert returns.shape == (int(csv["bars"].iloc[0]), 6)
    compounded = (1 + returns).prod() - 1
    np.testing.assert_allclose(compounded.to_numpy(), csv["total_return"].to_numpy(), atol=1e-9)


def test_results_csv_sweep_json_and_ranking_carry_the_statistics(swept):
    out, output = swept
    csv = pd.read_csv(out / "results.csv")
    assert {"dsr", "beats_benchmark"} <= set(csv.columns)
    assert csv["dsr"].between(0, 1).all()
    summary = json.loads((out / "sweep.json").read_text())
    stats = summary["overfitting"]
    assert stats["trials"] == 6 and stats["bars"] == BARS
    best = summary["best"][0]["cell"]
    assert stats["best"] == best
    # the DSR of the best cell is its row's dsr, against the spread of the 6 cells' Sharpes
    assert stats["deflated_sharpe"] == pytest.approx(float(csv.set_index("cell").at[best, "dsr"]))
    sharpes = sharpe_ratios(_returns(out, list(csv["cell"])))
    assert stats["sharpe_variance"] == pytest.approx(np.var(sharpes, ddof=1))
    assert 0 <= stats["pbo"] <= 1 and 0 <= stats["spa_pvalue"] <= 1
    assert stats["survives"] == (stats["deflated_sharpe"] >= 0.95 and stats["spa_pvalue"] < 0.05)
    verdicts = [line for line in output.splitlines() if line.startswith("verdict: ")]
    assert verdicts == [f"verdict: {stats['verdict']}"]
    assert "survive" in verdicts[0] and "over 6 trials" in verdicts[0]
    header = next(line for line in output.splitlines() if line.split()[:1] == ["rank"])
    assert header.split()[-1] == "dsr"


def test_sweep_writes_a_report_html_with_every_cell_the_verdict_and_the_walk_forward(swept):
    out, output = swept
    page = (out / "report.html").read_text()
    assert f"report:  {out / 'report.html'}" in output
    assert not re.search(r"<script[^>]+src=", page)  # bokeh inlined: works offline
    for cell in pd.read_csv(out / "results.csv")["cell"]:
        assert cell in page
    assert "Is the best cell luck?" in page and "over 6 trials" in page
    wf = json.loads((out / "sweep.json").read_text())["walk_forward"]
    assert "Walk-forward selection" in page
    for fold in wf["folds"]:
        assert f"{fold['test_from'][:16]} .. {fold['test_to'][:16]}" in page


def test_walk_forward_trades_the_train_best_of_each_fold(swept):
    out, output = swept
    csv = pd.read_csv(out / "results.csv")
    returns = _returns(out, list(csv["cell"]))
    wf = json.loads((out / "sweep.json").read_text())["walk_forward"]
    folds = wf["folds"]
    assert len(folds) == (BARS - 200 + 99) // 100  # test periods of 100 bars from bar 200
    stitched = []
    for k, fold in enumerate(folds):
        train = returns.iloc[k * 100 : k * 100 + 200]
        test = returns.iloc[200 + k * 100 : 300 + k * 100]
        assert fold["train_from"] == str(train.index[0])
        assert fold["test_from"] == str(test.index[0])
        assert fold["chosen"] == train.columns[int(np.argmax(sharpe_ratios(train)))]
        stitched.append(test[fold["chosen"]])
    oos = pd.concat(stitched)
    assert wf["out_of_sample"]["bars"] == len(oos) == BARS - 200
    assert wf["out_of_sample"]["total_return"] == pytest.approx((1 + oos).prod() - 1)
    best = wf["in_sample_best"]
    assert best["cell"] == json.loads((out / "sweep.json").read_text())["best"][0]["cell"]
    same_bars = returns[best["cell"]].iloc[200:]
    assert best["total_return"] == pytest.approx((1 + same_bars).prod() - 1)
    assert f"Walk-forward ({len(folds)} folds, best by sharpe" in output
    assert "In-sample best cell" in output


def test_resume_reads_the_returns_back_and_reports_the_same_statistics(swept, registry, data_file):
    out, _ = swept
    before = json.loads((out / "sweep.json").read_text())["overfitting"]
    result = CliRunner().invoke(cli, [*_args(registry, data_file, out), "--resume"])
    assert result.exit_code == 0, result.output
    assert "(0 ran, 6 resumed, 0 failed)" in result.output
    assert json.loads((out / "sweep.json").read_text())["overfitting"] == before


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--walk-forward", "--train-bars", "100"], "--test-bars"),
        (["--train-bars", "100", "--test-bars", "50"], "--walk-forward"),
        (
            ["--walk-forward", "--train-bars", "100", "--test-bars", "50", "--rank-by", "trades"],
            "--rank-by",
        ),
    ],
)
def test_walk_forward_options_are_checked_before_anything_runs(extra, words, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = CliRunner().invoke(cli, ["sweep", "ml_basic", "--synthetic", *extra])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert not (tmp_path / "out").exists()


def test_walk_forward_that_fits_no_fold_keeps_the_results_and_exits_1(
    registry, data_file, tmp_path
):
    args = _args(registry, data_file, tmp_path, "--walk-forward", "--train-bars", "5000")
    result = CliRunner().invoke(cli, [*args, "--test-bars", "100"])
    assert result.exit_code == 1
    assert "error: walk-forward selection: No fold fits" in result.output
    assert (tmp_path / "results.csv").exists()
    assert "verdict: " in result.output


def test_run_sweep_in_python_with_a_failed_cell_and_walk_forward(registry):
    """The failed cell is no trial (no returns, no dsr); walk_forward takes make_folds."""
    market = synthetic_candles(400, seed=3)
    grid = {"sequence_length": [None, 99], "stop_loss": [0.01, 0.03]}  # 99: fails at run time
    folds = functools.partial(make_folds, train_bars=150, test_bars=50, embargo=0, horizon=0)
    results = run_sweep(
        "ml_basic",
        market,
        grid,
        params={"registry": registry},
        versions=[VERSION],
        executor="serial",
        walk_forward=folds,
    )
    failed = results["error"].notna()
    assert failed.sum() == 2
    assert results.loc[failed, "dsr"].isna().all()
    assert results.loc[~failed, "dsr"].notna().all()
    stats = results.attrs["overfitting"]
    assert stats["trials"] == 2 and stats["verdict"]
    wf = results.attrs["walk_forward"]
    assert len(wf["folds"]) == 5
    assert {f["chosen"] for f in wf["folds"]} <= set(results.loc[~failed, "cell"])


def test_run_sweep_refuses_walk_forward_by_a_metric_returns_cannot_give(registry):
    ran: list[str] = []
    with pytest.raises(ConfigurationError, match="rank_by='trades'"):
        run_sweep(
            "ml_basic",
            synthetic_candles(100, seed=3),
            {"stop_loss": [0.01]},
            params={"registry": registry},
            executor="serial",
            rank_by="trades",
            walk_forward=lambda n: [],
            on_cell=lambda record: ran.append(record["cell"]),
        )
    assert ran == []
