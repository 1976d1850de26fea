"""Model families (ridge, lightgbm, auto, mlp, gru), the lags recipe and validation calibration.

Every family trains on small synthetic candles with a planted AR(1) in the returns, passes the
parity and causality gates, and serves through ``MlPrediction`` identically in batch and
streaming; ridge finds a strong AR(1) on the test part; ``auto`` chooses on the validation part
only; bad choices fail with one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from atb_strategies.data.feeds import make_feed
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.indicators.prediction import MlPrediction
from atb_strategies.inference.decode import PROBABILITY_TOLERANCE
from atb_strategies.training.calibrate import fit_calibration
from atb_strategies.training.direction import family_for
from atb_strategies.training.family import model_family
from atb_strategies.training.gates import onnx_predict
from atb_strategies.training.onnx_graph import append_affine, linear_onnx
from atb_strategies.training.recipes import default_recipe, recipe_for
from atb_strategies.training.trainer import TrainingConfig, train_model

SEQ = 24
CANDIDATE_LABELS = {"ridge", "lightgbm_leaves7", "lightgbm_leaves31", "mlp"}
#: backtrader stamps a bar with its close time (make_feed); the candles index is the open time.
SHIFT = pd.Timedelta(hours=1)


def ar1_candles(phi: float, n: int, seed: int = 0, sigma: float = 0.005) -> pd.DataFrame:
    """Hourly candles whose log returns follow r_t = phi * r_{t-1} + e_t."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, sigma, n)
    r = np.empty(n)
    r[0] = e[0]
    for t in range(1, n):
        r[t] = phi * r[t - 1] + e[t]
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate(([100.0], close[:-1]))
    wiggle = np.abs(rng.normal(0.0, sigma / 2, n))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wiggle),
            "low": np.minimum(open_, close) * (1 - wiggle),
            "close": close,
            "volume": rng.lognormal(3.0, 0.3, n),
        },
        index=pd.date_range("2024-01-01", periods=n, freq="h"),
    )


def _config(registry: Path, architecture: str, **kw: object) -> TrainingConfig:
    base: dict = {
        "symbol": "BTCUSDT",
        "registry": registry,
        "architecture": architecture,
        "sequence_length": SEQ,
        "epochs": 3,
        "backtest": False,
        "force_promote": True,
        "bootstrap_reps": 200,
    }
    base.update(kw)
    return TrainingConfig(**base)


class _Record(bt.Strategy):
    params = (("registry", None),)

    def __init__(self) -> None:
        self.pred = MlPrediction(self.data, registry=self.p.registry)
        self.rows: dict[pd.Timestamp, tuple[float, float, float]] = {}

    def next(self) -> None:
        p = self.pred
        row = (p.predicted_return[0], p.direction[0], p.confidence[0])
        self.rows[pd.Timestamp(self.data.datetime.datetime(0))] = row


def _serve_lines(candles: pd.DataFrame, registry: Path, **cerebro_kw: object) -> pd.DataFrame:
    """Predicted return, direction and confidence per bar (by the feed's bar time)."""
    cerebro = bt.Cerebro(stdstats=False, **cerebro_kw)
    cerebro.adddata(make_feed(candles, timeframe="1h"), name="BTCUSDT")
    cerebro.addstrategy(_Record, registry=str(registry))
    rows = cerebro.run()[0].rows
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=["predicted_return", "direction", "confidence"]
    )


def _serve(candles: pd.DataFrame, registry: Path, **cerebro_kw: object) -> pd.Series:
    """Predicted return per bar (by the feed's bar time) served by ``MlPrediction``."""
    return _serve_lines(candles, registry, **cerebro_kw)["predicted_return"]


# ------------------------------------------------------------------ fast: pieces


def test_fit_calibration_with_too_wide_predictions_shrinks_them_to_their_size() -> None:
    rng = np.random.default_rng(1)
    signal = rng.normal(0, 1e-3, 5000)
    y = signal + rng.normal(0, 5e-3, 5000)
    wide = 3.0 * signal + rng.normal(0, 3e-3, 5000)  # over-confident and noisy

    cal = fit_calibration(wide, y, center=0.0)

    calibrated = cal.apply(wide)
    slope_after = np.polyfit(calibrated, y, 1)[0]
    assert 0.0 < cal.slope < 0.5
    assert abs(slope_after - 1.0) < 0.3
    assert cal.validation_mse_after < cal.validation_mse_before


def test_fit_calibration_with_anticorrelated_predictions_predicts_the_center() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(0, 1e-2, 2000)
    cal = fit_calibration(-y + rng.normal(0, 1e-3, 2000), y, center=1e-4)
    assert cal.raw_slope < 0
    assert cal.slope == 0.0
    assert np.all(cal.apply(np.array([-0.02, 0.03])) == 1e-4)


def test_fit_calibration_never_stretches_timid_predictions() -> None:
    y = np.array([0.01, -0.01, 0.02, -0.02])
    cal = fit_calibration(y / 4, y, center=0.0)
    assert cal.raw_slope == pytest.approx(4.0)
    assert cal.slope == 1.0


def test_append_affine_folds_calibration_into_the_onnx_output() -> None:
    rng = np.random.default_rng(3)
    coef = rng.normal(0, 1e-3, (SEQ * 2, 1)).astype(np.float32)
    raw = linear_onnx(coef, 1e-4, SEQ, 2)
    X = rng.normal(size=(50, SEQ, 2)).astype(np.float32)

    calibrated = onnx_predict(append_affine(raw, 0.25, 3e-4), X)

    np.testing.assert_allclose(calibrated, onnx_predict(raw, X) * 0.25 + 3e-4, atol=1e-9)


def test_recipe_defaults_per_family_and_lags_features() -> None:
    families = ("mlp", "mlp_ensemble", "gru", "ridge", "lightgbm", "auto")
    expected = ["lags", "lags", "price", "lags", "lags", "lags"]
    assert [default_recipe(a) for a in families] == expected
    lags = [f.name for f in recipe_for("basic", "lags")]
    assert lags == ["log_return", "realized_vol", "volume_z"]
    assert [f.name for f in recipe_for("sentiment", "lags")][3:] == [
        "sentiment",
        "sentiment_change",
    ]
    assert recipe_for("basic", "price") == recipe_for("basic")


def test_recipe_for_with_unknown_recipe_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown recipe 'wavelets'; choose one of"):
        recipe_for("basic", "wavelets")


def test_model_family_with_unknown_name_raises_configuration_error_listing_families() -> None:
    with pytest.raises(ConfigurationError, match=r"'ridge', 'lightgbm', 'mlp_ensemble' or 'auto'"):
        model_family("xgboost")


def test_model_family_lightgbm_without_its_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm now raises ImportError
    with pytest.raises(ConfigurationError, match=r"lightgbm.*pip install -e '\.\[train\]'"):
        model_family("lightgbm")


@pytest.mark.parametrize("architecture", ["mlp", "gru", "auto"])
def test_family_for_direction_with_unexportable_family_raises_configuration_error(
    architecture: str,
) -> None:
    if architecture == "gru":
        pytest.importorskip("torch")
    with pytest.raises(ConfigurationError, match=r"cannot be trained and exported for target"):
        family_for(architecture, "direction")


def test_family_for_with_unknown_target_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"'target' parameter.*Got 'volatility'"):
        family_for("ridge", "volatility")


def _cli(args: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    code = (
        f"import sys\n{prelude}\nfrom atb_strategies.cli.main import main\n"
        f"sys.argv = ['atb', *{args!r}]\nmain()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_train_with_unknown_architecture_fails_with_one_line() -> None:
    done = _cli(["train", "model", "BTCUSDT", "--synthetic", "--architecture", "xgboost"])
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "--architecture" in lines[0] and "ridge" in lines[0]


def test_cli_train_lightgbm_without_its_extra_fails_with_one_line_naming_it(
    tmp_path: Path,
) -> None:
    done = _cli(
        [
            "train",
            "model",
            "BTCUSDT",
            "--synthetic",
            "--bars",
            "600",
            "--architecture",
            "lightgbm",
            "--registry",
            str(tmp_path),
        ],
        prelude="sys.modules['lightgbm'] = None",
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "pip install -e '.[train]'" in lines[0]
    assert "lightgbm" in lines[0]
    assert not any(tmp_path.rglob("model.onnx"))


def test_cli_train_direction_with_mlp_fails_with_one_line(tmp_path: Path) -> None:
    done = _cli(
        [
            "train",
            "model",
            "BTCUSDT",
            "--synthetic",
            "--bars",
            "600",
            "--target",
            "direction",
            "--registry",
            str(tmp_path),
        ]
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "--architecture" in lines[0]
    assert "'mlp' cannot be trained and exported for --target direction" in lines[0]
    assert "use --architecture ridge or lightgbm" in lines[0]
    assert not any(tmp_path.rglob("model.onnx"))


# ------------------------------------------------------------------ slow: training


@pytest.mark.slow
@pytest.mark.parametrize(
    "architecture", ["ridge", "lightgbm", "auto", "mlp", "mlp_ensemble", "gru"]
)
def test_family_trains_passes_gates_and_serves_equal_in_batch_and_streaming(
    tmp_path: Path, architecture: str
) -> None:
    if architecture == "gru":
        pytest.importorskip("torch")
    candles = ar1_candles(0.3, 2200, seed=4)

    config = _config(tmp_path, architecture, calibrate=True, recipe="lags")
    result = train_model(config, candles)

    meta = json.loads((result.path / "metadata.json").read_text())
    training = meta["training"]
    assert result.metrics["export_parity_max_abs_diff"] <= 1e-4
    assert result.metrics["causality_checks"] > 0
    assert training["architecture"] == architecture
    assert training["recipe"] == "lags"
    assert 0.0 <= training["calibration"]["slope"] <= 1.0
    assert result.metrics["calibration"] == training["calibration"]
    if architecture == "auto":
        assert training["model_family"] in ("ridge", "lightgbm", "mlp")
    else:
        assert training["model_family"] == architecture
    served = candles.iloc[-600:]  # the lags features depend on a bounded history only
    batch = _serve(served, tmp_path)
    streaming = _serve(served, tmp_path, preload=False)
    assert len(batch) > 350 and np.isfinite(batch).all()
    assert batch.index.equals(streaming.index)
    np.testing.assert_allclose(streaming, batch, rtol=0, atol=1e-9, equal_nan=True)
    # what is served is the calibrated model that was gated on the test part
    tested = result.test_predictions
    served = batch.reindex(pd.DatetimeIndex(tested.index) + SHIFT)
    np.testing.assert_allclose(served, np.expm1(tested["predicted"]), rtol=0, atol=1e-7)


@pytest.mark.slow
def test_ridge_on_lags_finds_a_planted_ar1_on_the_test_part(tmp_path: Path) -> None:
    candles = ar1_candles(0.3, 6000, seed=7)

    result = train_model(_config(tmp_path, "ridge"), candles)

    accuracy = result.metrics["test"]["model"]["directional_accuracy"]
    # ideal: 0.5 + arcsin(0.3) / pi = 0.597; ~900 test samples, standard error ~0.016
    assert accuracy > 0.56
    predictions = result.test_predictions
    slope = np.polyfit(predictions["predicted"], predictions["actual"], 1)[0]
    assert 0.5 < slope < 1.6
    assert result.metrics["gate"]["passed"]


@pytest.mark.slow
def test_auto_records_its_choice_and_never_reads_the_test_part(tmp_path: Path) -> None:
    candles = ar1_candles(0.2, 2400, seed=9)
    config = _config(tmp_path / "a", "auto")
    first = train_model(config, candles)
    # scramble every bar of the test part (the last 15 %): returns shuffled, prices rebuilt
    scrambled = candles.copy()
    start = int(len(candles) * 0.85)
    rng = np.random.default_rng(0)
    returns = np.diff(np.log(candles["close"].to_numpy()))[start - 1 :]
    factor = np.exp(np.cumsum(rng.permutation(returns)) - np.cumsum(returns))
    for column in ("open", "high", "low", "close"):
        scrambled.iloc[start:, scrambled.columns.get_loc(column)] *= factor

    second = train_model(_config(tmp_path / "b", "auto"), scrambled)

    choice = first.metrics["model_selection"]
    assert choice["chosen"] in choice["validation_mse"]
    assert set(choice["validation_mse"]) == {
        "ridge",
        "lightgbm_leaves7",
        "lightgbm_leaves31",
        "mlp",
    }
    assert min(choice["validation_mse"], key=choice["validation_mse"].get) == choice["chosen"]
    assert second.metrics["model_selection"] == choice
    assert second.metrics["calibration"] == first.metrics["calibration"]
    assert not np.allclose(first.test_predictions["actual"], second.test_predictions["actual"])
    lineage = json.loads((first.path / "metadata.json").read_text())["training"]
    assert lineage["model_selection"] == choice


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["ridge", "lightgbm"])
def test_direction_target_registers_calibrated_class_probabilities_that_mlbasic_trades(
    tmp_path: Path, architecture: str
) -> None:
    candles = ar1_candles(0.3, 3000, seed=3)
    config = _config(tmp_path, architecture, target="direction", backtest=True)

    result = train_model(config, candles)

    meta = json.loads((result.path / "metadata.json").read_text())
    assert meta["output"]["target"] == "class_probabilities"
    assert meta["output"]["classes"] == ["down", "up"]
    assert result.metrics["target"] == "direction"
    fitted = result.metrics["fitted"]
    assert 0.0 <= fitted["temperature"] <= 1.0
    assert fitted["validation_log_loss_after"] <= fitted["validation_log_loss_before"]
    assert result.metrics["causality_checks"] > 0
    assert result.metrics["test"]["model"]["directional_accuracy"] > 0.53
    assert result.metrics["backtest"]["trades"] > 0  # MlBasic enters on the direction
    served = candles.iloc[-600:]
    batch = _serve_lines(served, tmp_path)
    streaming = _serve_lines(served, tmp_path, preload=False)
    assert batch["predicted_return"].isna().all()
    served = set(batch["direction"].dropna().unique())
    assert {-1.0, 1.0} <= served <= {-1.0, 0.0, 1.0}
    assert batch["confidence"].dropna().between(0.5, 1.0).all()
    # direction 0 only on a tie: the two probabilities within the decoder's tolerance
    ties = batch["direction"] == 0
    assert (batch.loc[ties, "confidence"] <= 0.5 + PROBABILITY_TOLERANCE / 2 + 1e-9).all()
    np.testing.assert_allclose(
        streaming[["direction", "confidence"]], batch[["direction", "confidence"]], atol=1e-9
    )
    # the served direction is the sign of the implied return the test part was scored on
    tested = result.test_predictions
    at = pd.DatetimeIndex(tested.index) + SHIFT
    served_at = batch["direction"].reindex(at).to_numpy()
    assert ((served_at == np.sign(tested["predicted"])) | (served_at == 0)).all()
