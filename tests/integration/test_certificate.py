"""The parity certificate: written at registration, re-run by ``atb models validate`` and at
the start of every live or paper session, refusing a bundle this machine does not reproduce."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from atb_strategies.cli.main import cli
from atb_strategies.exceptions import BundleError
from atb_strategies.inference.certificate import (
    CERTIFICATE_FILE,
    certificate_bytes,
    verify_certificate,
)
from atb_strategies.registry.registry import ModelRegistry
from atb_strategies.training.trainer import TrainingConfig, train_model
from tests.conftest import BundleFactory, synthetic_candles


def _certify(bundle_dir: Path, registry: Path, *, tamper: float = 0.0) -> None:
    bundle = ModelRegistry(registry).select_bundle("BTCUSDT", "basic", "1h", bundle_dir.name)
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((4, 16, 3)).astype(np.float32)
    outputs = bundle.runner.run_raw(windows).astype(np.float32)
    outputs[2] += tamper
    (bundle_dir / CERTIFICATE_FILE).write_bytes(certificate_bytes(windows, outputs))


@pytest.fixture
def registry(make_bundle: BundleFactory, tmp_path: Path) -> Path:
    make_bundle()
    return tmp_path / "models"


def test_verify_certificate_with_matching_outputs_passes_and_reports_the_difference(registry):
    vdir = next((registry / "BTCUSDT" / "basic").glob("2026-*"))
    _certify(vdir, registry)
    bundle = ModelRegistry(registry).select_bundle("BTCUSDT", "basic", "1h", None)
    check = verify_certificate(bundle)
    assert check.present and check.windows == 4 and check.max_abs_diff == 0.0


def test_models_validate_with_tampered_certificate_fails_naming_the_largest_difference(registry):
    vdir = next((registry / "BTCUSDT" / "basic").glob("2026-*"))
    _certify(vdir, registry, tamper=0.01)
    result = CliRunner().invoke(cli, ["models", "validate", str(registry)])
    assert result.exit_code == 1
    assert "does not reproduce the bundle's parity certificate: window 2" in result.stdout
    bundle = ModelRegistry(registry).select_bundle("BTCUSDT", "basic", "1h", None)
    with pytest.raises(BundleError, match="difference 0.01"):
        verify_certificate(bundle)


def test_models_validate_without_certificate_passes_with_a_note(registry):
    result = CliRunner().invoke(cli, ["models", "validate", str(registry)])
    assert result.exit_code == 0, result.output
    assert "carry no parity certificate" in result.stdout


def test_atb_live_with_tampered_certificate_refuses_to_start(registry, tmp_path, monkeypatch):
    vdir = next((registry / "BTCUSDT" / "basic").glob("2026-*"))
    _certify(vdir, registry, tamper=0.5)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATB_EXCHANGE_CONFIG", str(tmp_path / "none.json"))  # never reached
    result = CliRunner().invoke(cli, ["live", "ml_basic", "--paper", "--registry", str(registry)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "parity certificate" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before the log or the exchange


@pytest.mark.slow
def test_training_writes_a_certificate_that_validates(tmp_path):
    config = TrainingConfig(
        symbol="BTCUSDT",
        sequence_length=16,
        epochs=1,
        backtest=False,
        registry=tmp_path / "models",
        force_promote=True,
    )
    result = train_model(config, synthetic_candles(1500))
    with np.load(io.BytesIO((result.path / CERTIFICATE_FILE).read_bytes())) as data:
        # 16 windows of 16 bars of the MLP's lags recipe (3 features)
        assert data["inputs"].shape == (16, 16, 3) and data["outputs"].shape[0] == 16
    bundle = ModelRegistry(tmp_path / "models").select_bundle("BTCUSDT", "basic", "1h", None)
    assert verify_certificate(bundle).max_abs_diff == 0.0
