"""``atb models list|show|validate`` on real registries, through click and the console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from atb_strategies.cli.main import cli
from atb_strategies.exceptions import ModelNotFoundError
from tests.conftest import BundleFactory

V1 = "2026-01-01_1h_v1"
V2 = "2026-01-02_1h_v2"
KEY1 = f"BTCUSDT/basic@{V1}"
KEY2 = f"BTCUSDT/basic@{V2}"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ATB_* variables, no ./atb.toml and no ./models leak into the commands."""
    for var in list(os.environ):
        if var.startswith("ATB_"):
            monkeypatch.delenv(var)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> Path:
    """BTCUSDT/basic V1 and V2 (latest), and ETHUSDT/sentiment with a 4h bundle."""
    make_bundle(version=V1)
    make_bundle(version=V2, seed=1)
    make_bundle(
        symbol="ETHUSDT",
        model_type="sentiment",
        version="2026-01-03_4h_v1",
        timeframe="4h",
        sequence_length=8,
        seed=2,
    )
    return tmp_path / "models"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


# ---------------------------------------------------------------- list


def test_models_list_with_registry_shows_every_bundle_latest_marker_and_shape(registry):
    result = run("models", "list", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert lines[0] == f"registry: {registry}"
    assert lines[1].split() == [
        "SYMBOL",
        "TYPE",
        "TIMEFRAME",
        "VERSION",
        "LATEST",
        "CREATED",
        "INPUT",
    ]
    rows = [line.split() for line in lines[2:]]
    assert rows == [
        ["BTCUSDT", "basic", "1h", V1, "2026-01-01T00:00:00", "batchx16x3"],
        ["BTCUSDT", "basic", "1h", V2, "*", "2026-01-01T00:00:00", "batchx16x3"],
        ["ETHUSDT", "sentiment", "4h", "2026-01-03_4h_v1", "*", "2026-01-01T00:00:00", "batchx8x3"],
    ]
    # the marker sits in the LATEST column
    latest_col = lines[1].index("LATEST")
    assert lines[3][latest_col] == "*"
    assert lines[2][latest_col] == " "


def test_models_list_with_env_registry_uses_it(registry, monkeypatch):
    monkeypatch.setenv("ATB_MODEL_REGISTRY_PATH", str(registry))
    result = run("models", "list")
    assert result.exit_code == 0, result.output
    assert f"registry: {registry}" in result.stdout
    assert V2 in result.stdout


def test_models_list_with_registry_option_overrides_env(registry, monkeypatch, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("ATB_MODEL_REGISTRY_PATH", str(registry))
    result = run("models", "list", "--registry", str(empty))
    assert result.exit_code == 0, result.output
    assert _lines(result.stdout) == [f"registry: {empty}", "no bundles found"]


def test_models_list_with_models_dir_in_cwd_uses_it(make_bundle, isolated):
    make_bundle(root=isolated / "models", version=V1)
    result = run("models", "list")
    assert result.exit_code == 0, result.output
    assert KEY1.split("@")[1] in result.stdout


def test_models_list_with_unreadable_metadata_marks_row_unreadable(registry):
    (registry / "BTCUSDT" / "basic" / V1 / "metadata.json").write_text("{not json")
    result = run("models", "list", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    row = next(line for line in _lines(result.stdout) if V1 in line)
    assert row.split()[-1] == "unreadable"
    assert row.split()[2] == "?"


def test_models_list_with_pointer_moved_moves_marker(registry):
    tdir = registry / "BTCUSDT" / "basic"
    (tdir / "latest").unlink()
    (tdir / "latest").write_text(V1 + "\n")  # plain-file pointer, as reference copies arrive
    result = run("models", "list", "--registry", str(registry))
    rows = {line.split()[3]: line.split() for line in _lines(result.stdout)[2:]}
    assert "*" in rows[V1]
    assert "*" not in rows[V2]


# ---------------------------------------------------------------- show


def _json_after(text: str, heading: str) -> dict:
    start = text.index(heading)
    body = text[text.index("\n", start) + 1 :]
    obj, _ = json.JSONDecoder().raw_decode(body)
    return obj


def test_models_show_with_latest_prints_a_short_summary(registry):
    result = run("models", "show", "BTCUSDT", "basic", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    out = result.stdout
    path = registry / "BTCUSDT" / "basic" / V2
    assert f"bundle: {KEY2}" in out
    assert f"path:   {path}" in out
    assert "valid:  yes (atb-bundle-1)" in out
    assert "input   features: float32 [batch, 16, 3]" in out
    assert "output  log_return, 1 bar(s) ahead" in out
    assert "features close_wexp, log_ret, range" in out
    assert "metrics none recorded" in out
    assert len(out.splitlines()) <= 12


def test_models_show_with_json_prints_metadata_schema_and_metrics_as_one_document(registry):
    vdir = registry / "BTCUSDT" / "basic" / V2
    (vdir / "metrics.json").write_text(
        json.dumps({"test": {"model": {"directional_accuracy": 0.51}}, "backtest": None})
    )
    result = run("models", "show", "BTCUSDT", "basic", "--json", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["bundle"] == KEY2
    assert doc["metadata"]["version"] == V2
    assert doc["metadata"]["input"]["shape"] == [None, 16, 3]
    assert doc["feature_schema"]["sequence_length"] == 16
    names = [f["name"] for f in doc["feature_schema"]["features"]]
    assert names == ["close_wexp", "log_ret", "range"]
    assert doc["feature_schema"]["features"][2]["source"] == ["high", "low", "close"]
    assert doc["metrics"]["test"]["model"]["directional_accuracy"] == 0.51


def test_models_show_with_metrics_prints_headline_in_percent(registry):
    vdir = registry / "BTCUSDT" / "basic" / V2
    metrics = {
        "test_period": ["2024-10-11 10:00:00", "2025-01-19 22:00:00"],
        "test": {
            "samples": 2413,
            "model": {"rmse": 513.9, "directional_accuracy": 0.4994},
            "baseline_last_close": {"rmse": 492.2},
            "share_of_up_moves": 0.5263,
        },
        "backtest": {"total_return": -0.0164, "buy_and_hold_return": 0.6568, "trades": 242},
    }
    (vdir / "metrics.json").write_text(json.dumps(metrics))
    out = run("models", "show", "BTCUSDT", "basic", "--registry", str(registry)).stdout
    assert "RMSE 513.9 vs 492.2 for last close; direction 49.9 % vs 52.6 % always up" in out
    assert "backtest -1.6 % vs buy-and-hold 65.7 %, 242 trades" in out


def test_models_show_with_explicit_version_shows_that_version(registry):
    result = run("models", "show", "BTCUSDT", "basic", V1, "--json", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metadata"]["version"] == V1


def test_models_show_with_corrupt_bundle_prints_reason_and_exits_1(registry):
    model = registry / "BTCUSDT" / "basic" / V2 / "model.onnx"
    model.write_bytes(model.read_bytes()[:40])
    result = run("models", "show", "BTCUSDT", "basic", "--registry", str(registry))
    assert result.exit_code == 1
    assert "valid:  NO" in result.stdout
    assert str(model) in result.stdout
    assert "sha256" in result.stdout
    assert "feature schema" not in result.stdout


def test_models_show_with_unknown_symbol_prints_error_without_traceback(registry):
    result = run("models", "show", "SOLUSDT", "basic", "--registry", str(registry))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ModelNotFoundError: No models for symbol 'SOLUSDT'")
    assert "Symbols present: BTCUSDT, ETHUSDT" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_models_show_with_unknown_version_lists_versions(registry):
    result = run(
        "models", "show", "BTCUSDT", "basic", "2020-01-01_1h_v1", "--registry", str(registry)
    )
    assert result.exit_code == 1
    assert f"Versions present: {V1}, {V2}" in result.stderr


def test_models_show_with_verbose_raises_the_error(registry):
    result = run("-v", "models", "show", "SOLUSDT", "basic", "--registry", str(registry))
    assert result.exit_code == 1
    assert isinstance(result.exception, ModelNotFoundError)


def test_models_show_with_broken_latest_pointer_exits_1(registry):
    tdir = registry / "BTCUSDT" / "basic"
    (tdir / "latest").unlink()
    os.symlink("../../..", tdir / "latest")
    result = run("models", "show", "BTCUSDT", "basic", "--registry", str(registry))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: RegistryError:")
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- latest pointer


def _escape_latest(registry: Path) -> Path:
    tdir = registry / "BTCUSDT" / "basic"
    (tdir / "latest").unlink()
    os.symlink("../../..", tdir / "latest")
    return tdir


def test_models_validate_with_escaping_latest_names_it_and_exits_1(registry):
    _escape_latest(registry)
    result = run("models", "validate", str(registry))
    assert result.exit_code == 1
    assert "BROKEN   BTCUSDT/basic/latest" in result.stdout
    assert "1 broken latest pointer(s)" in result.stdout


def test_models_validate_with_dangling_latest_names_it_and_exits_1(registry):
    tdir = registry / "BTCUSDT" / "basic"
    (tdir / "latest").unlink()
    os.symlink("2099-01-01_1h_v9", tdir / "latest")
    result = run("models", "validate", str(registry))
    assert result.exit_code == 1
    assert "does not exist" in result.stdout


def test_models_validate_with_type_without_latest_is_fine(registry):
    (registry / "BTCUSDT" / "basic" / "latest").unlink()
    result = run("models", "validate", str(registry))
    assert result.exit_code == 0, result.output


def test_models_promote_with_escaping_latest_repairs_it(registry):
    tdir = _escape_latest(registry)
    result = run("models", "promote", "BTCUSDT", "basic", V1, "--registry", str(registry))
    assert result.exit_code == 0, result.output
    assert os.readlink(tdir / "latest") == V1
    assert run("models", "validate", str(registry)).exit_code == 0


def test_models_list_with_escaping_latest_says_why_there_is_none(registry):
    _escape_latest(registry)
    result = run("models", "list", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    assert "no latest for BTCUSDT/basic:" in result.stdout
    assert "refusing it" in result.stdout


# ---------------------------------------------------------------- validate


def test_models_validate_with_all_valid_exits_0(registry):
    result = run("models", "validate", str(registry))
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert lines[0] == f"registry: {registry}"
    assert lines[1:] == [
        f"OK       {KEY1}",
        f"OK       {KEY2} (latest)",
        "OK       ETHUSDT/sentiment@2026-01-03_4h_v1 (latest)",
        "note: 3 valid bundle(s) carry no parity certificate (outputs not re-checked on this "
        "machine)",
        "3 bundle(s), 3 valid, 0 invalid",
    ]


def test_models_validate_with_registry_option_validates_it(registry):
    result = run("models", "validate", "--registry", str(registry))
    assert result.exit_code == 0, result.output
    assert "3 bundle(s), 3 valid, 0 invalid" in result.stdout


def _truncate_model(vdir: Path) -> None:
    data = (vdir / "model.onnx").read_bytes()
    (vdir / "model.onnx").write_bytes(data[: len(data) // 2])


def _edit_metadata(vdir: Path, edit) -> None:
    path = vdir / "metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _break_sha(vdir: Path) -> None:
    def edit(meta: dict) -> None:
        meta["model_sha256"] = "0123456789abcdef" * 4

    _edit_metadata(vdir, edit)


def _remove_output(vdir: Path) -> None:
    _edit_metadata(vdir, lambda meta: meta.pop("output"))


def _delete_schema(vdir: Path) -> None:
    (vdir / "feature_schema.json").unlink()


def _garbage_model(vdir: Path) -> None:
    (vdir / "model.onnx").write_bytes(b"garbage")


@pytest.mark.parametrize(
    ("corrupt", "file", "expected"),
    [
        (_truncate_model, "model.onnx", ["has sha256", "metadata.json records"]),
        (_break_sha, "model.onnx", ["has sha256", "records 0123456789ab"]),
        (_remove_output, "metadata.json", ["field 'output' is missing"]),
        (_delete_schema, "feature_schema.json", ["is missing"]),
        (_garbage_model, "model.onnx", ["has sha256"]),
    ],
)
def test_models_validate_with_corrupt_bundle_names_bundle_and_file_and_exits_1(
    registry, corrupt, file, expected
):
    vdir = registry / "BTCUSDT" / "basic" / V1
    corrupt(vdir)
    result = run("models", "validate", str(registry))
    assert result.exit_code == 1, result.output
    lines = _lines(result.stdout)
    bad = lines.index(f"INVALID  {KEY1}")
    reason = lines[bad + 1]
    assert str(vdir / file) in reason
    for text in expected:
        assert text in reason
    assert f"OK       {KEY2} (latest)" in lines
    assert lines[-1] == "3 bundle(s), 2 valid, 1 invalid"
    assert "Traceback" not in result.output


def test_models_validate_with_unchecked_checksum_reports_unloadable_model(registry, monkeypatch):
    monkeypatch.setenv("ATB_VERIFY_CHECKSUM", "false")
    vdir = registry / "BTCUSDT" / "basic" / V2
    _truncate_model(vdir)
    result = run("models", "validate", str(registry))
    assert result.exit_code == 1, result.output
    lines = _lines(result.stdout)
    reason = lines[lines.index(f"INVALID  {KEY2} (latest)") + 1]
    assert str(vdir / "model.onnx") in reason
    assert "could not be loaded by ONNX Runtime" in reason


def test_models_validate_with_several_bad_bundles_counts_them(registry):
    _delete_schema(registry / "BTCUSDT" / "basic" / V1)
    _break_sha(registry / "ETHUSDT" / "sentiment" / "2026-01-03_4h_v1")
    result = run("models", "validate", str(registry))
    assert result.exit_code == 1
    assert result.stdout.count("INVALID  ") == 2
    assert _lines(result.stdout)[-1] == "3 bundle(s), 1 valid, 2 invalid"


def test_models_validate_with_version_symlinked_outside_root_reports_invalid(
    registry, make_bundle, tmp_path
):
    escaped = "2026-01-05_1h_v5"
    outside = make_bundle(root=tmp_path / "outside", version=escaped, promote=False)
    os.symlink(outside, registry / "BTCUSDT" / "basic" / escaped, target_is_directory=True)
    show = run("models", "show", "BTCUSDT", "basic", escaped, "--registry", str(registry))
    assert show.exit_code == 1
    assert "outside the registry root" in show.stderr
    result = run("models", "validate", str(registry))
    assert f"INVALID  BTCUSDT/basic@{escaped}" in result.stdout
    assert result.exit_code == 1


def test_models_validate_with_missing_registry_exits_1(tmp_path):
    result = run("models", "validate", str(tmp_path / "no-such-registry"))
    assert result.exit_code == 1


# ---------------------------------------------------------------- the real console script


def _atb() -> str:
    exe = shutil.which("atb")
    if exe is None:
        pytest.skip("the `atb` console script is not on PATH")
    return exe


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ATB_")}


def test_atb_console_script_with_corrupt_bundle_exits_1_and_0_once_removed(registry, isolated):
    exe = _atb()
    _break_sha(registry / "BTCUSDT" / "basic" / V1)
    proc = subprocess.run(
        [exe, "models", "validate", str(registry)],
        capture_output=True,
        text=True,
        cwd=isolated,
        env=_clean_env(),
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"INVALID  {KEY1}" in proc.stdout
    assert "3 bundle(s), 2 valid, 1 invalid" in proc.stdout
    shutil.rmtree(registry / "BTCUSDT" / "basic" / V1)
    proc = subprocess.run(
        [exe, "models", "validate", "--registry", str(registry)],
        capture_output=True,
        text=True,
        cwd=isolated,
        env=_clean_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 bundle(s), 2 valid, 0 invalid" in proc.stdout


def test_atb_console_script_with_unknown_model_prints_error_without_traceback(registry, isolated):
    proc = subprocess.run(
        [_atb(), "models", "show", "BTCUSDT", "nosuchtype", "--registry", str(registry)],
        capture_output=True,
        text=True,
        cwd=isolated,
        env=_clean_env(),
        timeout=600,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ModelNotFoundError: No 'nosuchtype' models for BTCUSDT")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


# ---------------------------------------------------------------- reference bundles


@pytest.mark.realdata
def test_models_validate_with_reference_bundles_reports_one_valid_three_invalid(shared_dir):
    models = shared_dir / "reference-bundles" / "models"
    result = run("models", "validate", str(models))
    assert result.exit_code == 1
    lines = _lines(result.stdout)
    assert lines[-1] == "4 bundle(s), 1 valid, 3 invalid"
    ok = [line for line in lines if line.startswith("OK ")]
    assert ok == ["OK       BTCUSDT/basic@2025-10-30_12h_v1 (latest)"]

    def reason(key: str) -> str:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"INVALID  {key}"))
        return lines[index + 1]

    for version in ("2025-12-23_20h_v2", "2026-01-06_14h_v3"):
        text = reason(f"BTCUSDT/sentiment@{version}")
        assert "scalers whose parameters were never saved" in text
        assert "scaler min/max or mean/std" in text
    basic = reason("BTCUSDT/basic@2025-10-26_21h_v1")
    assert "price_normalization" in basic
    assert "metadata.json" in basic


def test_models_promote_to_another_timeframe_than_latest_needs_the_flag(make_bundle, tmp_path):
    from atb_strategies.registry.shared import clear_shared_registries

    clear_shared_registries()
    make_bundle(version="2026-01-01_1h_v1")
    make_bundle(version="2026-01-02_4h_v2", timeframe="4h", promote=False)
    root = str(tmp_path / "models")
    refused = CliRunner().invoke(
        cli, ["models", "promote", "BTCUSDT", "basic", "2026-01-02_4h_v2", "--registry", root]
    )
    assert refused.exit_code == 1
    assert "a 4h model and latest (2026-01-01_1h_v1) a 1h one" in refused.stderr
    assert "--allow-timeframe-change" in refused.stderr
    latest = tmp_path / "models" / "BTCUSDT" / "basic" / "latest"
    assert os.readlink(latest) == "2026-01-01_1h_v1"
    flag = "--allow-timeframe-change"
    moved = CliRunner().invoke(
        cli, ["models", "promote", "BTCUSDT", "basic", "2026-01-02_4h_v2", flag, "--registry", root]
    )
    assert moved.exit_code == 0, moved.output
    assert os.readlink(latest) == "2026-01-02_4h_v2"
