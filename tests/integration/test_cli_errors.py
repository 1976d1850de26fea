"""Every ``atb`` command with a bad value: exit 1, one line on stderr, no traceback, in the CLI's
own spelling (flags, not Python parameters)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from tests.conftest import synthetic_candles

BAD = [
    (["backtest", "ml_basic", "--synthetic", "--cash", "-100"], "--cash"),
    (["backtest", "ml_basic", "--synthetic", "--cash", "0"], "--cash"),
    (["backtest", "ml_basic", "--synthetic", "--commission", "5"], "--commission"),
    (["backtest", "ml_basic", "--synthetic", "--start-date", "2024-13-45"], "--start-date"),
    (["backtest", "ml_basic", "--synthetic", "--bars", "0"], "--bars"),
    (["backtest", "ml_basic", "--synthetic", "--gap-policy", "fill"], "--gap-policy"),
    (["backtest", "ml_basic", "--data", "no/such/file.csv"], "--data"),
    (["backtest", "ml_basic"], "--data"),
    (["backtest", "ml_magic", "--synthetic"], "ml_magic"),
    (["backtest", "ml_basic", "--synthetic", "--model-version", "2020-01-01_1h_v9"], "2020"),
    (["train", "model", "BTCUSDT", "--synthetic", "--horizon", "0"], "--horizon"),
    (["train", "model", "BTCUSDT", "--synthetic", "--end-date", "yesterday-ish"], "--end-date"),
    (["train", "model", "BTCUSDT", "--synthetic", "--architecture", "svm"], "--architecture"),
    (["data", "download", "BTCUSDT", "--start-date", "2024-02-30"], "--start-date"),
    (["live", "ml_basic", "--paper", "--cash", "0"], "--cash"),
    (["live", "ml_basic", "--paper", "--max-drawdown", "2"], "--max-drawdown"),
    (["live", "ml_basic"], "--paper"),
    (["live", "ml_basic", "--live"], "--i-understand-the-risks"),
    (["models", "show", "BTCUSDT", "nosuchtype"], "nosuchtype"),
    (["models", "prune", "BTCUSDT", "basic", "--keep", "0"], "--keep"),
    (["models", "promote", "BTCUSDT", "basic", "2020-01-01_1h_v9"], "2020-01-01_1h_v9"),
    (["models", "list", "--registry", "no/such/registry"], "no/such/registry"),
    (["nosuchcommand"], "nosuchcommand"),
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATB_MODEL_REGISTRY_PATH", raising=False)


@pytest.mark.parametrize(("args", "names"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_cli_with_bad_value_exits_1_with_one_line_naming_it(args, names):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert names in lines[0]
    assert "Traceback" not in result.output


def test_cli_with_gap_and_raise_policy_hints_in_flag_spelling(tmp_path):
    frame = synthetic_candles(900)
    frame.drop(frame.index[400]).to_csv(tmp_path / "gapped.csv")
    args = ["backtest", "ml_basic", "--data", str(tmp_path / "gapped.csv"), "--gap-policy"]
    result = CliRunner().invoke(cli, [*args, "raise", "--no-progress"])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "gap before" in line and "--gap-policy skip" in line and "'warn'" not in line
    assert "gap_policy" not in line
    assert CliRunner().invoke(cli, [*args, "skip", "--no-progress"]).exit_code == 0


def _atb() -> str:
    return str(Path(sys.executable).parent / "atb")


@pytest.mark.parametrize(
    "args",
    [
        ["backtest", "ml_basic", "--synthetic", "--start-date", "2024-13-45"],
        ["backtest", "ml_basic", "--synthetic", "--cash", "0"],
        ["models", "show", "BTCUSDT", "nosuchtype"],
    ],
)
def test_console_script_with_bad_value_prints_one_line_and_no_traceback(args):
    done = subprocess.run([_atb(), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_console_script_with_verbose_shows_the_traceback():
    done = subprocess.run(
        [_atb(), "-v", "models", "show", "BTCUSDT", "nosuchtype"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr
