"""``atb train model``, ``atb models promote|rollback|prune|compare`` and ``atb backtest`` on a
registry trained for real (the console script in a subprocess, and the click group in-process).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from atb_strategies.bundle.jsonio import read_json
from atb_strategies.cli.main import cli
from atb_strategies.data.sources import load_candles
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.registry import ModelRegistry

SYMBOL = "ETHUSDT"
ATB = Path(sys.executable).with_name("atb")
SMALL = ["--synthetic", "--bars", "3000", "--sequence-length", "24", "--force-promote"]
REGISTERED = re.compile(
    r"^registered (\w+)/(\w+)@(\d{4}-\d{2}-\d{2}_1h_v(\d+)) at (\S+)( \(latest\))?$"
)

pytestmark = pytest.mark.slow  # trains, runs the examples or runs live sessions


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No ATB_* variables, ./atb.toml or ./models leak into the commands."""
    work = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith("ATB_"):
                mp.delenv(var)
        mp.chdir(work)
        yield work


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _registered(output: str) -> re.Match:
    """The ``registered ...`` line (first on stdout; on stderr with ``--json``)."""
    found = [m for m in map(REGISTERED.match, output.splitlines()) if m is not None]
    assert len(found) == 1, output[:500]
    return found[0]


@dataclass
class Trained:
    registry: Path
    v1: str
    v2: str
    console: subprocess.CompletedProcess
    no_promote: Result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, isolated: Path) -> Trained:
    """v1 by the real console script (latest, with backtest); v2 in-process, not promoted."""
    registry = tmp_path_factory.mktemp("cli") / "registry"
    assert ATB.is_file(), f"console script not installed at {ATB}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATB_")}
    args = [*SMALL, "--epochs", "2", "--json", "--registry", str(registry)]
    console = subprocess.run(
        [str(ATB), "train", "model", SYMBOL, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=isolated,
        timeout=180,
    )
    assert console.returncode == 0, console.stderr[-3000:]
    v1 = _registered(console.stderr).group(3)
    no_promote = run(
        "train", "model", SYMBOL, *SMALL, "--epochs", "1", "--no-promote", "--no-backtest",
        "--json", "--registry", str(registry),
    )  # fmt: skip
    assert no_promote.exit_code == 0, no_promote.output
    v2 = _registered(no_promote.stderr).group(3)
    return Trained(registry, v1, v2, console, no_promote)


@pytest.fixture
def registry(trained: Trained, tmp_path: Path) -> Path:
    """A private copy of the trained registry: v1 (latest) and v2."""
    dst = tmp_path / "registry"
    shutil.copytree(trained.registry, dst, symlinks=True)
    return dst


def _latest(registry: Path, model_type: str = "basic") -> str | None:
    return RegistryLayout(registry).read_latest(SYMBOL, model_type)


# ---------------------------------------------------------------- atb train model


def test_atb_train_model_with_synthetic_data_registers_latest_and_prints_metrics(
    trained: Trained,
) -> None:
    m = _registered(trained.console.stderr)
    assert (m.group(1), m.group(2), m.group(4)) == (SYMBOL, "basic", "1")
    path = Path(m.group(5))
    assert m.group(6) == " (latest)"
    assert path == trained.registry / SYMBOL / "basic" / trained.v1
    assert _latest(trained.registry) == trained.v1

    body = json.loads(trained.console.stdout)  # --json: stdout is the JSON document only
    assert (body["version"], body["path"], body["promoted"]) == (trained.v1, str(path), True)
    assert trained.console.stderr.strip().splitlines()[-1] == f"verdict: {body['verdict']}"
    metrics = read_json(path / "metrics.json")
    assert body["test"] == metrics["test"]
    assert body["backtest"] == metrics["backtest"]
    assert 0 <= body["export_parity"] <= 1e-4
    assert body["export_parity"] == metrics["export_parity_max_abs_diff"]

    log = trained.console.stderr
    assert "epoch 1/2" in log and "epoch 2/2" in log
    assert "export parity" in log and "causality check" in log
    data = read_json(path / "metadata.json")["training"]["data"]
    assert data["source"] == "synthetic market (seed 0, 3000 bars)"
    assert data["rows"] == 3000
    assert ModelRegistry(trained.registry).select_bundle(SYMBOL, "basic").version == trained.v1


def test_atb_train_model_with_no_promote_registers_without_moving_latest(
    trained: Trained,
) -> None:
    m = _registered(trained.no_promote.stderr)
    assert m.group(6) is None
    assert m.group(4) == "2"
    body = json.loads(trained.no_promote.stdout)
    assert body["backtest"] is None
    assert "backtest" not in read_json(Path(m.group(5)) / "metrics.json")
    assert _latest(trained.registry) == trained.v1


def test_atb_train_model_with_data_file_and_dates_trains_on_that_slice(
    tmp_path: Path,
) -> None:
    csv = tmp_path / "candles.csv"
    generate_ohlcv(3200, seed=4).to_csv(csv)
    registry = tmp_path / "registry"

    result = run(
        "train", "model", SYMBOL, "--data", str(csv), "--start-date", "2024-01-03",
        "--end-date", "2024-04-30", "--sequence-length", "24", "--epochs", "1",
        "--no-backtest", "--registry", str(registry),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    meta = read_json(Path(_registered(result.stdout).group(5)) / "metadata.json")
    data = meta["training"]["data"]
    assert data["source"] == str(csv)
    assert (data["first_bar"], data["last_bar"]) == ("2024-01-03 00:00:00", "2024-04-30 23:00:00")
    assert data["rows"] == (31 - 2 + 29 + 31 + 30) * 24


def test_atb_train_model_with_too_few_bars_exits_1_and_registers_nothing(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"

    result = run(
        "train", "model", SYMBOL, "--synthetic", "--bars", "400", "--sequence-length", "24",
        "--registry", str(registry),
    )  # fmt: skip

    assert result.exit_code == 1
    assert "error: ConfigurationError:" in result.stderr
    assert "Train on a longer period" in result.stderr
    assert ModelRegistry(registry).list_bundles() == []
    assert not (registry / SYMBOL / "basic" / ".versions").exists()


def test_atb_train_model_with_data_and_synthetic_exits_1(tmp_path: Path) -> None:
    csv = tmp_path / "candles.csv"
    generate_ohlcv(50, seed=1).to_csv(csv)

    result = run("train", "model", SYMBOL, "--data", str(csv), "--synthetic")

    assert result.exit_code == 1
    assert "exactly one of --data PATH or --synthetic" in result.stderr


def test_atb_train_model_with_sentiment_type_trains_on_sentiment_column(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "registry"

    result = run(
        "train", "model", SYMBOL, "--model-type", "sentiment", *SMALL, "--epochs", "2",
        "--no-backtest", "--registry", str(registry),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    m = _registered(result.stdout)
    assert m.group(2) == "sentiment"
    bundle = ModelRegistry(registry).select_bundle(SYMBOL, "sentiment", "1h")
    schema = read_json(bundle.directory / "feature_schema.json")
    assert "sentiment" in schema["columns"]
    from_sentiment = [f["name"] for f in schema["features"] if f["source"] == ["sentiment"]]
    assert from_sentiment == ["sentiment", "sentiment_change"]
    meta = read_json(bundle.directory / "metadata.json")
    assert meta["training"]["data"]["source"].endswith("; sentiment: synthetic demo index")
    # Its z-score is fitted on the training rows of the aligned sentiment column only.
    frame = load_candles(None, True, "1h", 3000, 0, need_sentiment=True)
    train = frame["sentiment"].to_numpy(np.float64)[: int(0.7 * len(frame))]
    [feature] = [f for f in schema["features"] if f["name"] == "sentiment"]
    zscore = feature["transforms"][-1]
    assert zscore["op"] == "zscore"
    assert zscore["mean"] == pytest.approx(train.mean(), rel=1e-9, abs=1e-12)
    assert zscore["std"] == pytest.approx(train.std(), rel=1e-9)


# ---------------------------------------------------------------- atb models compare


def test_atb_models_compare_with_trained_versions_shows_rmse_per_version(
    trained: Trained,
) -> None:
    result = run("models", "compare", SYMBOL, "basic", "--registry", str(trained.registry))

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    for column in ("VERSION", "LATEST", "TEST PERIOD", "RMSE", "RMSE(last)", "MAE", "DIR.ACC"):
        assert column in header
    assert "B&H RETURN" in header and "BT RETURN" in header
    assert [r.split()[0] for r in rows] == [trained.v1, trained.v2]
    for row, version in zip(rows, (trained.v1, trained.v2), strict=True):
        metrics = read_json(trained.registry / SYMBOL / "basic" / version / "metrics.json")
        cells = row.split()
        is_latest = cells[1] == "*"
        assert is_latest == (version == trained.v1)
        rmse, rmse_last, mae = cells[3:6] if is_latest else cells[2:5]
        assert rmse == f"{metrics['test']['model']['rmse']:.4g}"
        assert rmse_last == f"{metrics['test']['baseline_last_close']['rmse']:.4g}"
        assert mae == f"{metrics['test']['model']['mae']:.4g}"
        bh = cells[-2]
        if "backtest" in metrics:
            assert bh == f"{100 * metrics['backtest']['buy_and_hold_return']:.2f}"  # percent
        else:
            assert cells[-3:] == ["-", "-", "-"]


def test_atb_models_compare_with_unknown_type_reports_no_versions(trained: Trained) -> None:
    result = run("models", "compare", SYMBOL, "sentiment", "--registry", str(trained.registry))

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"no versions for {SYMBOL}/sentiment"


# ---------------------------------------------------------------- promote / rollback / prune


def test_atb_models_promote_and_rollback_with_trained_versions_move_latest(
    trained: Trained, registry: Path
) -> None:
    v1, v2 = trained.v1, trained.v2

    promoted = run("models", "promote", SYMBOL, "basic", v2, "--registry", str(registry))
    assert promoted.exit_code == 0, promoted.output
    assert promoted.stdout.strip() == f"{SYMBOL}/basic: latest {v1} -> {v2}"
    assert _latest(registry) == v2

    back = run("models", "rollback", SYMBOL, "basic", "--registry", str(registry))
    assert back.exit_code == 0, back.output
    assert back.stdout.strip() == f"{SYMBOL}/basic: latest {v2} -> {v1}"
    assert _latest(registry) == v1

    again = run("models", "rollback", SYMBOL, "basic", "--registry", str(registry))
    assert again.exit_code == 1
    assert "error: RegistryError:" in again.stderr
    assert "no earlier 'latest'" in again.stderr
    assert _latest(registry) == v1


def test_atb_models_promote_with_unknown_version_exits_1_listing_versions(
    trained: Trained, registry: Path
) -> None:
    result = run(
        "models", "promote", SYMBOL, "basic", "2020-01-01_1h_v9", "--registry", str(registry)
    )

    assert result.exit_code == 1
    assert "error: ModelNotFoundError:" in result.stderr
    assert trained.v1 in result.stderr and trained.v2 in result.stderr
    assert _latest(registry) == trained.v1


def test_atb_models_promote_with_corrupt_version_exits_1_and_keeps_latest(
    trained: Trained, registry: Path
) -> None:
    (registry / SYMBOL / "basic" / trained.v2 / "model.onnx").write_bytes(b"not a model")

    result = run("models", "promote", SYMBOL, "basic", trained.v2, "--registry", str(registry))

    assert result.exit_code == 1
    assert "error: BundleError:" in result.stderr
    assert _latest(registry) == trained.v1


def test_atb_models_prune_with_keep_one_never_removes_latest_nor_reuses_n(
    trained: Trained, registry: Path
) -> None:
    v1, v2 = trained.v1, trained.v2
    tdir = registry / SYMBOL / "basic"

    kept = run("models", "prune", SYMBOL, "basic", "--keep", "1", "--registry", str(registry))
    assert kept.exit_code == 0, kept.output
    assert kept.stdout.strip() == "removed 0 version(s)"  # v1 is latest, v2 the newest
    assert RegistryLayout(registry).versions(SYMBOL, "basic") == [v1, v2]

    assert run("models", "promote", SYMBOL, "basic", v2, "--registry", str(registry)).exit_code == 0
    pruned = run("models", "prune", SYMBOL, "basic", "--keep", "1", "--registry", str(registry))
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stdout.strip() == f"removed 1 version(s): {v1}"
    assert RegistryLayout(registry).versions(SYMBOL, "basic") == [v2]
    assert not [p for p in tdir.iterdir() if p.name.startswith(".deleted-")]
    assert _latest(registry) == v2

    refused = run("models", "prune", SYMBOL, "basic", "--keep", "0", "--registry", str(registry))
    assert refused.exit_code == 1
    assert "--keep" in refused.stderr and "x>=1" in refused.stderr

    fresh = run(
        "train", "model", SYMBOL, *SMALL, "--epochs", "1", "--no-backtest",
        "--registry", str(registry),
    )  # fmt: skip
    assert fresh.exit_code == 0, fresh.output
    assert _registered(fresh.stdout).group(4) == "3"


def test_atb_models_commands_with_missing_registry_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    result = run("models", "rollback", SYMBOL, "basic", "--registry", str(missing))

    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert not missing.exists()


# ---------------------------------------------------------------- atb backtest


def test_atb_backtest_with_trained_registry_writes_chart_trades_and_summary(
    trained: Trained, tmp_path: Path
) -> None:
    out = tmp_path / "report"

    result = run(
        "backtest", "ml_basic", "--synthetic", "--bars", "2000", "--symbol", SYMBOL,
        "--registry", str(trained.registry), "--out", str(out), "--no-progress",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert f"{SYMBOL}/basic@{trained.v1}" in result.stdout
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trades = json.loads((out / "trades.json").read_text())
    table = pd.read_csv(out / "trades.csv")
    assert len(table) == len(trades)
    assert {"opened", "closed", "pnl_net", "model_key"} <= set(table.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bars"] == 2000
    closed = [t for t in trades if t["exit_reason"] != "end_of_data"]  # open at the end: last
    assert summary["trades"] == len(closed) and trades[: len(closed)] == closed
    for key in ("total_return", "buy_and_hold_return", "max_drawdown", "exposure"):
        assert math.isfinite(summary[key]), key
    closes = generate_ohlcv(2000, seed=0)["close"]
    assert summary["buy_and_hold_return"] == pytest.approx(closes.iloc[-1] / closes.iloc[0] - 1)


def test_atb_train_model_with_no_edge_says_latest_did_not_move_in_one_line(tmp_path) -> None:
    registry = tmp_path / "registry"
    args = ["--synthetic", "--bars", "3000", "--sequence-length", "24", "--epochs", "1"]
    result = run("train", "model", SYMBOL, *args, "--no-backtest", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    lines = [x for x in result.stdout.splitlines() if x.startswith("verdict: baseline gate FAILED")]
    assert len(lines) == 1
    assert "latest not moved" in lines[0] and "--force-promote" in lines[0]
    shown = result.stdout.splitlines()  # registered, the test part's figures, the verdict
    assert len(shown) == 3 and shown[1].startswith("test part (") and shown[-1] == lines[0]
    assert "direction " in shown[1] and "RMSE " in shown[1]
    assert not (registry / SYMBOL / "basic" / "latest").exists()
    version = REGISTERED.match(result.stdout.splitlines()[0]).group(3)
    promoted = run("models", "promote", SYMBOL, "basic", version, "--registry", str(registry))
    assert promoted.exit_code == 0
    assert "warning:" in promoted.stderr and "baseline gate" in promoted.stderr
