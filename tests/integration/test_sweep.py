"""``run_sweep`` and ``atb sweep``: every cell equals a plain backtest, workers read handed-in
predictions instead of running the model, serial/local/Ray agree, and a sweep survives
failures and interruptions (finished cells kept, ``resume`` runs only the others)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.bundle.format import BundleMetadata, FeatureSchema, InputSpec, OutputSpec
from atb_strategies.cli.main import cli
from atb_strategies.executors import TaskFailure, run_tasks
from atb_strategies.indicators.cache import prediction_cache
from atb_strategies.registry.writer import write_bundle
from atb_strategies.strategies.ml_basic import MlBasic
from atb_strategies.sweep import run_sweep
from atb_strategies.sweep.cells import trades_records
from atb_strategies.sweep.store import CellStore
from tests.conftest import RICH_FEATURES, linear_onnx, synthetic_candles

pytestmark = pytest.mark.slow  # runs sweeps on process pools and Ray

V1, V2 = "2026-01-01_1h_v1", "2026-01-02_1h_v2"
GRID = {"long_threshold": [0.0, 0.002], "stop_loss": [0.01, 0.03]}
BARS = 700


def _bundle(root: Path, symbol: str, version: str, seed: int, training: dict | None = None):
    meta = BundleMetadata(
        symbol=symbol,
        model_type="basic",
        timeframe="1h",
        version=version,
        input=InputSpec("features", "float32", 16, 3),
        output=OutputSpec("log_return", 1, "prediction", {}, None),
        model_sha256=None,
        created_at="2026-01-01T00:00:00+00:00",
        framework="onnx-test",
        raw={"training": training} if training else {},
    )
    schema = FeatureSchema(16, tuple(RICH_FEATURES[:3]))
    write_bundle(root, meta, schema, linear_onnx(16, 3, seed=seed), promote=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> str:
    """BTCUSDT v1 and v2 (latest; trained on the first 200 bars), ETHUSDT v1."""
    root = tmp_path_factory.mktemp("sweep") / "models"
    _bundle(root, "BTCUSDT", V1, seed=0)
    seen = {
        "first_bar_seen": "2024-01-01 00:00:00",
        "seen_until": "2024-01-09 07:00:00",
        "available_from": "2024-01-09 08:00:00",
    }
    _bundle(root, "BTCUSDT", V2, seed=1, training=seen)
    _bundle(root, "ETHUSDT", V1, seed=2)
    return str(root)


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return synthetic_candles(BARS, seed=7)


def _sweep(market, registry, **kwargs) -> pd.DataFrame:
    settings = {
        "versions": [None, V1],
        "params": {"registry": registry},
        "commission": 0.0005,
        "executor": "serial",
    }
    return run_sweep("ml_basic", market, GRID, **{**settings, **kwargs})


@pytest.fixture(scope="module")
def local_run(market, registry, tmp_path_factory):
    """8 cells (2 versions x 2 x 2) on 2 local worker processes."""
    out = tmp_path_factory.mktemp("local")
    return out, _sweep(market, registry, executor="local", workers=2, out=out)


def _collect(into: list[str]):
    """An ``on_cell`` that collects the hashes of the cells that ran."""
    return lambda record: into.append(record["cell"])


def _records(out: Path, results: pd.DataFrame) -> list[dict]:
    store = CellStore(out)
    return [store.read(h) for h in results["cell"]]


def test_sweep_with_local_workers_equals_plain_backtests_without_the_cache(
    local_run, market, registry
):
    out, results = local_run
    assert len(results) == 8 and results["error"].isna().all()
    assert list(results["version"]) == [V2] * 4 + [V1] * 4  # latest pinned to v2
    assert results["total_return"].nunique() == 8  # every param and version matters
    for record in _records(out, results):
        params = {**record["params"], "version": record["version"]}
        with prediction_cache.disabled():
            plain = run_backtest(
                market, MlBasic, symbol="BTCUSDT", timeframe="1h", commission=0.0005, **params
            )
        expected = json.loads(json.dumps(plain.summary, default=str))
        trades = json.loads(json.dumps(plain.trades, default=str))
        assert record["summary"] == expected
        assert trades_records(record["trades"]) == trades and len(trades) > 5


def test_sweep_with_local_workers_runs_no_inference_in_the_workers(local_run):
    out, results = local_run
    workers = [r["worker"] for r in _records(out, results)]
    assert {w["pid"] for w in workers} - {os.getpid()} == {w["pid"] for w in workers}
    assert all(w["hits"] == 1 and w["misses"] == 0 for w in workers)


def test_sweep_with_out_writes_results_csv_cells_and_heatmap(local_run):
    out, results = local_run
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns[:5]) == ["cell", "long_threshold", "stop_loss", "symbol", "version"]
    assert {"total_return", "cagr", "sharpe", "sortino", "max_drawdown", "trades"} <= set(csv)
    assert {"win_rate", "exposure", "fees_paid", "error"} <= set(csv)
    pd.testing.assert_series_equal(csv["sharpe"], results["sharpe"])
    assert sorted(p.stem for p in (out / "cells").glob("*.json")) == sorted(results["cell"])
    assert not list((out / "cells").glob(".*"))  # no temporary file left
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["versions"]["resolved"] == [V2, V1] and summary["cells"] == 8
    # v2 was trained on the first 200 bars, v1's training is unknown: the ranking says so
    (mixed,) = [w for w in results.attrs["warnings"] if "include in-sample bars" in w]
    assert "4 of 8 ranked cells include in-sample bars (up to 200)" in mixed
    assert any("may be in-sample" in w for w in results.attrs["warnings"]) == (
        results.sort_values("sharpe")["version"].iloc[-1] == V1
    )


def test_sweep_serial_equals_local_and_resume_runs_only_missing_cells(
    local_run, market, registry, tmp_path
):
    _, local = local_run
    serial = _sweep(market, registry, out=tmp_path)
    pd.testing.assert_frame_equal(serial, local)
    gone = list(serial["cell"].iloc[[1, 4, 6]])
    for cell in gone:
        (tmp_path / "cells" / f"{cell}.json").unlink()
    ran: list[str] = []
    resumed = _sweep(
        market, registry, out=tmp_path, resume=True, on_cell=lambda r: ran.append(r["cell"])
    )
    assert sorted(ran) == sorted(gone)
    assert resumed.attrs["ran"] == 3 and resumed.attrs["resumed"] == 5
    pd.testing.assert_frame_equal(resumed, local)


def test_sweep_interrupted_keeps_finished_cells_and_resume_finishes(market, registry, tmp_path):
    seen: list[str] = []

    def interrupt(record: dict) -> None:
        seen.append(record["cell"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sweep(market, registry, out=tmp_path, versions=[V1], on_cell=interrupt)
    assert sorted(p.stem for p in (tmp_path / "cells").glob("*.json")) == sorted(seen)
    ran: list[str] = []
    done = _sweep(
        market,
        registry,
        out=tmp_path,
        versions=[V1],
        resume=True,
        on_cell=_collect(ran),
    )
    assert len(ran) == 1 and set(ran) | set(seen) == set(done["cell"])
    assert done["error"].isna().all()


def test_sweep_with_a_failing_cell_records_its_error_and_runs_the_others(
    market, registry, tmp_path
):
    grid = {"sequence_length": [None, 99]}  # valid for MlBasic, not for its 16-bar model
    results = run_sweep(
        "ml_basic", market, grid, params={"registry": registry}, executor="serial", out=tmp_path
    )
    ok, bad = results.iloc[0], results.iloc[1]
    assert pd.isna(ok["error"]) and ok["trades"] > 0
    assert bad["error"].startswith("ConfigurationError: MlBasic was configured with sequence_le")
    assert "\n" not in bad["error"] and pd.isna(bad["sharpe"])
    assert CellStore(tmp_path).read(bad["cell"])["error"] == bad["error"]
    assert results.attrs["warnings"][0].startswith("1 of 2 cells failed")
    # a failed cell runs again on resume; a finished one does not
    ran: list[str] = []
    run_sweep(
        "ml_basic",
        market,
        grid,
        params={"registry": registry},
        executor="serial",
        out=tmp_path,
        resume=True,
        on_cell=_collect(ran),
    )
    assert ran == [bad["cell"]]


def test_prediction_cache_with_two_registries_of_one_version_name_keeps_them_apart(
    market, registry, tmp_path
):
    other = tmp_path / "models"
    _bundle(other, "BTCUSDT", V1, seed=5)  # same key BTCUSDT/basic@v1, another model

    def backtest(root: str):
        return run_backtest(
            market, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=root, version=V1
        )

    with prediction_cache.active():
        first = backtest(registry)  # computed or found: either way now in the cache
        before = prediction_cache.counters()
        second = backtest(str(other))
        assert prediction_cache.counters()["misses"] == before["misses"] + 1
    with prediction_cache.disabled():
        plain = backtest(str(other))
    pd.testing.assert_frame_equal(second.predictions, plain.predictions)
    assert not first.predictions.equals(second.predictions)


def test_plain_backtest_outside_a_sweep_neither_reads_nor_fills_the_cache(market, registry):
    before = prediction_cache.counters()
    run_backtest(market, MlBasic, symbol="BTCUSDT", timeframe="1h", registry=registry)
    assert prediction_cache.counters() == before


def test_sweep_cli_with_two_symbols_ranks_cells_and_warns(registry, tmp_path):
    files = []
    for i, symbol in enumerate(("BTCUSDT", "ETHUSDT")):
        path = tmp_path / f"{symbol}.csv"
        synthetic_candles(500, seed=10 + i).rename_axis("timestamp").to_csv(path)
        files += ["--data", f"{symbol}={path}"]
    out = tmp_path / "out"
    args = ["sweep", "ml_basic", "--symbols", "BTCUSDT,ETHUSDT", *files, "--registry", registry]
    args += [
        "--model-version",
        V1,
        "--grid",
        "long_threshold=-1,0.0,0.001",
        "--grid",
        "stop_loss=0.01",
    ]
    args += ["--executor", "serial", "--out", str(out), "--rank-by", "total_return", "--top", "3"]
    result = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Sweep ml_basic 1h: 6 cells (6 ran, 0 resumed, 0 failed)" in result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["rank"])
    assert lines[header].split()[:5] == [
        "rank",
        "long_threshold",
        "stop_loss",
        "symbol",
        "total_return",
    ]
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["1", "2", "3"]
    assert "warning: The training period of" in result.output  # v1 has no lineage
    csv = pd.read_csv(out / "results.csv")
    assert list(csv["symbol"]) == ["BTCUSDT"] * 3 + ["ETHUSDT"] * 3
    assert (out / "heatmap.png").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--grid", "stoploss=0.01"], "MlBasic has no parameter 'stoploss'"),
        (["--grid", "version=v1"], "--model-version"),
        (["--symbols", "A,B", "--data", "x.csv"], "--data"),
        (["--rank-by", "profit"], "--rank-by"),
    ],
)
def test_sweep_cli_with_bad_option_exits_1_with_one_line(args, words, registry, tmp_path):
    (tmp_path / "x.csv").write_text("timestamp,open,high,low,close,volume\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = CliRunner().invoke(cli, ["sweep", "ml_basic", "--synthetic", *args])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]


def _die_or_echo(shared: dict, task: str) -> str:
    """Echo ``task``; ``"die"`` kills its worker process every time, ``"die-once"`` the first
    time only (attempts are counted in a file)."""
    if task.startswith("die"):
        attempts = Path(shared["attempts"])
        with attempts.open("a") as fh:
            fh.write(f"{task}\n")
        if task == "die" or attempts.read_text().split().count(task) == 1:
            os._exit(1)
        return "survived"
    return task


def test_run_tasks_local_with_a_lost_worker_reruns_its_tasks_once_in_a_new_pool(tmp_path):
    shared = {"attempts": str(tmp_path / "attempts.txt")}
    once = dict(run_tasks(_die_or_echo, ["die-once", "a"], shared=shared, workers=2))
    assert once == {0: "survived", 1: "a"}
    always = dict(run_tasks(_die_or_echo, ["die", "die"], shared=shared, workers=2))
    assert all(isinstance(f, TaskFailure) for f in always.values())
    assert all(f.error.startswith("BrokenProcessPool") for f in always.values())


# ------------------------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs for this module's Ray tests, stopped after them."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_sweep_with_ray_equals_local_and_reads_the_object_store_predictions(
    ray_local, local_run, market, registry, tmp_path
):
    _, local = local_run
    results = _sweep(market, registry, executor="ray", out=tmp_path)
    pd.testing.assert_frame_equal(results, local)
    workers = [r["worker"] for r in _records(tmp_path, results)]
    assert all(w["hits"] == 1 and w["misses"] == 0 for w in workers)
    assert os.getpid() not in {w["pid"] for w in workers}


@pytest.mark.slow
def test_run_tasks_on_ray_with_a_lost_worker_retries_once_then_reports_it(ray_local, tmp_path):
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    attempts = tmp_path / "attempts.txt"
    shared = {"attempts": str(attempts)}
    outcomes = dict(run_tasks(_die_or_echo, ["a", "die", "b"], shared=shared, executor="ray"))
    assert outcomes[0] == "a" and outcomes[2] == "b"
    assert isinstance(outcomes[1], TaskFailure) and "\n" not in outcomes[1].error
    assert attempts.read_text().split() == ["die", "die"]  # the first run and one retry
