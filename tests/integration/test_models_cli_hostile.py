"""``atb models`` on a registry with one hostile version: the command finishes, lists the others,
marks that one invalid with its reason, and refuses to use it with one ``error:`` line.

Run through the real console entry point in a subprocess: a FIFO that blocks or a file that never
ends would hang it, so each run has a generous ``timeout`` (a guard against a hang, never a
measurement).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BundleFactory

V1 = "2026-01-01_1h_v1"
V2 = "2026-01-02_1h_v2"
KEY1 = f"BTCUSDT/basic@{V1}"
KEY2 = f"BTCUSDT/basic@{V2}"
GUARD_SECONDS = 120


@pytest.fixture
def root(make_bundle: BundleFactory, tmp_path: Path) -> Path:
    make_bundle(version=V1, promote=False)
    make_bundle(version=V2, seed=1)
    return tmp_path / "models"


def atb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATB_")}
    return subprocess.run(
        [sys.executable, "-m", "atb_strategies.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
        cwd=cwd,
        env=env,
    )


def v1(root: Path) -> Path:
    return root / "BTCUSDT" / "basic" / V1


def assert_one_error_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_metadata_fifo_lists_validates_and_refuses_only_that_version(
    root: Path, tmp_path: Path
) -> None:
    (v1(root) / "metadata.json").unlink()
    os.mkfifo(v1(root) / "metadata.json")

    listed = atb("models", "list", "--registry", str(root), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert V2 in listed.stdout and "unreadable" in listed.stdout
    assert f"unreadable {KEY1}: " in listed.stdout and "a FIFO" in listed.stdout

    validated = atb("models", "validate", str(root), cwd=tmp_path)
    assert validated.returncode == 1
    assert f"OK       {KEY2} (latest)" in validated.stdout
    assert f"INVALID  {KEY1}" in validated.stdout
    assert validated.stdout.splitlines()[-1] == "2 bundle(s), 1 valid, 1 invalid"

    promoted = atb(
        "models", "promote", "BTCUSDT", "basic", V1, "--registry", str(root), cwd=tmp_path
    )
    assert_one_error_line(promoted, "metadata.json", "not a regular file (a FIFO)")
    shown = atb("models", "show", "BTCUSDT", "basic", "--registry", str(root), cwd=tmp_path)
    assert shown.returncode == 0 and f"bundle: {KEY2}" in shown.stdout


def test_model_symlinked_to_dev_zero_is_refused(root: Path, tmp_path: Path) -> None:
    model = v1(root) / "model.onnx"
    model.unlink()
    model.symlink_to("/dev/zero")
    validated = atb("models", "validate", str(root), cwd=tmp_path)
    assert validated.returncode == 1
    assert "outside its version folder" in validated.stdout
    assert f"OK       {KEY2} (latest)" in validated.stdout


def test_deep_metrics_json_does_not_break_show_or_compare(root: Path, tmp_path: Path) -> None:
    (v1(root) / "metrics.json").write_text('{"test": ' + "[" * 1000 + "]" * 1000 + "}")
    compared = atb("models", "compare", "BTCUSDT", "basic", "--registry", str(root), cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert V1 in compared.stdout and V2 in compared.stdout
    shown = atb("models", "show", "BTCUSDT", "basic", V1, "--registry", str(root), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "valid:  yes" in shown.stdout and "levels deep" in shown.stdout


def test_bidi_timeframe_never_reaches_the_terminal(root: Path, tmp_path: Path) -> None:
    path = v1(root) / "metadata.json"
    meta = json.loads(path.read_text())
    meta["timeframe"] = "\u202e1h"
    path.write_text(json.dumps(meta))
    for args in (("models", "list", "--registry", str(root)), ("models", "validate", str(root))):
        result = atb(*args, cwd=tmp_path)
        assert "\u202e" not in result.stdout + result.stderr
    validated = atb("models", "validate", str(root), cwd=tmp_path)
    assert "'timeframe' must be <n>m" in validated.stdout
    assert f"OK       {KEY2} (latest)" in validated.stdout


def test_overlong_latest_file_is_a_broken_pointer_not_a_crash(root: Path, tmp_path: Path) -> None:
    pointer = root / "BTCUSDT" / "basic" / "latest"
    pointer.unlink()
    pointer.write_text("v" * 300)
    listed = atb("models", "list", "--registry", str(root), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "no latest for BTCUSDT/basic" in listed.stdout and "at most 128" in listed.stdout
    validated = atb("models", "validate", str(root), cwd=tmp_path)
    assert validated.returncode == 1
    assert "2 bundle(s), 2 valid, 0 invalid; 1 broken latest pointer(s)" in validated.stdout


def test_missing_registry_folder_says_the_folder_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-registry"
    result = atb(
        "backtest", "ml_basic", "--synthetic", "--bars", "300", "--registry", str(missing),
        cwd=tmp_path,
    )  # fmt: skip
    assert_one_error_line(result, str(missing), "does not exist", "--registry")
    assert "Symbols present" not in result.stderr
