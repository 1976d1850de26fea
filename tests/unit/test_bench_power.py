"""``benchmarks/bench_power.py`` resumes: rows keep their sizes, a rerun skips what is done."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_power.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_power", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(family: str, phi: float, seeds: range, bars: int, hit: bool) -> list[dict]:
    sizes = {
        "rule": "ar1",
        "bars": bars,
        "train_bars": 400,
        "test_bars": 200,
        "epochs": 30,
        "sequence_length": 24,
    }
    return [
        {
            "family": family,
            "noise": "gaussian",
            "phi": phi,
            "seed": seed,
            "edge_vs_fixed_ci_low": 0.01 if hit else -0.01,
            "dm_pvalue_one_sided": 0.01 if hit else 0.5,
            "beats_baselines": hit,
            **sizes,
        }
        for seed in seeds
    ]


def test_a_rerun_with_the_same_sizes_resumes_and_keeps_other_sizes_apart(bench, tmp_path):
    csv = tmp_path / "power.csv"
    rows = (
        _rows("oracle", 0.1, range(3), 1500, True)
        + _rows("ridge", 0.1, range(2), 1500, True)
        + _rows("ridge", 0.1, range(3), 9000, False)  # another size: not this run's
    )
    pd.DataFrame(rows).to_csv(csv, index=False)
    args = bench._parse(["--bars", "1500", "--train-bars", "400", "--test-bars", "200"])
    args.out = tmp_path
    same, other = bench.load_previous(csv, args)
    assert len(same) == 5 and set(same["bars"]) == {1500}
    assert len(other) == 3 and set(other["bars"]) == {9000}
    args.fresh = True
    assert all(len(part) == 0 for part in bench.load_previous(csv, args))


def test_report_tables_every_stored_run_of_these_sizes_and_trains_nothing(bench, tmp_path):
    rows = (
        _rows("oracle", 0.1, range(4), 1500, True)
        + _rows("ridge", 0.1, range(3), 1500, True)
        + _rows("ridge", 0.1, [3], 1500, False)
        + _rows("ridge", 0.1, range(4), 9000, False)
    )
    pd.DataFrame(rows).to_csv(tmp_path / "power.csv", index=False)
    argv = ["--families", "ridge", "--phis", "0.1", "--noises", "gaussian", "--seeds", "4"]
    argv += ["--bars", "1500", "--train-bars", "400", "--test-bars", "200"]
    table = bench.main([*argv, "--report", "--out", str(tmp_path)])
    ridge = table[table["family"] == "ridge"].iloc[0]
    assert ridge["runs"] == 4 and ridge["detect_rate"] == pytest.approx(0.75)
    assert ridge["oracle_rate"] == 1.0 and ridge["ratio"] == pytest.approx(0.75)
    assert len(pd.read_csv(tmp_path / "power.csv")) == len(rows)  # nothing lost or added
    assert (tmp_path / "power.png").stat().st_size > 0


def test_expanding_and_rolling_runs_resume_apart_and_old_rows_count_as_rolling(bench, tmp_path):
    csv = tmp_path / "power.csv"
    old = pd.DataFrame(_rows("ridge", 0.05, range(3), 1500, True))  # written before --expanding
    new = pd.DataFrame(_rows("ridge", 0.05, range(2), 1500, False)).assign(expanding=True)
    pd.concat([old, new]).to_csv(csv, index=False)
    sizes = ["--bars", "1500", "--train-bars", "400", "--test-bars", "200"]
    for flag, expected in (([], 3), (["--expanding"], 2)):
        args = bench._parse([*sizes, *flag])
        args.out = tmp_path
        same, other = bench.load_previous(csv, args)
        assert len(same) == expected and len(other) == 5 - expected
        assert set(same["expanding"]) == {bool(flag)}


@pytest.mark.parametrize(
    ("label", "options"),
    [
        ("mlp", {"architecture": "mlp"}),
        ("mlp:lags", {"architecture": "mlp", "recipe": "lags"}),
        ("mlp:lags:calibrated", {"architecture": "mlp", "recipe": "lags", "calibrate": True}),
        ("ridge:uncalibrated", {"architecture": "ridge", "calibrate": False}),
    ],
)
def test_family_label_sets_the_recipe_and_calibration(bench, label, options):
    assert bench.family_options(label) == options
