"""Sweeps fail closed (issue 17, items 13 and 14).

* A grid value the strategy would refuse is one error before any cell runs (Python: a
  ``ConfigurationError``; ``atb sweep``: one ``error:`` line, exit 1, nothing written).
* A sweep whose cells failed at run time keeps every cell, says how many failed and exits 1;
  ``--resume`` reruns only the failed ones.
* An entry threshold outside the range of the model's predicted returns is warned about, with
  that range, in the sweep and in ``atb backtest``.
* A script that calls ``run_sweep``/``run_tasks`` on the process pool without the
  ``if __name__ == "__main__":`` guard gets one ``ConfigurationError`` naming the guard instead
  of worker tracebacks and failed cells.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import backtrader as bt
import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.cli.main import cli
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.sweep import run_sweep
from atb_strategies.sweep.grid import check_grid_values, grid_value_problem
from atb_strategies.sweep.thresholds import threshold_warnings
from tests.conftest import REPO, BundleFactory, synthetic_candles

BARS = 300


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    make_bundle()  # BTCUSDT/basic@2026-01-01_1h_v1, 16 bars of 3 features
    return str(tmp_path / "models")


@pytest.fixture
def market() -> pd.DataFrame:
    return synthetic_candles(BARS, seed=7)


@pytest.fixture
def csv(market: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "candles.csv"
    market.rename_axis("timestamp").to_csv(path)
    return path


def _predicted_returns(market: pd.DataFrame, registry: str) -> pd.Series:
    """The model's predicted returns from a plain backtest (the reference for the range)."""
    result = run_backtest(market, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=registry)
    return result.predictions["predicted_return"].dropna()


# ------------------------------------------------------------ grid values, before any cell


@pytest.mark.parametrize(
    ("grid", "words"),
    [
        ({"long_threshold": ["abc"]}, "The 'long_threshold' parameter of MlBasic must be a number"),
        ({"stop_loss": [0.02, -0.01]}, "'stop_loss' parameter of MlBasic must be a fraction in"),
        ({"long_threshold": ["0.001;0.002"]}, "Separate grid values with commas"),
        ({"allow_shorts": ["maybe"]}, "must be true or false, like its default False"),
        ({"drift_window": [1.5]}, "must be an integer, like its default 168"),
        ({"age_action": ["ignore"]}, "must be one of 'warn', 'no_entries', 'flatten'"),
        ({"max_model_age": ["soon"]}, "must be a positive duration"),
        ({"gap_policy": ["skip", "ignore"]}, "'gap_policy' parameter of MlBasic must be one of"),
        ({"shadows": ["latest"]}, "'shadows' parameter of MlStrategy takes pinned versions"),
    ],
)
def test_run_sweep_with_a_value_the_strategy_refuses_raises_before_any_cell(
    grid, words, market, registry, tmp_path
):
    ran: list[dict] = []
    with pytest.raises(ConfigurationError, match=words) as caught:
        run_sweep(
            "ml_basic",
            market,
            grid,
            params={"registry": registry},
            executor="serial",
            out=tmp_path / "out",
            on_cell=ran.append,
        )
    name = next(iter(grid))
    assert str(caught.value).startswith(f"The grid value {name}=")
    assert ran == [] and not (tmp_path / "out").exists()


def test_run_sweep_with_a_bad_fixed_param_raises_in_python_spelling(market, registry):
    with pytest.raises(ConfigurationError, match="The 'position_size' parameter of MlBasic"):
        run_sweep(
            "ml_basic",
            market,
            {"long_threshold": [0.001]},
            params={"registry": registry, "position_size": 2.0},
            executor="serial",
        )


class _Plain(bt.Strategy):
    """A strategy without ``check_params``: only the types of its defaults are known."""

    params = (("period", 14), ("factor", 0.5), ("name", "x"), ("free", None), ("flag", True))


@pytest.mark.parametrize(
    ("name", "value", "refused"),
    [
        ("period", 20, False),
        ("period", 2.5, True),
        ("period", True, True),
        ("factor", 1, False),
        ("factor", "high", True),
        ("name", 3, True),
        ("free", "anything", False),
        ("flag", "yes please", True),
    ],
)
def test_grid_value_problem_without_check_params_compares_with_the_default_type(
    name, value, refused
):
    problem = grid_value_problem(_Plain, name, value)
    assert (problem is not None) == refused
    if refused:
        assert problem.startswith(f"The {name!r} parameter of _Plain must be")


def test_check_grid_values_with_valid_values_passes_and_names_the_first_bad_one():
    check_grid_values(MlBasic, {"long_threshold": [0.0, 0.01], "stop_loss": [0, 0.5]})
    with pytest.raises(ConfigurationError, match=r"take_profit=-1 cannot run"):
        check_grid_values(MlBasic, {"take_profit": [0.04, -1, -2]})


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("long_threshold=abc", "long_threshold=abc: The 'long_threshold' parameter of MlBasic"),
        ("stop_loss=-0.01", "stop_loss=-0.01: The 'stop_loss' parameter of MlBasic must be"),
        ("long_threshold=0.001;0.002", "Separate grid values with commas: NAME=V1,V2"),
    ],
)
def test_sweep_cli_with_a_refused_grid_value_exits_1_with_one_line_and_writes_nothing(
    option, words, csv, registry, tmp_path
):
    out = tmp_path / "out"
    args = ["sweep", "ml_basic", "--data", str(csv), "--registry", registry, "--grid", option]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for --grid: ")
    assert words in lines[0] and "--long-threshold" not in lines[0]
    assert not out.exists()


# ------------------------------------------------------------ cells that fail at run time


def test_sweep_cli_with_failed_cells_exits_1_says_how_many_and_resume_reruns_them(
    csv, registry, tmp_path
):
    out = tmp_path / "out"
    args = ["sweep", "ml_basic", "--data", str(csv), "--registry", registry, "--out", str(out)]
    # MlBasic accepts any sequence_length; its 16-bar model refuses 99 when the cell runs
    args += ["--grid", "sequence_length=16,99", "--grid", "stop_loss=0.01,0.02"]
    args += ["--executor", "serial", "--no-progress"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 1
    assert "4 cells (4 ran, 0 resumed, 2 failed)" in first.stdout
    assert "Best 2 by sharpe (the best of 2 cells" in first.stdout
    error = first.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 2 of 4 cells failed (first: ConfigurationError: MlBasic")
    assert "--resume" in error and str(out / "results.csv") in error
    csv_rows = pd.read_csv(out / "results.csv")
    assert csv_rows["error"].notna().sum() == 2 and len(csv_rows) == 4  # nothing lost
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["failed"] == 2 and summary["cells"] == 4

    again = CliRunner().invoke(cli, [*args, "--resume"])
    assert again.exit_code == 1
    assert "4 cells (2 ran, 2 resumed, 2 failed)" in again.stdout


def test_run_sweep_with_failed_cells_returns_every_cell_and_counts_them(market, registry):
    results = run_sweep(
        "ml_basic",
        market,
        {"sequence_length": [None, 99]},
        params={"registry": registry},
        executor="serial",
    )
    assert len(results) == 2 and results.attrs["failed"] == 1
    assert pd.isna(results["error"].iloc[0]) and "sequence_length=99" in results["error"].iloc[1]


# ------------------------------------------------------------ thresholds vs predictions


def test_run_sweep_with_thresholds_outside_the_predictions_warns_with_their_range(market, registry):
    returns = _predicted_returns(market, registry)
    above, below = float(returns.max()) + 1.0, float(returns.min()) - 1.0
    results = run_sweep(
        "ml_basic",
        market,
        {"long_threshold": [above, 0.0, below]},
        params={"registry": registry},
        executor="serial",
    )
    warnings = results.attrs["warnings"]
    high = f"long_threshold={above!r} is above every predicted return (max {returns.max():.4g})"
    low = f"long_threshold={below!r} is below every predicted return (min {returns.min():.4g})"
    assert any(w.startswith(high) and "never enter" in w for w in warnings)
    assert any(w.startswith(low) and "on every bar it is flat" in w for w in warnings)
    assert not any(w.startswith("long_threshold=0.0 ") for w in warnings)
    trades = dict(zip(results["long_threshold"], results["trades"], strict=True))
    assert trades[above] == 0 and trades[below] > 0  # what the warnings say happens


def test_threshold_warnings_with_shorts_ignore_nan_and_name_the_model():
    returns = [float("nan"), -0.01, 0.0, 0.02]
    assert threshold_warnings(returns, MlBasic, {"long_threshold": 0.005}) == []
    assert threshold_warnings([float("nan")], MlBasic, {"long_threshold": 9}) == []
    (never,) = threshold_warnings(
        returns, MlBasic, {"allow_shorts": True, "short_threshold": 0.01}, model="ETHUSDT v2"
    )
    assert never.startswith("short_threshold=0.01: no predicted return of ETHUSDT v2 is below")
    assert "never enter short" in never
    (always,) = threshold_warnings(returns, MlBasic, {"allow_shorts": True, "short_threshold": -1})
    assert "every predicted return is below 1" in always and "(max 0.02)" in always
    flag = threshold_warnings(
        returns, MlBasic, {"long_threshold": 1}, spell=lambda n, v: f"--x {v}"
    )
    assert flag[0].startswith("--x 1 is above every predicted return (max 0.02)")


@pytest.mark.slow  # three backtests, one with its chart
def test_backtest_cli_with_a_threshold_above_every_prediction_warns_in_flag_spelling(
    csv, market, registry, tmp_path
):
    high = float(_predicted_returns(market, registry).max())
    args = ["backtest", "ml_basic", "--data", str(csv), "--registry", registry]
    args += ["--no-baselines", "--no-progress", "--out", str(tmp_path / "bt"), "--force"]
    never = CliRunner().invoke(cli, [*args, "--long-threshold", "5"])
    assert never.exit_code == 0, never.output
    expected = f"warning: --long-threshold 5 is above every predicted return (max {high:.4g})"
    assert expected in never.stdout
    fine = CliRunner().invoke(cli, [*args, "--long-threshold", "0"])
    assert fine.exit_code == 0 and "warning: --long-threshold" not in fine.stdout


# ------------------------------------------------------------ scripts without the guard


def _run_script(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(  # the timeout is a safety net only: no assertion on time
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_one_clear_error(done: subprocess.CompletedProcess, script: Path) -> str:
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("atb_strategies.exceptions.ConfigurationError: executor='local'")
    assert 'if __name__ == "__main__":' in last and str(script) in last
    assert done.stderr.count("Traceback") == 1  # this process's only: no worker tracebacks
    assert "bootstrapping" not in done.stderr and "BrokenProcessPool" not in done.stderr
    return last


@pytest.mark.slow
def test_readme_sweep_pasted_without_main_guard_raises_one_error_naming_the_guard(
    csv, registry, tmp_path
):
    done = _run_script(
        tmp_path,
        f"""\
        import pandas as pd
        from atb_strategies.sweep import run_sweep
        candles = pd.read_csv({str(csv)!r}, index_col=0, parse_dates=True)
        df = run_sweep("ml_basic", candles, {{"long_threshold": [0.001, 0.002]}},
                       params={{"registry": {registry!r}}}, workers=2)
        print("finished", len(df))
        """,
    )
    last = _assert_one_clear_error(done, tmp_path / "script.py")
    assert "line 4" in last and "finished" not in done.stdout


@pytest.mark.slow
def test_run_tasks_from_a_block_that_is_not_the_guard_ends_workers_quietly_and_raises(tmp_path):
    done = _run_script(
        tmp_path,
        """\
        from atb_strategies.executors import run_tasks

        def double(shared, task):
            return 2 * task

        if True:  # not the guard: every worker's re-import runs this block too
            print(dict(run_tasks(double, [1, 2, 3], workers=2)))
        """,
    )
    _assert_one_clear_error(done, tmp_path / "script.py")
    assert done.stdout == ""


@pytest.mark.slow
def test_run_tasks_under_the_main_guard_runs_on_the_pool(tmp_path):
    done = _run_script(
        tmp_path,
        """\
        import os
        from atb_strategies.executors import run_tasks

        def pid_and_double(shared, task):
            return os.getpid(), 2 * task

        if __name__ == "__main__":
            results = dict(run_tasks(pid_and_double, [1, 2, 3], workers=2))
            print(sorted(v for _, v in results.values()))
            print(os.getpid() not in {pid for pid, _ in results.values()})
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[2, 4, 6]", "True"]
