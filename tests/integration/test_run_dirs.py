"""Runs never overwrite each other (issue 22 item 5).

Without ``--out`` each run of ``atb backtest``/``atb sweep`` gets ``out/<command>_.../<UTC
stamp>/`` and ``latest`` links to the newest; an explicit, non-empty ``--out`` is refused
without ``--force`` (which deletes only what the command writes, a sweep's stale ``cells/``
too); ``--resume`` keeps working on an explicit ``--out`` and, without one, continues
``latest``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from atb_strategies.cli.outputs import LATEST, WRITES, output_dir, point_latest
from tests.conftest import BundleFactory, synthetic_candles


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> str:
    make_bundle()  # BTCUSDT/basic, 16 bars of 3 features: fast
    return str(tmp_path / "models")


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "candles.csv"
    synthetic_candles(300, seed=7).rename_axis("timestamp").to_csv(path)
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: the default out/ folders go here."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _sweep(csv: Path, registry: str, *extra: str) -> list[str]:
    args = ["sweep", "ml_basic", "--data", str(csv), "--registry", registry]
    return [*args, "--grid", "stop_loss=0.01,0.02", "--executor", "serial", "--no-progress", *extra]


def _backtest(csv: Path, registry: str, *extra: str) -> list[str]:
    args = ["backtest", "ml_basic", "--data", str(csv), "--registry", registry]
    return [*args, "--no-baselines", "--no-progress", *extra]


# ------------------------------------------------------------------------- the helper


def test_output_dir_without_out_makes_a_new_stamped_folder_each_time_and_latest_follows(
    tmp_path: Path,
) -> None:
    first = output_dir(None, "backtest_x_BTC", "backtest", root=tmp_path)
    (first / "chart.png").write_text("first run")
    second = output_dir(None, "backtest_x_BTC", "backtest", root=tmp_path)

    assert first != second and first.parent == second.parent == tmp_path / "backtest_x_BTC"
    assert (first / "chart.png").read_text() == "first run"  # nothing overwritten
    link = tmp_path / "backtest_x_BTC" / LATEST
    assert link.is_symlink() and os.readlink(link) == second.name  # relative
    assert link.resolve() == second.resolve()
    assert sorted(p.name for p in first.parent.iterdir()) == sorted(
        [first.name, second.name, LATEST]
    )  # no temporary link left


def test_point_latest_replaces_the_link_and_leaves_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    point_latest(tmp_path, "a")
    point_latest(tmp_path, "b")
    assert os.readlink(tmp_path / LATEST) == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", LATEST]


def test_output_dir_with_force_deletes_only_what_the_command_writes(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "cells").mkdir(parents=True)
    (out / "cells" / "stale.json").write_text("{}")
    (out / "results.csv").write_text("stale")
    (out / "notes.txt").write_text("the user's")

    assert output_dir(out, "unused", "sweep", force=True) == out
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert set(WRITES["sweep"]) >= {"cells", "results.csv"}


def test_output_dir_refuses_a_file_and_force_with_resume(tmp_path: Path) -> None:
    import click

    (tmp_path / "f").write_text("x")
    with pytest.raises(click.BadParameter, match="not a folder"):
        output_dir(tmp_path / "f", "unused", "sweep")
    with pytest.raises(click.UsageError, match="--force .* --resume"):
        output_dir(tmp_path / "new", "unused", "sweep", force=True, resume=True)
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------- atb backtest


def test_two_backtests_without_out_keep_both_reports_and_latest_is_the_second(
    csv: Path, registry: str, workdir: Path
) -> None:
    first = CliRunner().invoke(cli, _backtest(csv, registry))
    second = CliRunner().invoke(cli, _backtest(csv, registry))
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output

    family = workdir / "out" / "backtest_ml_basic_BTCUSDT"
    runs = sorted(p for p in family.iterdir() if not p.is_symlink())
    assert len(runs) == 2
    for run in runs:
        assert (run / "chart.png").is_file() and (run / "summary.json").is_file()
    assert (family / LATEST).resolve() == runs[-1].resolve()
    assert f"chart:  out/backtest_ml_basic_BTCUSDT/{runs[-1].name}/chart.png" in second.stdout


def test_backtest_into_a_non_empty_out_is_refused_in_one_line_before_any_work(
    csv: Path, registry: str, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "trades.csv").write_text("an earlier report")

    refused = CliRunner().invoke(cli, _backtest(csv, registry, "--out", str(out)))

    assert refused.exit_code == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for --out: ")
    assert str(out) in lines[0] and "--force" in lines[0]
    assert refused.stdout == ""  # no backtest ran
    assert (out / "trades.csv").read_text() == "an earlier report"


def test_backtest_with_force_replaces_its_own_files_and_keeps_the_users(
    csv: Path, registry: str, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "trades.csv").write_text("an earlier report")
    (out / "orders.csv").write_text("stale")
    (out / "notes.txt").write_text("mine")

    done = CliRunner().invoke(cli, _backtest(csv, registry, "--out", str(out), "--force"))

    assert done.exit_code == 0, done.output
    assert (out / "trades.csv").read_text() != "an earlier report"
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "chart.png").is_file()


# ------------------------------------------------------------------------- atb sweep


def test_sweep_force_clears_stale_cells_and_resume_keeps_them(
    csv: Path, registry: str, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    (out / "cells").mkdir(parents=True)
    stale = out / "cells" / "0123456789abcdef.json"
    stale.write_text('{"stale": true}')

    refused = CliRunner().invoke(cli, _sweep(csv, registry, "--out", str(out)))
    assert refused.exit_code == 1
    assert "--force" in refused.stderr and "--resume" in refused.stderr
    assert stale.exists()

    forced = CliRunner().invoke(cli, _sweep(csv, registry, "--out", str(out), "--force"))
    assert forced.exit_code == 0, forced.output
    assert not stale.exists()
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 2

    resumed = CliRunner().invoke(cli, _sweep(csv, registry, "--out", str(out), "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "(0 ran, 2 resumed, 0 failed)" in resumed.stdout
    assert sorted((out / "cells").glob("*.json")) == cells


def test_sweep_without_out_stamps_each_run_and_resume_continues_latest(
    csv: Path, registry: str, workdir: Path
) -> None:
    first = CliRunner().invoke(cli, _sweep(csv, registry))
    assert first.exit_code == 0, first.output
    family = workdir / "out" / "sweep_ml_basic_BTCUSDT"
    (run,) = [p for p in family.iterdir() if not p.is_symlink()]
    assert (family / LATEST).resolve() == run.resolve()
    assert f"results: out/sweep_ml_basic_BTCUSDT/{run.name}/results.csv" in first.stdout

    resumed = CliRunner().invoke(cli, _sweep(csv, registry, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "(0 ran, 2 resumed, 0 failed)" in resumed.stdout
    assert [p for p in family.iterdir() if not p.is_symlink()] == [run]

    again = CliRunner().invoke(cli, _sweep(csv, registry))
    assert again.exit_code == 0, again.output
    assert "(2 ran, 0 resumed, 0 failed)" in again.stdout
    runs = sorted(p for p in family.iterdir() if not p.is_symlink())
    assert len(runs) == 2 and (run / "results.csv").is_file()
    assert (family / LATEST).resolve() == runs[-1].resolve() != run.resolve()


# ------------------------------------------------------------------------- atb train model


@pytest.fixture
def no_configured_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ATB_MODEL_REGISTRY_PATH", "ATB_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)


def _versions(root: Path) -> list[Path]:
    return sorted(root.rglob("metadata.json")) if root.is_dir() else []


@pytest.mark.usefixtures("no_configured_registry")
def test_train_model_in_the_source_checkout_without_registry_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from atb_strategies.config import SHIPPED_MODELS

    if (SHIPPED_MODELS.parent / "atb.toml").exists():
        pytest.skip("the checkout has an atb.toml that may name a registry")
    monkeypatch.chdir(SHIPPED_MODELS.parent)
    before = _versions(SHIPPED_MODELS)
    args = ["train", "model", "BTCUSDT", "--synthetic", "--bars", "3000", "--epochs", "1"]

    refused = CliRunner().invoke(cli, args)

    assert refused.exit_code == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for --registry: ")
    assert str(SHIPPED_MODELS) in lines[0] and "ATB_MODEL_REGISTRY_PATH" in lines[0]
    assert _versions(SHIPPED_MODELS) == before


@pytest.mark.usefixtures("no_configured_registry")
def test_train_model_without_registry_elsewhere_writes_to_local_models_and_says_so(
    workdir: Path,
) -> None:
    args = ["train", "model", "BTCUSDT", "--synthetic", "--bars", "3000", "--sequence-length"]
    args += ["24", "--epochs", "1", "--no-backtest", "--no-promote"]

    done = CliRunner().invoke(cli, args)

    assert done.exit_code == 0, done.output
    local = workdir / "models"
    assert f"registry: {local} (./models here" in done.stderr
    (written,) = _versions(local)
    assert f"at {written.parent}" in done.stdout.splitlines()[0]
    assert done.stdout.strip().splitlines()[-1].startswith("verdict: ")
